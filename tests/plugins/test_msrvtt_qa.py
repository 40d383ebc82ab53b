"""MSR-VTT-QA multiple choice: the accuracy metric by hand, the released file layout, dirty lines counted by name."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
from norton_evaluators.msrvtt_qa import choice_accuracy

from norton_core.errors import DataError
from norton_core.evaluation import run_evaluation
from tests.evaluation.fakes import FakeModel, concepts, eval_plugins

HEADER = "key\tvid_key\ta1\ta2\ta3\ta4\ta5\tanswer"


@pytest.fixture(scope="module")
def plugins():
    return eval_plugins()


def _run(model, root, plugins, **options):
    return run_evaluation(model, ["msrvtt-qa"], root, plugins=plugins, progress=False,
                          options={"msrvtt-qa": options} if options else None)


def make_qa(root: Path, questions: int = 8, seed: int = 0) -> Path:
    """``root/msrvtt`` with one video per question (concept 600 + i) and its sentence ``w<600 + i>`` among 4 others;
    the answer's position cycles through 0..4."""
    rng = np.random.default_rng(seed)
    out = root / "msrvtt"
    (out / "features").mkdir(parents=True, exist_ok=True)
    lines = [HEADER]
    for i in range(questions):
        feats = concepts()[600 + i] + 0.05 * rng.standard_normal((int(rng.integers(8, 30)), 512))
        np.save(out / "features" / f"video{7000 + i}.npy", feats.astype(np.float16))
        others = [f"w{700 + 5 * i + j}" for j in range(4)]
        answer = i % 5
        candidates = others[:answer] + [f"w{600 + i}"] + others[answer:]
        lines.append("\t".join([f"mc{i}", f"msr{7000 + i}", *candidates, str(answer)]))
    (out / "MSR_MC_test.csv").write_text("\n".join(lines) + "\n")
    return out


def test_accuracy_by_hand_with_both_tie_rules():
    nan = float("nan")
    scores = np.array([
        [1, 2, 3, 0, 0],  # answer 2 is best: right
        [5, 5, 1, 1, 1],  # answer 0 ties with 1: 1/2 expected, right by the first-maximum rule
        [5, 5, 1, 1, 1],  # answer 1 ties with 0: 1/2 expected, wrong by the first-maximum rule
        [nan, 0, 0, 0, 0],  # answer 0 scored NaN: below every number, wrong
        [0, 0, 0, 0, 0],  # answer 3 ties with all: 1/5 expected, wrong by the first-maximum rule
    ])
    answers = np.array([2, 0, 1, 0, 3])
    assert choice_accuracy(scores, answers) == pytest.approx(100 * (1 + 0.5 + 0.5 + 0 + 0.2) / 5)
    assert choice_accuracy(scores, answers, ties="first") == pytest.approx(40.0)
    # the reference's QAMetric: accuracy of argmax predictions (sklearn's accuracy_score is the mean of equals)
    assert choice_accuracy(scores[:3], answers[:3], ties="first") == pytest.approx(
        100 * np.mean(np.argmax(scores[:3], axis=1) == answers[:3]))
    assert math.isnan(choice_accuracy(np.zeros((0, 5)), np.zeros(0)))


def test_planted_model_answers_every_question_and_chance_is_reported(tmp_path, plugins):
    make_qa(tmp_path)
    results = _run(FakeModel(FakeModel.Config()), tmp_path, plugins)
    assert results["msrvtt_qa/accuracy"] == 100.0 and results["msrvtt_qa/accuracy_chance"] == 20.0
    assert results["msrvtt_qa/questions"] == 8 and results["msrvtt_qa/videos"] == 8
    assert all(v == 0 for k, v in results.items() if "/skipped_" in k)


def test_collapsed_model_is_chance_by_default_and_the_a1_share_by_the_reference_rule(tmp_path, plugins):
    make_qa(tmp_path, questions=10)  # answers 0,1,2,3,4,0,1,2,3,4: 2 of 10 are a1
    model = FakeModel(FakeModel.Config(planted=False))
    model.words.data.zero_()
    model.proj.data.zero_()
    assert _run(model, tmp_path, plugins)["msrvtt_qa/accuracy"] == pytest.approx(20.0)
    assert _run(model, tmp_path, plugins, ties="first")["msrvtt_qa/accuracy"] == pytest.approx(20.0)
    # move every answer to a1: the first-maximum rule now scores 100 with a model that sees nothing
    path = tmp_path / "msrvtt" / "MSR_MC_test.csv"
    lines = path.read_text().splitlines()
    moved = [lines[0]]
    for line in lines[1:]:
        f = line.split("\t")
        cands, answer = f[2:7], int(f[7])
        cands.insert(0, cands.pop(answer))
        moved.append("\t".join([*f[:2], *cands, "0"]))
    path.write_text("\n".join(moved) + "\n")
    assert _run(model, tmp_path, plugins, ties="first")["msrvtt_qa/accuracy"] == 100.0
    assert _run(model, tmp_path, plugins)["msrvtt_qa/accuracy"] == pytest.approx(20.0)
    assert _run(FakeModel(FakeModel.Config()), tmp_path, plugins)["msrvtt_qa/accuracy"] == 100.0


def test_only_the_first_max_video_len_seconds_are_seen(tmp_path, plugins):
    """The answer's concept shown only after 16 blank seconds: unseen at the reference's 16 s (all tie), seen at 32."""
    out = make_qa(tmp_path, questions=5)
    for i in range(5):
        feats = np.concatenate([np.zeros((16, 512)), np.tile(concepts()[600 + i], (10, 1))])
        np.save(out / "features" / f"video{7000 + i}.npy", feats.astype(np.float32))
    model = FakeModel(FakeModel.Config())
    assert _run(model, tmp_path, plugins)["msrvtt_qa/accuracy"] == pytest.approx(20.0)  # all five tie
    assert _run(model, tmp_path, plugins, max_video_len=32)["msrvtt_qa/accuracy"] == 100.0


