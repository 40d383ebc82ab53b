"""CrossTask zero-shot step localization: the one-time-per-step rule and the recall (hand-worked), the reference
split, the dirty records, and the evaluator end to end on a tiny released-layout set."""

from __future__ import annotations

import numpy as np
import pytest
from norton_evaluators.crosstask import (
    chance_hits,
    one_time_per_step,
    read_assignment,
    read_tasks,
    reference_split,
    task_recalls,
)
from norton_evaluators.readers import Skips

from norton_core.errors import DataError
from norton_core.evaluation import run_evaluation
from tests.evaluation.fakes import FakeModel, eval_plugins
from tests.evaluation.fakes_segmentation import make_crosstask


@pytest.fixture(scope="module")
def plugins():
    return eval_plugins()


@pytest.fixture(scope="module")
def ct_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    make_crosstask(root)
    return root


def _run(model, root, plugins, **options):
    return run_evaluation(model, ["crosstask"], root, plugins=plugins, progress=False, batch_size=5,
                          options={"crosstask": {"n_train": 2, **options}})


def _cells(y):
    return sorted(zip(*np.nonzero(y), strict=True))


# ---- one time per step -----------------------------------------------------------------------------------------


def test_each_step_gets_one_second_in_order_at_the_least_total_cost():
    cost = np.array([[5.0, 0.0], [4.0, 6.0], [0.0, 5.0], [6.0, 3.0]])
    # per-step minima (step 1 at 2, step 2 at 0) are out of order; the best ordered pair is (2, 3): 0 + 3
    assert _cells(one_time_per_step(cost)) == [(2, 0), (3, 1)]


def test_the_best_ordered_pair_may_skip_each_steps_own_minimum():
    cost = np.array([[1.0, 5.0], [2.0, 1.0], [0.5, 3.0], [4.0, 0.2]])
    # pairs t1 < t2: (0,1) 2, (0,3) 1.2, (2,3) 0.7 is the least
    assert _cells(one_time_per_step(cost)) == [(2, 0), (3, 1)]


def test_ties_are_broken_as_the_reference_programme_breaks_them():
    # all costs equal: staying in background wins ties, and ending on the last step beats ending in background,
    # so the steps land on seconds 0 and 2 (worked through the reference's recursion by hand)
    assert _cells(one_time_per_step(np.zeros((3, 2)))) == [(0, 0), (2, 1)]
    assert _cells(one_time_per_step(np.zeros((2, 2)))) == [(0, 0), (1, 1)]


def test_exactly_one_second_per_step_even_where_a_step_is_best_everywhere():
    cost = np.tile([0.0, 9.0, 9.0], (6, 1))
    y = one_time_per_step(cost)
    assert (y.sum(axis=0) == 1).all() and (y.sum(axis=1) <= 1).all()
    assert list(np.argmax(y, axis=0)) == sorted(np.argmax(y, axis=0))


def test_a_video_shorter_than_its_steps_is_refused_by_the_programme():
    with pytest.raises(ValueError, match="cannot hold"):
        one_time_per_step(np.zeros((2, 3)))


# ---- recall ----------------------------------------------------------------------------------------------------


def _y(length, k, cells):
    y = np.zeros((length, k), dtype=np.uint8)
    for t, s in cells:
        y[t, s] = 1
    return y


def test_recall_counts_annotated_steps_per_task_then_averages_tasks():
    truth = {
        "A": {"v1": _y(4, 2, [(0, 0), (1, 0)]),  # step 2 never annotated: not counted
              "v2": _y(4, 2, [(0, 0), (2, 0), (3, 1)])},  # step 1 annotated twice: counted once
        "B": {"v3": _y(3, 2, [(0, 0), (1, 0), (2, 1)])},
    }
    predicted = {
        "A": {"v1": _y(4, 2, [(1, 0), (3, 1)]), "v2": _y(4, 2, [(1, 0), (3, 1)])},
        "B": {"v3": _y(3, 2, [(0, 0), (1, 1)])},
    }
    recalls = task_recalls(truth, predicted)
    assert recalls == {"A": pytest.approx(2 / 3), "B": pytest.approx(1 / 2)}


def test_chance_is_each_annotated_steps_share_of_the_video():
    # a uniformly random second hits step 1 with probability 2/4 and step 2 with 1/4; step 3 is not annotated
    assert chance_hits(_y(4, 3, [(0, 0), (1, 0), (3, 1)])) == pytest.approx(0.75)


# ---- reading the release ---------------------------------------------------------------------------------------


def test_task_files_are_read_in_blocks(tmp_path):
    path = tmp_path / "tasks_primary.txt"
    path.write_text("16815\nJack Up a Car\nhttp://x\n3\nbrake on,raise jack,lower jack\n\n"
                    "23521\nMake Jello Shots\nhttp://y\n2\npour water,stir mixture\n")
    assert read_tasks(path) == {"16815": ["brake on", "raise jack", "lower jack"],
                                "23521": ["pour water", "stir mixture"]}
    path.write_text("16815\nJack Up a Car\nhttp://x\n4\nbrake on,raise jack\n\n")
    with pytest.raises(DataError, match="says 4 steps but lists 2"):
        read_tasks(path)


