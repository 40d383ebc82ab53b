"""`norton runs`, `compare` and `plot` on run directories laid out as the engine writes them."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from norton_core.cli import main
from norton_core.engine.checkpoint import RunLock


def fake_run(root: Path, name: str, *, lr: float, steps: int, epochs: int = 2, done: bool = True,
             evaluation: dict | None = None) -> Path:
    """A run directory with what `norton runs` reads: recipe.json, metrics.jsonl, eval.json, latest checkpoint."""
    run = root / name
    (run / "checkpoints" / f"step-{steps}").mkdir(parents=True)
    recipe = {"run": {"name": name, "output_dir": str(root), "seed": 1},
              "train": {"epochs": epochs, "max_steps": 0, "lr": lr, "videos_per_batch": 8},
              "loss": {"name": "norton", "beta": 0.3}}
    (run / "recipe.json").write_text(json.dumps(recipe))
    per_epoch = 4
    records = [{"event": "start", "step": 0, "total_steps": epochs * per_epoch}]
    for step in range(1, steps + 1):
        records.append({"step": step, "epoch": 1 + (step - 1) // per_epoch, "loss": 5.0 / step, "clip_loss": 3.0 / step,
                        "lr": lr * step / steps, "grad_norm": 1.0, "clips_per_s": 100.0, "time": 0.0})
        if step % per_epoch == 0:
            records.append({"event": "epoch_end", "epoch": step // per_epoch, "step": step, "loss": 1.0})
    records.append({"event": "retrieval", "step": 4, "seconds": 0.5, "recall": 0.8, "filled": 1.0, "backend": "exact"})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run / "eval.json").write_text(json.dumps(evaluation or {}))
    state = {"step": steps, "epoch": (epochs + 1) if done else 1 + steps // per_epoch, "cursor": 0}
    (run / "checkpoints" / f"step-{steps}" / "state.json").write_text(json.dumps(state))
    (run / "checkpoints" / "latest").write_text(f"step-{steps}\n")
    return run


EVAL_A = {"after": {"youcook2_clip/R@1": 14.5, "youcook2_clip/pairs": 200.0, "youcook2_clip/skipped_missing_features": 0.0,
                    "htm_align/recall": 60.0}}
EVAL_B = {"after": {"youcook2_clip/R@1": 17.25, "youcook2_clip/pairs": 200.0, "youcook2_clip/skipped_missing_features": 0.0,
                    "htm_align/recall": 71.0}}


@pytest.fixture
def two_runs(tmp_path):
    a = fake_run(tmp_path, "alpha", lr=1e-3, steps=8, evaluation=EVAL_A)
    b = fake_run(tmp_path, "beta", lr=4e-4, steps=5, done=False, evaluation=EVAL_B)
    return tmp_path, a, b


def test_runs_lists_state_step_loss_and_main_figures(two_runs, capsys):
    root, a, b = two_runs
    assert main(["runs", str(root)]) == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[2:]}
    assert lines["alpha"][:5] == ["alpha", "complete", "8/8", "2", "0.6250"]
    assert lines["beta"][:5] == ["beta", "interrupted", "5/8", "2", "1.0000"]
    assert lines["alpha"][-2:] == ["14.50", "60.00"] and lines["beta"][-2:] == ["17.25", "71.00"]


def test_runs_sees_a_live_run_as_running(two_runs, capsys):
    root, a, b = two_runs
    lock = RunLock(b)
    lock.acquire()
    try:
        main(["runs", str(root)])
    finally:
        lock.release()
    states = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()[2:]}
    assert states == {"alpha": "complete", "beta": "running"}


def test_compare_shows_evaluations_side_by_side_and_the_differing_settings(two_runs, capsys):
    root, a, b = two_runs
    assert main(["compare", str(a), str(b), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "| youcook2_clip | R@1 | 0.50 | 14.50 | 17.25 |" in out  # with the chance level of 200 pairs
    assert "| htm_align | recall |  | 60.00 | 71.00 |" in out
    assert "| train.lr | 0.001 | 0.0004 |" in out
    settings = [line for line in out.splitlines() if line.startswith("| train.") or line.startswith("| run.")]
    assert [s.split(" | ")[0] for s in settings] == ["| train.lr"]  # run.name / output_dir are where, not what
    assert "skipped_missing_features" not in out  # an all-zero counter says nothing


def test_plot_writes_a_png_with_every_run(two_runs, tmp_path):
    pytest.importorskip("matplotlib")
    root, a, b = two_runs
    out = tmp_path / "figs" / "runs.png"
    assert main(["plot", str(a), str(b), "-o", str(out)]) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_plot_without_matplotlib_says_which_extra(two_runs, tmp_path, monkeypatch, capsys):
    import builtins

    real = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    root, a, b = two_runs
    assert main(["plot", str(a), "-o", str(tmp_path / "x.png")]) == 2
    assert "pip install 'norton[plot]'" in capsys.readouterr().err


def test_run_tools_name_what_is_not_a_run(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["compare", str(tmp_path / "empty")]) == 2
    assert "not a run directory (no recipe.json)" in capsys.readouterr().err
    assert main(["runs", str(tmp_path / "missing")]) == 2
    bad = fake_run(tmp_path, "torn", lr=1e-3, steps=2)
    with open(bad / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 3, "lo')  # a run killed mid-line: the torn tail is not a record
    assert main(["runs", str(tmp_path)]) == 0
    assert os.path.exists(bad)


def test_end_of_run_table_names_its_columns_and_shows_chance(capsys):
    from norton_core.engine.loop import print_evaluation

    def results(r1):
        return {"youcook2_clip/R@1": r1, "youcook2_clip/pairs": 277.0, "youcook2_clip/skipped_empty_caption": 0.0,
                "htm_align/recall": 2 * r1, "htm_align/recall_chance": 13.83}

    print_evaluation({"videoclip_demo/before": results(0.36), "videoclip_demo/after": results(14.08),
                      "after": results(17.69)}, "how2_demo", initialised=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["task", "metric", "chance", "untrained", "after", "videoclip_demo", "after",
                                "how2_demo"]
    assert lines[2].split() == ["youcook2_clip", "R@1", "0.36", "0.36", "14.08", "17.69"]
    assert lines[4].split() == ["htm_align", "recall", "13.83", "0.72", "28.16", "35.38"]
    assert not any("skipped" in line or "recall_chance" in line for line in lines)


def test_a_run_started_from_weights_does_not_call_its_start_untrained():
    from norton_core.runs import column_labels

    assert list(column_labels({"before": {}, "after": {}}, "ft", initialised=True)) == ["before ft", "after ft"]
    assert list(column_labels({"before": {}, "after": {}}, "ft", initialised=False)) == ["untrained", "after ft"]


@pytest.mark.parametrize(("damage", "reason"), [
    (lambda run: (run / "eval.json").write_text('{"after": {"youcook2_clip/R@1": 1'), r"eval\.json: unreadable"),
    (lambda run: (run / "eval.json").write_bytes(b"\xff\xfe{}"), r"eval\.json: unreadable"),
    (lambda run: (run / "eval.json").write_text('{"after": 5}'), r"eval\.json: 'after' is int, expected a table"),
    (lambda run: (run / "checkpoints" / "step-5" / "state.json").write_text('{"step": "abc", "epoch": 1}'),
     r"step-5/state\.json: step 'abc' is not a non-negative integer"),
    (lambda run: (run / "checkpoints" / "step-5" / "state.json").write_text('{"step": 5, "epoch": -1}'),
     r"step-5/state\.json: epoch -1 is not a non-negative integer"),
    (lambda run: (run / "checkpoints" / "latest").write_text("../../../etc\n"),
     r"checkpoints/latest: does not name a checkpoint \('\.\./\.\./\.\./etc'\)"),
    (lambda run: (run / "recipe.json").write_text('{"train": {"epochs": "two"}}'),
     r"recipe\.json: epochs 'two' is not a non-negative integer"),
    (lambda run: (run / "metrics.jsonl").write_bytes(b'{"step": 1}\n\xff\n{"step": 2}\n'),
     r"metrics\.jsonl: unreadable"),
    (lambda run: (run / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n'),
     r"metrics\.jsonl:2: not a JSON record"),
])
def test_runs_lists_every_run_when_one_is_unreadable(two_runs, capsys, damage, reason):
    """Issue 26 #8: an unreadable eval.json failed the listing of every run, ``step: "abc"`` gave a traceback.
    The damaged run (beta) is one line saying what is wrong; the others are listed as before."""
    root, a, b = two_runs
    damage(b)
    assert main(["runs", str(root)]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in out[2:4]}
    assert rows["alpha"][:5] == ["alpha", "complete", "8/8", "2", "0.6250"]
    assert rows["beta"][:2] == ["beta", "unreadable"]
    assert len(out) == 5 and re.match(rf"^beta: unreadable: {re.escape(str(b))}/.*{reason}", out[4]), out[4]


def test_runs_shows_a_start_record_with_a_bad_total_as_an_unknown_total(two_runs, capsys):
    """A ``total_steps`` that is not a number in metrics.jsonl (a hand-edited log) leaves the total out."""
    root, a, b = two_runs
    with open(b / "metrics.jsonl", "a") as fh:
        fh.write('{"event": "start", "step": 5, "total_steps": "many"}\n')
    assert main(["runs", str(root)]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows["beta"][:3] == ["beta", "interrupted", "5/8"] and rows["alpha"][:3] == ["alpha", "complete", "8/8"]
