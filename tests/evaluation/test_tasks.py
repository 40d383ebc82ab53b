"""The four evaluators end to end on tiny sets in the public formats, through ``run_evaluation``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from norton_evaluators.youcook2 import YouCook2Video

from norton_core.errors import DataError, NortonError, PluginError, RecipeError
from norton_core.evaluation import DEFAULT_TASKS, format_table, run_evaluation
from tests.evaluation.fakes import FakeModel, eval_plugins, make_eval_root, make_htm_align, make_msrvtt, make_youcook2

MAIN = {
    "youcook2_clip": ["R@1", "R@5", "R@10"],
    "youcook2_video": [f"{p}{m}_R@1" for p in ("", "bg_") for m in ("capavg", "dtw", "otam", "dtw_exact",
                                                                      "otam_exact", "dtw_centred", "otam_centred")],
    "htm_align": ["recall", "auc"],
    "msrvtt": ["R@1", "R@5", "R@10"],
}


@pytest.fixture(scope="module")
def plugins():
    return eval_plugins()


@pytest.fixture(scope="module")
def eval_root(tmp_path_factory):
    return make_eval_root(tmp_path_factory.mktemp("eval"))


def _run(model, root, plugins, tasks=DEFAULT_TASKS, **kw):
    return run_evaluation(model, list(tasks), root, plugins=plugins, progress=False, **kw)


def test_planted_alignment_scores_perfectly_on_every_task(eval_root, plugins):
    results = _run(FakeModel(FakeModel.Config()), eval_root, plugins, batch_size=7)
    for task, metrics in MAIN.items():
        for metric in metrics:
            # DTW with background kept (distance 3 - sim) need not be perfect: see the offset test
            if not metric.startswith("bg_dtw_R@1") and metric != "bg_dtw_exact_R@1":
                assert results[f"{task}/{metric}"] == pytest.approx(100.0), f"{task}/{metric}"
    assert results["youcook2_clip/MR"] == 1.0 and results["msrvtt/MR"] == 1.0
    assert results["youcook2_clip/pairs"] == 48 and results["msrvtt/videos"] == 40
    assert all(v == 0 for k, v in results.items() if "/skipped_" in k)
    json.dumps(results)  # plain floats


def test_random_model_scores_near_chance(eval_root, plugins):
    results = _run(FakeModel(FakeModel.Config(planted=False)), eval_root, plugins)
    assert results["youcook2_clip/R@1"] < 15 and results["youcook2_clip/MR"] > 8  # 48 pairs: chance 2%, MR 24.5
    assert results["msrvtt/R@1"] < 15 and results["msrvtt/MR"] > 6  # 40 videos
    assert results["youcook2_video/capavg_R@1"] < 40  # 12 videos
    assert results["htm_align/recall"] < 35  # spans cover ~6% of the seconds


def test_untrained_collapsed_model_is_exactly_chance(eval_root, plugins):
    """A model whose every embedding is the same vector ties everything: expected recall is chance, not 100."""
    model = FakeModel(FakeModel.Config(planted=False))
    with np.errstate(all="ignore"):
        model.words.data.zero_()
        model.proj.data.zero_()
    results = _run(model, eval_root, plugins, tasks=["youcook2-clip", "msrvtt"])
    assert results["youcook2_clip/R@1"] == pytest.approx(100 / 48)
    assert results["msrvtt/R@10"] == pytest.approx(25.0)
    assert results["msrvtt/MR"] == pytest.approx(20.5)


def test_keys_are_task_slash_metric_with_underscores(eval_root, plugins):
    results = _run(FakeModel(FakeModel.Config()), eval_root, plugins, tasks=["youcook2-video"],
                   options={"youcook2-video": {"background": False, "centred": False}})
    assert all(k.startswith("youcook2_video/") for k in results)
    assert "youcook2_video/dtw_R@10" in results and "youcook2_video/bg_dtw_R@1" not in results
    assert "youcook2_video/dtw_centred_R@1" not in results


def test_centred_variants_are_invariant_to_a_similarity_offset(eval_root, plugins):
    """Adding one constant to every caption-clip similarity moves the reference DTW/OTAM numbers (the reason to
    report the centred ones) but neither the centred variants nor the caption average."""
    runs = {}
    for offset in (-4.0, 0.0, 4.0):
        model = FakeModel(FakeModel.Config(noise=0.06, offset=offset))
        runs[offset] = _run(model, eval_root, plugins, tasks=["youcook2-video"])
    invariant = [k for k in runs[0.0] if "centred" in k or "capavg" in k]
    assert len(invariant) == 18
    for key in invariant:
        assert runs[-4.0][key] == runs[0.0][key] == runs[4.0][key], key
    moved = [k for k in runs[0.0] if ("dtw_R" in k or "otam_R" in k) and "centred" not in k
             and len({runs[o][k] for o in runs}) > 1]
    assert moved, "the reference protocol should depend on the offset"


def test_plain_names_are_the_reference_protocol_and_variants_have_their_own(eval_root, plugins):
    """dtw_* / otam_* are the reference's DTW and OTAM (its padding and recurrence) on the same similarities the
    evaluator computes; *_exact_* and *_centred_* sit beside them and can be switched off."""
    from norton_evaluators.readers import Skips
    from norton_evaluators.youcook2 import _groups, load_pairs

    from norton_core.evaluation.embed import encode_clips, encode_texts
    from norton_core.evaluation.metrics import rank_metrics
    from norton_core.evaluation.sequence import alignment_scores

    model = FakeModel(FakeModel.Config(noise=0.3, offset=-0.5))
    options = {"youcook2-video": {"background": False}}
    results = _run(model, eval_root, plugins, tasks=["youcook2-video"], options=options)
    pairs = load_pairs(eval_root / "youcook2", "annotations.json", "validation", Skips("t"))
    sims = encode_texts(model, pairs.texts, 64).astype(np.float64) @ encode_clips(model, pairs.spans, 32).T
    groups = _groups(pairs.owners)
    for method in ("dtw", "otam"):
        ref = alignment_scores(sims, groups, groups, method, padding="reference", recurrence="reference")
        exact = alignment_scores(sims, groups, groups, method)
        expected = rank_metrics(ref, np.arange(len(groups)))
        expected_exact = rank_metrics(exact, np.arange(len(groups)))
        for k in (1, 5, 10):
            assert results[f"youcook2_video/{method}_R@{k}"] == pytest.approx(expected[f"R@{k}"])
            assert results[f"youcook2_video/{method}_exact_R@{k}"] == pytest.approx(expected_exact[f"R@{k}"])
    plain = _run(model, eval_root, plugins, tasks=["youcook2-video"],
                 options={"youcook2-video": YouCook2Video.Config(exact=False, centred=False)})
    assert not [k for k in plain if "_exact_" in k or "_centred_" in k]
    assert plain["youcook2_video/otam_R@1"] == results["youcook2_video/otam_R@1"]


def test_background_windows_mask_the_video_cls_token_unless_asked(tmp_path, plugins):
    make_youcook2(tmp_path, videos=3, steps=2)
    clip_only = FakeModel(FakeModel.Config())
    _run(clip_only, tmp_path, plugins, tasks=["youcook2-video"], options={"youcook2-video": {"background": False}})
    assert clip_only.attend_cls_seen == {True}  # segments: the usual attention
    masked = FakeModel(FakeModel.Config())
    _run(masked, tmp_path, plugins, tasks=["youcook2-video"])
    assert masked.attend_cls_seen == {True, False}  # the windows were encoded with [CLS] masked out
    attending = FakeModel(FakeModel.Config())
    _run(attending, tmp_path, plugins, tasks=["youcook2-video"], options={"youcook2-video": {"bg_attend_cls": True}})
    assert attending.attend_cls_seen == {True}


def test_a_model_that_cannot_mask_cls_is_told_how_to_proceed(tmp_path, plugins):
    class OldModel(FakeModel):
        def forward_video(self, vfeats, vmasks):  # type: ignore[override]
            return super().forward_video(vfeats, vmasks)

    make_youcook2(tmp_path, videos=3, steps=2)
    with pytest.raises(NortonError, match="bg_attend_cls = true"):
        _run(OldModel(FakeModel.Config()), tmp_path, plugins, tasks=["youcook2-video"])
    results = _run(OldModel(FakeModel.Config()), tmp_path, plugins, tasks=["youcook2-video"],
                   options={"youcook2-video": {"bg_attend_cls": True}})
    assert results["youcook2_video/bg_capavg_R@1"] == 100.0


def test_model_mode_is_restored(eval_root, plugins):
    model = FakeModel(FakeModel.Config())
    model.train()
    _run(model, eval_root, plugins, tasks=["msrvtt"])  # the fake asserts eval mode and no grad inside
    assert model.training and model.calls > 0
    model.eval()
    _run(model, eval_root, plugins, tasks=["msrvtt"])
    assert not model.training


def test_unusable_items_are_counted_not_dropped_or_crashed_on(tmp_path, plugins):
    root = tmp_path
    make_youcook2(root, videos=6, steps=3)
    make_msrvtt(root, videos=10)
    make_htm_align(root, videos=2)
    yc = root / "youcook2"
    data = json.loads((yc / "annotations.json").read_text())
    db = data["database"]
    (yc / "features" / "yc000.npy").unlink()  # missing feature file: 3 segments of one video
    np.save(yc / "features" / "yc001.npy", np.zeros((20, 300), np.float32))  # wrong width
    length = len(np.load(yc / "features" / "yc002.npy"))
    anns = db["yc002"]["annotations"]
    anns[0]["segment"] = [5, 5]  # empty
    anns[1]["segment"] = [length + 3, length + 9]  # past the end
    anns[2]["segment"] = [anns[2]["segment"][0], length + 30]  # runs past the end: cut, still evaluated
    db["yc003"]["annotations"][0]["sentence"] = "  "  # empty caption
    db["other"] = {"duration": 1.0, "subset": "training", "annotations": []}  # another subset: not counted
    (yc / "annotations.json").write_text(json.dumps(data))
    (root / "msrvtt" / "features" / "video7003.npy").unlink()

    results = _run(FakeModel(FakeModel.Config()), root, plugins, tasks=["youcook2-clip", "youcook2-video", "msrvtt"])
    assert results["youcook2_clip/skipped_missing_features"] == 1
    assert results["youcook2_clip/skipped_bad_features"] == 1
    assert results["youcook2_clip/skipped_empty_segment"] == 1
    assert results["youcook2_clip/skipped_segment_past_end"] == 1
    assert results["youcook2_clip/skipped_empty_caption"] == 1
    assert results["youcook2_clip/pairs"] == 18 - 3 - 3 - 2 - 1
    assert results["youcook2_clip/R@1"] == 100.0
    assert results["youcook2_video/skipped_segment_past_end"] == 1
    assert results["youcook2_video/bg_videos"] == 4  # yc002 keeps its 3 sentences with background kept
    assert results["msrvtt/skipped_missing_features"] == 1 and results["msrvtt/videos"] == 9


def test_a_task_with_nothing_to_evaluate_reports_nan_and_counts(tmp_path, plugins):
    make_msrvtt(tmp_path, videos=2)
    for f in (tmp_path / "msrvtt" / "features").iterdir():
        f.unlink()
    results = _run(FakeModel(FakeModel.Config()), tmp_path, plugins, tasks=["msrvtt"])
    assert math.isnan(results["msrvtt/R@1"]) and results["msrvtt/skipped_missing_features"] == 2
    assert "n/a" in format_table(results)


@pytest.mark.parametrize("task, filename, content, needle", [
    ("youcook2-clip", "youcook2/annotations.json", '{"videos": {}}', '"database"'),
    ("youcook2-clip", "youcook2/annotations.json",
     '{"database": {"v": {"subset": "validation", "annotations": [{"id": 0, "segment": [1], "sentence": "a"}]}}}',
     "database['v'].annotations[0]"),
    ("htm-align", "htm_align/htm_align.json", '{"v": [[2, 0, 1, "x"]]}', "['v'][0]"),
    ("msrvtt", "msrvtt/MSRVTT_JSFUSION_test.csv", "id,video,caption\n", "line 1"),
    ("msrvtt", "msrvtt/MSRVTT_JSFUSION_test.csv", "{not csv", "line 1"),
])
def test_malformed_files_raise_data_errors_naming_file_and_record(tmp_path, plugins, task, filename, content,
                                                                   needle):
    path = tmp_path / filename
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(DataError) as err:
        _run(FakeModel(FakeModel.Config()), tmp_path, plugins, tasks=[task])
    assert str(path) in str(err.value) and needle in str(err.value)


def test_runner_reports_unknown_tasks_bad_options_and_missing_sets(tmp_path, plugins):
    model = FakeModel(FakeModel.Config())
    with pytest.raises(PluginError, match="youcook2-clip"):  # the known names are listed
        _run(model, tmp_path, plugins, tasks=["youcook-clip"])
    with pytest.raises(RecipeError) as err:
        _run(model, tmp_path, plugins, tasks=["msrvtt", "youcook2-video"],
             options={"msrvtt": {"max_video_len": 0}, "youcook2-video": {"padding": "zero"}})
    assert len(err.value.problems) == 2
    with pytest.raises(DataError, match="htm_align"):
        _run(model, tmp_path, plugins, tasks=["htm-align"])


def test_format_table_puts_columns_side_by_side():
    before = {"msrvtt/R@1": 1.234, "msrvtt/skipped_missing_features": 2.0, "htm_align/recall": float("nan")}
    after = {"msrvtt/R@1": 10.5, "msrvtt/skipped_missing_features": 2.0, "htm_align/auc": 70.0}
    lines = format_table(after, {"before": before, "after": after}).splitlines()
    assert lines[0].split() == ["task", "metric", "before", "after"]
    rows = {tuple(line.split()[-3:]) for line in lines[2:]}
    assert ("R@1", "1.23", "10.50") in rows
    assert ("skipped_missing_features", "2", "2") in rows
    assert ("auc", "-", "70.00") in rows and ("recall", "n/a", "-") in rows
    assert format_table(after).splitlines()[0].split() == ["task", "metric", "value"]


def test_htm_align_reports_its_chance_level(eval_root, plugins):
    planted = _run(FakeModel(FakeModel.Config()), eval_root, plugins, tasks=["htm-align"])
    assert planted["htm_align/recall"] == 100.0 and 0 < planted["htm_align/recall_chance"] < 20
    assert planted["htm_align/unscored"] == 0 and planted["htm_align/alignable"] == 19


def test_shared_tasks_encode_each_clip_once(eval_root, plugins):
    """youcook2-clip and youcook2-video in one run share their clip embeddings (and captions)."""
    alone, together = FakeModel(FakeModel.Config()), FakeModel(FakeModel.Config())
    _run(alone, eval_root, plugins, tasks=["youcook2-video"], batch_size=1000)
    _run(together, eval_root, plugins, tasks=["youcook2-clip", "youcook2-video"], batch_size=1000)
    assert together.calls == alone.calls  # the clip task's forward passes were all reused


def test_trimmed_caption_batches_give_the_same_embeddings():
    from norton_core.evaluation.embed import encode_texts

    model = FakeModel(FakeModel.Config(planted=False))
    texts = ["w1 w2 w3", "w4", "w5 w6 w7 w8 w9 w10", "w4", "w11 w12"]
    trimmed = encode_texts(model, texts, 64, batch_size=2)
    full = encode_texts(model, texts, 64, batch_size=2, trim=False)
    np.testing.assert_allclose(trimmed, full, rtol=1e-6)
    np.testing.assert_array_equal(trimmed[1], trimmed[3])


def test_feature_directories_as_users_have_them(tmp_path, plugins):
    """``features`` is relative to the dataset dir or absolute; a missing directory is an error that names it and
    the feature-like directories that are there."""
    make_youcook2(tmp_path, videos=4, steps=2)
    make_htm_align(tmp_path, videos=2)
    yc, htm = tmp_path / "youcook2", tmp_path / "htm_align"
    (yc / "features").rename(yc / "youcook_validation_feature_fps30_512")
    for f in (htm / "features").iterdir():  # HTM-Align as released: the .npy files beside htm_align.json
        f.rename(htm / f.name)
    (htm / "features").rmdir()
    model = FakeModel(FakeModel.Config())
    with pytest.raises(DataError) as err:
        _run(model, tmp_path, plugins, tasks=["youcook2-clip"])
    message = str(err.value)
    assert str(yc / "features") in message and "youcook_validation_feature_fps30_512" in message
    assert "[evaluation.task_options.youcook2-clip] features" in message
    options = {"youcook2-clip": {"features": "youcook_validation_feature_fps30_512"},
               "youcook2-video": {"features": str(yc / "youcook_validation_feature_fps30_512")},  # absolute
               "htm-align": {"features": "."}}
    results = _run(model, tmp_path, plugins, tasks=list(options), options=options)
    assert results["youcook2_clip/pairs"] == 8 and results["youcook2_clip/R@1"] == 100.0
    assert results["youcook2_video/videos"] == 4
    assert results["htm_align/videos"] == 2 and results["htm_align/recall"] == 100.0


def _listed(db: dict, drop: set[str]) -> list[str]:
    """``<video>_<k>`` names of every annotation except the videos in ``drop``."""
    return [f"{vid}_{k}" for vid, entry in db.items() if vid not in drop for k in range(len(entry["annotations"]))]


def test_youcook_val_pkl_selects_the_scored_clips(tmp_path, plugins, capsys):
    import pickle

    make_youcook2(tmp_path, videos=5, steps=3)
    yc = tmp_path / "youcook2"
    db = json.loads((yc / "annotations.json").read_text())["database"]
    names = [n for n in _listed(db, {"yc001"}) if n != "yc002_1"]  # 4 videos, 11 clips
    (yc / "features" / "yc003.npy").unlink()  # listed, but without features: dropped, as the reference does
    records = [{"id": n, "caption": "unused", "start": 0.0, "end": 1.0} for n in names]
    (yc / "youcook_val.pkl").write_bytes(pickle.dumps(records, protocol=4))
    (yc / "clips.txt").write_text("# the same selection as text\n\n" + "\n".join(names) + "\n")
    model = FakeModel(FakeModel.Config())
    for clips in ("youcook_val.pkl", "clips.txt"):
        options = {"youcook2-clip": {"clips": clips}, "youcook2-video": {"clips": clips}}
        results = _run(model, tmp_path, plugins, tasks=list(options), options=options)
        assert results["youcook2_clip/pairs"] == 8 and results["youcook2_clip/videos"] == 3  # yc000, yc002, yc004
        assert results["youcook2_clip/skipped_missing_features"] == 1 and results["youcook2_clip/R@1"] == 100.0
        assert results["youcook2_video/videos"] == 3 and results["youcook2_video/bg_videos"] == 3
        err = capsys.readouterr().err
        assert f"{yc / clips} selects 8 pairs over 3 videos (of 11 listed clips over 4 videos" in err
    unselected = _run(model, tmp_path, plugins, tasks=["youcook2-clip"])
    assert unselected["youcook2_clip/pairs"] == 12  # without a list: every segment with features


def test_a_pkl_with_a_reduce_payload_is_refused_and_runs_nothing(tmp_path, plugins):
    import pickle

    make_youcook2(tmp_path, videos=2, steps=2)
    yc = tmp_path / "youcook2"
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (yc / "youcook_val.pkl").write_bytes(pickle.dumps([{"id": "yc000_0"}, Payload()]))
    with pytest.raises(DataError) as err:
        _run(FakeModel(FakeModel.Config()), tmp_path, plugins, tasks=["youcook2-clip"],
             options={"youcook2-clip": {"clips": "youcook_val.pkl"}})
    assert str(yc / "youcook_val.pkl") in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("content, needle", [
    ("yc000_0\nyc000\n", "line 2: expected a clip name <video>_<k>"),
    ("yc000_0\nyc999_0\n", "video 'yc999' is not in"),
    ("yc000_7\n", "'yc000' has 2 annotation(s)"),
])
def test_a_clip_list_that_disagrees_with_the_annotations_is_an_error(tmp_path, plugins, content, needle):
    make_youcook2(tmp_path, videos=2, steps=2)
    (tmp_path / "youcook2" / "clips.txt").write_text(content)
    with pytest.raises(DataError) as err:
        _run(FakeModel(FakeModel.Config()), tmp_path, plugins, tasks=["youcook2-clip"],
             options={"youcook2-clip": {"clips": "clips.txt"}})
    assert needle in "\n".join(err.value.lines())


def test_evaluation_runs_in_float32_even_inside_a_training_autocast(eval_root, plugins):
    """The run's own evaluation is called inside the training loop; fp32 (the default) switches any autocast off,
    so it computes what ``norton evaluate`` computes. bf16 is there when asked for."""
    import torch

    plain, inside, bf16 = (FakeModel(FakeModel.Config(noise=0.05)) for _ in range(3))
    expected = _run(plain, eval_root, plugins, tasks=["youcook2-clip", "msrvtt"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = _run(inside, eval_root, plugins, tasks=["youcook2-clip", "msrvtt"])
    _run(bf16, eval_root, plugins, tasks=["msrvtt"], precision="bf16")
    assert got == expected
    assert plain.autocast_seen == inside.autocast_seen == {None} and bf16.autocast_seen == {torch.bfloat16}


def test_the_paper_recipe_evaluates_with_the_reference_protocol(norton_plugins):
    """Every shipped recipe leaves youcook2-video at its defaults, which are the reference's protocol under the
    plain names (see the test above), and evaluates in float32."""
    from pathlib import Path

    from norton_core.recipe.load import load_recipe

    recipes = Path(__file__).resolve().parents[2] / "recipes"
    for path in sorted(recipes.glob("*.toml")):
        recipe = load_recipe(path, plugins=norton_plugins)
        assert recipe.evaluation.precision == "fp32", path.name
        spec = recipe.components.get("evaluation.task_options.youcook2-video")
        if spec is not None:
            cfg = spec.config
            assert (cfg.exact, cfg.centred, cfg.bg_attend_cls, cfg.bg_dtw_offset, cfg.select_ratio) == (
                True, True, False, 3.0, 1.3), path.name


def test_a_clip_list_repeating_one_clip_600000_times_is_refused_by_its_bound(tmp_path):
    """1.2 MB of pickle (one record referenced 600,000 times through the memo) would evaluate 600,000 copies."""
    import pickle

    from norton_evaluators.readers import MAX_CLIPS, read_clip_selection

    record = {"id": "yc000_0"}
    path = tmp_path / "youcook_val.pkl"
    path.write_bytes(pickle.dumps([record] * 600_000, protocol=4))
    assert path.stat().st_size < 1_300_000
    with pytest.raises(DataError, match=rf"names 600000 clips, more than the {MAX_CLIPS} a clip list may hold"):
        read_clip_selection(path)
    path.write_bytes(pickle.dumps([record, {"id": "yc000_1"}, record], protocol=4))
    with pytest.raises(DataError, match=r"record 2: clip 'yc000_0' is listed again \(first at record 0\)"):
        read_clip_selection(path)


def test_a_fifo_or_dev_zero_as_a_clip_list_is_refused_without_reading(tmp_path):
    import os

    from norton_evaluators.readers import read_clip_selection

    os.mkfifo(tmp_path / "clips.txt")
    with pytest.raises(DataError, match="is a FIFO"):
        read_clip_selection(tmp_path / "clips.txt")
    (tmp_path / "zero.pkl").symlink_to("/dev/zero")
    with pytest.raises(DataError, match="is a character device"):
        read_clip_selection(tmp_path / "zero.pkl")