def test_dirty_lines_are_skipped_counted_and_named(tmp_path, plugins, caplog):
    out = make_qa(tmp_path, questions=8)
    lines = (out / "MSR_MC_test.csv").read_text().splitlines()
    f = [line.split("\t") for line in lines]
    (out / "features" / "video7000.npy").unlink()  # line 2: no feature file
    lines[2] = "\t".join(f[2][:6] + [f[2][7]])  # line 3: 4 candidates (a field short)
    lines[3] = "\t".join(f[3][:4] + [" "] + f[3][5:])  # line 4: an empty candidate
    lines[4] = "\t".join(f[4][:7] + ["5"])  # line 5: no candidate 5
    lines[5] = "\t".join(f[5][:7] + ["first"])  # line 6: not an index
    lines[6] = "\t".join(f[6] + ["extra"])  # line 7: a sixth sentence
    (out / "MSR_MC_test.csv").write_text("\n".join(lines) + "\n\n")
    with caplog.at_level(logging.WARNING, logger="norton.evaluation"):
        results = _run(FakeModel(FakeModel.Config()), tmp_path, plugins)
    assert results["msrvtt_qa/skipped_missing_features"] == 1
    assert results["msrvtt_qa/skipped_bad_candidates"] == 3
    assert results["msrvtt_qa/skipped_bad_answer"] == 2
    assert results["msrvtt_qa/questions"] == 2 and results["msrvtt_qa/accuracy"] == 100.0
    logged = caplog.text
    for needle in ("video7000", "line 3 (msr7001)", "line 4 (msr7002)", "line 5 (msr7003): answer '5'",
                   "line 6 (msr7004): answer 'first'", "line 7 (msr7005)"):
        assert needle in logged, needle


def test_nothing_scorable_gives_nan_and_counts(tmp_path, plugins):
    out = make_qa(tmp_path, questions=2)
    for p in (out / "features").iterdir():
        p.unlink()
    results = _run(FakeModel(FakeModel.Config()), tmp_path, plugins)
    assert math.isnan(results["msrvtt_qa/accuracy"]) and results["msrvtt_qa/skipped_missing_features"] == 2


@pytest.mark.parametrize("content, needle", [
    ("key,vid_key,a1,a2,a3,a4,a5,answer\nmc0,msr1,a,b,c,d,e,0\n", "line 1: expected a tab-separated header"),
    ("vid_key\ta1\ta2\ta3\ta4\tanswer\n", "missing a5"),
    ("", "line 1"),
    (HEADER + "\nmc0\t../../etc/x\ta\tb\tc\td\te\t0\n", "line 2 (../../etc/x): vid_key"),
])
def test_a_file_not_in_the_released_layout_is_an_error_naming_it(tmp_path, plugins, content, needle):
    out = tmp_path / "msrvtt"
    (out / "features").mkdir(parents=True)
    (out / "MSR_MC_test.csv").write_text(content)
    with pytest.raises(DataError) as err:
        _run(FakeModel(FakeModel.Config()), tmp_path, plugins)
    assert str(out / "MSR_MC_test.csv") in str(err.value) and needle in str(err.value)


def test_first_rule_equals_the_reference_predictor_on_a_random_model(tmp_path, plugins):
    """The reference's ``QAPredictor`` restated: the video (first 16 s) repeated 5 times, a bmm of the pooled videos
    with the 5 pooled sentences, argmax over sentences of the first copy, accuracy against the answers."""
    import torch

    from norton_core.evaluation.embed import encode_texts

    out = make_qa(tmp_path, questions=30)
    rng = np.random.default_rng(1)
    for i in range(30):  # unrelated features: a random model's answers are a mix of right and wrong
        np.save(out / "features" / f"video{7000 + i}.npy", rng.standard_normal((int(rng.integers(5, 40)), 512)))
    model = FakeModel(FakeModel.Config(planted=False, seed=2))
    got = _run(model, tmp_path, plugins, ties="first")["msrvtt_qa/accuracy"]
    rows = [line.split("\t") for line in (out / "MSR_MC_test.csv").read_text().splitlines()[1:]]
    vfeats = torch.zeros(len(rows), 16, 512)
    vmasks = torch.zeros(len(rows), 16, dtype=torch.bool)
    for i, row in enumerate(rows):
        f = np.load(out / "features" / f"{row[1].replace('msr', 'video')}.npy")[:16]
        vfeats[i, :len(f)] = torch.from_numpy(f.astype(np.float32))
        vmasks[i, :len(f)] = True
    with torch.no_grad():
        model.eval()
        pooled_video = model.forward_video(vfeats.unsqueeze(1).repeat(1, 5, 1, 1).view(-1, 16, 512),
                                           vmasks.unsqueeze(1).repeat(1, 5, 1).view(-1, 16))[0]
    pooled_text = torch.from_numpy(encode_texts(model, [c for row in rows for c in row[2:7]], 80))
    scores = torch.bmm(pooled_video.view(-1, 5, pooled_video.shape[-1]),
                       pooled_text.view(-1, 5, pooled_text.shape[-1]).transpose(2, 1))
    predictions = scores.argmax(-1)[:, 0].numpy()
    expected = 100 * np.mean(predictions == np.array([int(row[7]) for row in rows]))
    assert got == pytest.approx(expected) and 0 < got < 100