def test_assignment_rounds_outward_and_counts_dirty_lines(tmp_path):
    path = tmp_path / "t_v.csv"
    path.write_text("1,0.5,2.2\n2,4.0,9.0\n3,1,2\n0,1,2\n2,3,1\n2,12,14\n")
    skips = Skips("crosstask")
    y = read_assignment(path, 6, 2, skips, "t_v.csv")
    assert _cells(y) == [(0, 0), (1, 0), (2, 0), (4, 1), (5, 1)]
    assert skips.counts == {"bad_step": 2, "bad_segment": 1, "segment_past_end": 1}
    path.write_text("1,zero,2\n")
    with pytest.raises(DataError, match="line 1: expected step,start_s,end_s"):
        read_assignment(path, 6, 2, Skips("crosstask"), "t_v.csv")


def test_reference_split_draws_per_primary_task_in_file_order_from_one_seeded_stream():
    videos = [("A", f"a{i}") for i in range(5)] + [("R", "r0")] + [("B", f"b{i}") for i in range(4)]
    tested = reference_split(videos, [("A", "a4")], {"A", "B"}, n_train=2, seed=0)
    # a4 is held out; A keeps a0..a3 and B b0..b3; RandomState(0) permutes 4 items as [2, 3, 1, 0] and then
    # [0, 2, 1, 3]: the first two of each permutation train, the rest are tested; R is not primary
    stream = np.random.RandomState(0)
    assert stream.permutation(4).tolist() == [2, 3, 1, 0] and stream.permutation(4).tolist() == [0, 2, 1, 3]
    assert tested == {"A": ["a0", "a1"], "B": ["b1", "b3"]}
    assert reference_split(videos, [], {"A"}, n_train=5, seed=0) == {}  # no task with more than n_train videos


# ---- end to end ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["reference", "val"])
def test_planted_model_localises_every_step(ct_root, plugins, split):
    r = _run(FakeModel(FakeModel.Config()), ct_root, plugins, split=split)
    assert r["crosstask/recall"] == pytest.approx(100.0)
    assert r["crosstask/tasks"] == 2
    # reference: 5 - 1 held out - 2 training per task; val: 1 per task
    assert r["crosstask/videos"] == (4 if split == "reference" else 2)
    assert r["crosstask/steps"] == (2 * 3 + 2 * 4 if split == "reference" else 3 + 4)
    assert 0 < r["crosstask/recall_chance"] < 40
    assert r["crosstask/recall_100"] == pytest.approx(100.0)
    assert all(v == 0 for k, v in r.items() if "/skipped_" in k)


def test_random_model_is_far_from_perfect(ct_root, plugins):
    r = _run(FakeModel(FakeModel.Config(planted=False)), ct_root, plugins, split="val")
    assert r["crosstask/recall"] < 80


def test_dirty_records_are_counted_and_named(tmp_path, plugins, caplog):
    out = make_crosstask(tmp_path)
    release = out / "crosstask_release"
    (out / "features" / "ct100x04.npy").unlink()  # a validation video without features
    (release / "annotations" / "200_ct200x04.csv").unlink()  # one without its annotation
    with (release / "videos_val.csv").open("a") as fh:
        fh.write("999,ghost,https://x\n")
    with caplog.at_level("WARNING", logger="norton.evaluation"):
        r = _run(FakeModel(FakeModel.Config()), tmp_path, plugins, split="val")
    assert r["crosstask/skipped_missing_features"] == 1 and r["crosstask/skipped_missing_annotation"] == 1
    assert r["crosstask/skipped_unknown_task"] == 1
    assert np.isnan(r["crosstask/recall"]) and r["crosstask/videos"] == 0
    assert "ct100x04" in caplog.text and "200_ct200x04.csv" in caplog.text and "ghost" in caplog.text


def test_a_video_shorter_than_its_task_is_skipped_and_counted(tmp_path, plugins):
    out = make_crosstask(tmp_path)
    np.save(out / "features" / "ct200x04.npy", np.zeros((3, 512), dtype=np.float16))
    r = _run(FakeModel(FakeModel.Config()), tmp_path, plugins, split="val")
    assert r["crosstask/skipped_too_short"] == 1 and r["crosstask/videos"] == 1


def test_a_malformed_video_list_names_file_and_line(tmp_path, plugins):
    out = make_crosstask(tmp_path)
    (out / "crosstask_release" / "videos_val.csv").write_text("100,ct100x04\n")
    with pytest.raises(DataError, match=r"videos_val.csv: line 1: expected task,video_id,url"):
        _run(FakeModel(FakeModel.Config()), tmp_path, plugins, split="val")
