"""COIN zero-shot action segmentation: the window loop, the background threshold, the frame metrics (hand-worked),
the dirty records, and the evaluator end to end on a tiny released-layout set."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from norton_evaluators.coin import (
    COIN,
    CoinSegment,
    background_threshold,
    frame_metrics,
    frame_targets,
    predict_frames,
    read_coin,
)
from norton_evaluators.readers import Skips
from norton_evaluators.sliding import average_scores, window_bounds

from norton_core.errors import DataError, RecipeError
from norton_core.evaluation import run_evaluation
from tests.evaluation.fakes import FakeModel, eval_plugins
from tests.evaluation.fakes_segmentation import make_coin


@pytest.fixture(scope="module")
def plugins():
    return eval_plugins()


@pytest.fixture(scope="module")
def coin_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    make_coin(root)
    return root


def _run(model, root, plugins, **options):
    return run_evaluation(model, ["coin"], root, plugins=plugins, progress=False, batch_size=5,
                          options={"coin": options} if options else None)


# ---- windows ---------------------------------------------------------------------------------------------------


def test_windows_follow_the_reference_loop():
    # starts every 16 s; the last window is the first whose remainder fits in 32 s
    assert window_bounds(70, 16, 32) == [(0, 32), (16, 48), (32, 64), (48, 70)]
    assert window_bounds(32, 16, 32) == [(0, 32)]
    assert window_bounds(33, 16, 32) == [(0, 32), (16, 33)]
    assert window_bounds(5, 16, 32) == [(0, 5)]
    assert window_bounds(0, 16, 32) == []


def test_scores_are_averaged_over_the_windows_holding_each_second():
    bounds = [(0, 3), (2, 4)]
    first = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 6.0]])
    second = np.array([[5.0, 2.0], [7.0, 1.0]])
    expected = np.array([[1.0, 0.0], [2.0, 0.0], [4.0, 4.0], [7.0, 1.0]])
    np.testing.assert_allclose(average_scores(4, bounds, [first, second]), expected)


def test_a_stride_longer_than_the_window_is_refused():
    with pytest.raises(RecipeError, match="stride = 40"):
        COIN(COIN.Config(stride=40, window=32))


# ---- threshold and prediction ----------------------------------------------------------------------------------


def test_background_threshold_is_the_largest_off_diagonal_label_similarity():
    vectors = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 2.0]])
    # pairs: 0-1 0.6, 0-2 0.0, 1-2 1.6; the diagonal (1, 1, 4) is never used
    assert background_threshold(vectors, ["a", "b", "c"]) == pytest.approx(1.6)


def test_identical_label_texts_set_the_reference_threshold_unless_distinct():
    vectors = np.array([[1.0, 0.0], [0.6, 0.8], [0.6, 0.8]])
    assert background_threshold(vectors, ["a", "b", "b"], "reference") == pytest.approx(1.0)  # b with b
    assert background_threshold(vectors, ["a", "b", "b"], "distinct") == pytest.approx(0.6)  # a with b


def test_threshold_none_never_predicts_background():
    assert background_threshold(np.eye(2), ["a", "b"], "none") == -math.inf
    np.testing.assert_array_equal(predict_frames(np.array([[-5.0, -6.0], [0.0, 0.0]]), -math.inf), [1, 1])


def test_prediction_is_argmax_plus_one_only_strictly_above_the_threshold():
    scores = np.array([[0.5, 0.7], [0.7, 0.69], [0.2, 0.1], [0.6, 0.1]])
    np.testing.assert_array_equal(predict_frames(scores, 0.6), [2, 1, 0, 0])  # 0.6 is not above 0.6


# ---- targets and metric ----------------------------------------------------------------------------------------


def test_frame_targets_round_outward_overwrite_in_order_and_count_dirty_segments():
    skips = Skips("coin")
    segments = [CoinSegment(3, 1.5, 4.2), CoinSegment(5, 3.0, 3.5), CoinSegment(7, 8.4, 12.0),
                CoinSegment(2, 6.0, 6.0), CoinSegment(4, 10.0, 11.0)]
    targets, cut = frame_targets(segments, 10, skips, "v")
    # [1, 5) is 3, then [3, 4) becomes 5; [8, 12) is cut to [8, 10); the empty and the past-end one are skipped
    np.testing.assert_array_equal(targets, [0, 3, 3, 5, 3, 0, 0, 0, 7, 7])
    assert cut == 1
    assert skips.counts == {"empty_segment": 1, "segment_past_end": 1}


def test_frame_metrics_hand_worked():
    targets = np.array([0, 0, 0, 1, 1, 2, 2, 2, 0, 0])
    predicted = np.array([0, 1, 0, 1, 0, 2, 2, 0, 0, 0])
    m = frame_metrics(predicted, targets, n_labels=4)
    assert m["frame_acc"] == pytest.approx(70.0)  # 3 errors in 10 frames
    assert m["frame_acc_chance"] == pytest.approx(50.0)  # background everywhere: 5 of 10 right
    assert m["fg_frame_acc"] == pytest.approx(60.0)  # frames 3..7: 3 of 5 right
    assert m["fg_frame_acc_chance"] == pytest.approx(25.0)
    assert m["class_acc"] == pytest.approx(100 * (4 / 5 + 1 / 2 + 2 / 3) / 3)
    assert m["class_acc_chance"] == pytest.approx(100 / 3)
    assert m["predicted_bg"] == pytest.approx(60.0)
    assert m["frames"] == 10


def test_frame_accuracy_of_all_background_is_the_background_share():
    targets = np.array([0, 4, 4, 0, 0, 1, 0, 0])
    m = frame_metrics(np.zeros_like(targets), targets, n_labels=4)
    assert m["frame_acc"] == m["frame_acc_chance"] == pytest.approx(62.5)
    assert m["fg_frame_acc"] == 0.0 and m["class_acc"] == pytest.approx(m["class_acc_chance"])


# ---- reading COIN.json -----------------------------------------------------------------------------------------


def _write(tmp_path, database):
    path = tmp_path / "COIN.json"
    path.write_text(json.dumps({"database": database}))
    return path


def test_labels_come_from_the_testing_subset_with_gaps_named_none(tmp_path):
    path = _write(tmp_path, {
        "a": {"subset": "testing", "annotation": [{"id": "3", "segment": [0, 2], "label": "cut"},
                                                  {"id": 1, "segment": [2, 4], "label": "wash"}]},
        "b": {"subset": "training", "annotation": [{"id": "2", "segment": [0, 2], "label": "peel"}]},
    })
    data = read_coin(path, "testing")
    assert data.labels == ["wash", "none", "cut"] and data.gaps == [2]
    assert list(data.videos) == ["a"] and data.videos["a"][0] == CoinSegment(3, 0.0, 2.0)


@pytest.mark.parametrize(("database", "needle"), [
    ([], "\"database\" object"),
    ({"a": {"subset": "testing"}}, "\"annotation\" list"),
    ({"a": {"subset": "testing", "annotation": [{"id": "x", "segment": [0, 1], "label": "l"}]}}, "\"id\" must be"),
    ({"a": {"subset": "testing", "annotation": [{"id": 1, "segment": [0], "label": "l"}]}}, "\"segment\" must be"),
    ({"a": {"subset": "testing", "annotation": [{"id": 1, "segment": [0, 1], "label": 5}]}}, "\"label\" must be"),
])
def test_malformed_coin_json_names_file_and_record(tmp_path, database, needle):
    path = tmp_path / "COIN.json"
    path.write_text(json.dumps(database if isinstance(database, list) else {"database": database}))
    with pytest.raises(DataError, match=needle) as err:
        read_coin(path, "testing")
    assert "COIN.json" in str(err.value)


# ---- end to end ------------------------------------------------------------------------------------------------


def test_planted_model_segments_perfectly(coin_root, plugins):
    r = _run(FakeModel(FakeModel.Config()), coin_root, plugins)
    assert r["coin/frame_acc"] == pytest.approx(100.0)
    assert r["coin/fg_frame_acc"] == pytest.approx(100.0) and r["coin/class_acc"] == pytest.approx(100.0)
    assert r["coin/videos"] == 6 and r["coin/labels"] == 12
    assert 20 < r["coin/frame_acc_chance"] < 80
    assert all(v == 0 for k, v in r.items() if "/skipped_" in k)


def test_a_collapsed_model_predicts_background_and_scores_the_background_share(coin_root, plugins):
    model = FakeModel(FakeModel.Config(planted=False))
    model.words.data.zero_()
    model.proj.data.zero_()
    r = _run(model, coin_root, plugins)
    # every score and the threshold are 0; 0 is not above 0, so every frame is background
    assert r["coin/predicted_bg"] == 100.0
    assert r["coin/frame_acc"] == pytest.approx(r["coin/frame_acc_chance"])
    assert r["coin/fg_frame_acc"] == 0.0


def test_random_model_is_far_from_perfect(coin_root, plugins):
    r = _run(FakeModel(FakeModel.Config(planted=False)), coin_root, plugins)
    assert r["coin/fg_frame_acc"] < 50


def test_options_normalise_and_distinct_threshold_run(coin_root, plugins):
    r = _run(FakeModel(FakeModel.Config()), coin_root, plugins, normalise=True, threshold="distinct",
             window=8, stride=4)
    assert r["coin/frame_acc"] == pytest.approx(100.0)
    assert r["coin/threshold"] < 0.5  # cosines of unrelated random unit vectors


def test_dirty_records_are_counted_and_named(tmp_path, plugins, caplog):
    out = make_coin(tmp_path)
    database = json.loads((out / "COIN.json").read_text())
    (out / "features" / "coin001.npy").unlink()
    np.save(out / "features" / "coin002.npy", np.zeros((10, 7), dtype=np.float32))
    database["database"]["coin003"]["annotation"].append({"id": "1", "segment": [5.0, 4.0], "label": "w600"})
    database["database"]["coin003"]["annotation"].append({"id": "1", "segment": [900.0, 901.0], "label": "w600"})
    (out / "COIN.json").write_text(json.dumps(database))
    with caplog.at_level("WARNING", logger="norton.evaluation"):
        r = _run(FakeModel(FakeModel.Config()), tmp_path, plugins)
    assert r["coin/skipped_missing_features"] == 1 and r["coin/skipped_bad_features"] == 1
    assert r["coin/skipped_empty_segment"] == 1 and r["coin/skipped_segment_past_end"] == 1
    assert r["coin/videos"] == 4 and r["coin/frame_acc"] == pytest.approx(100.0)
    assert "coin001" in caplog.text and "coin003 segment" in caplog.text


def test_a_missing_feature_directory_is_an_error(tmp_path, plugins):
    out = make_coin(tmp_path)
    (out / "features").rename(out / "coin_feature_fps30_512")
    with pytest.raises(DataError, match="coin_feature_fps30_512"):
        _run(FakeModel(FakeModel.Config()), tmp_path, plugins)
    r = _run(FakeModel(FakeModel.Config()), tmp_path, plugins, features="coin_feature_fps30_512")
    assert not math.isnan(r["coin/frame_acc"])


def test_a_repeated_label_text_sets_the_reference_threshold_and_distinct_undoes_it(tmp_path, plugins, caplog):
    out = make_coin(tmp_path)
    database = json.loads((out / "COIN.json").read_text())
    # id 12 gets the text of id 1 (COIN repeats step names under different ids): two identical label vectors
    for rec in database["database"].values():
        for ann in rec["annotation"]:
            if ann["id"] == "12":
                ann["label"] = "w600"
    (out / "COIN.json").write_text(json.dumps(database))
    model = FakeModel(FakeModel.Config())
    with caplog.at_level("WARNING", logger="norton.evaluation"):
        reference = _run(model, tmp_path, plugins)
    assert reference["coin/duplicate_labels"] == 2 and "share their label text" in caplog.text
    # the threshold is w600's similarity with itself (~1): about half of the step seconds (a dot product of ~1
    # give or take the noise) fall below it and are called background
    assert reference["coin/threshold"] > 0.9
    assert reference["coin/predicted_bg"] > reference["coin/frame_acc_chance"] + 15
    distinct = _run(model, tmp_path, plugins, threshold="distinct")
    # with the threshold between distinct labels only id 12's seconds are lost (argmax picks id 1, its twin)
    assert distinct["coin/threshold"] < 0.5 and distinct["coin/fg_frame_acc"] > 90
    assert reference["coin/fg_frame_acc"] < 75
