"""Never silent at chance: a run whose loss sits at its chance value says so while it runs, in its records, in
`norton runs` and at its end; a run that learns does not."""

from __future__ import annotations

import argparse
import json
import math

import pytest

from norton_core.engine.chance import ChanceCount, ChanceWatch, at_chance
from norton_core.runs.cli import cmd_runs
from tests.engine.fakes import FakeLoss
from tests.engine.fakes import run_fake as _run

#: no retrieval rounds (they add nothing here and cost a compile on a cold cache): 15 steps of 4 videos x 4 clips
QUICK = {"retrieval": {"enabled": False}, "train": {"checkpoint_every": 0}}
CHANCE_16 = 2 * math.log(16)  # symmetric InfoNCE over 16 pairs


def _events(run_dir, kind):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r.get("event") == kind]


def _runs_table(tmp_path, capsys):
    capsys.readouterr()
    assert cmd_runs(argparse.Namespace(dir=str(tmp_path / "runs"), markdown=False)) == 0
    return capsys.readouterr().out


def test_a_step_is_at_chance_within_the_tolerance():
    assert at_chance(5.60, CHANCE_16, 0.03) and at_chance(5.40, CHANCE_16, 0.03)
    assert not at_chance(5.30, CHANCE_16, 0.03) and not at_chance(5.75, CHANCE_16, 0.03)
    assert not at_chance(0.0, 0.0, 0.03)  # a chance value of 0 says nothing
    assert not at_chance(float("nan"), CHANCE_16, 0.03)


def test_the_watch_says_once_when_the_share_is_reached_and_when_it_is_left():
    lines: list[str] = []
    watch = ChanceWatch(0.03, 0.5, ChanceCount(), lines.append)
    losses = [4.0, 4.0, 5.5, 5.5, 5.5, 5.5, 4.0, 4.0, 4.0]  # at chance: steps 3-6
    records = [watch.observe(step, loss, CHANCE_16) for step, loss in enumerate(losses, 1)]
    # step 5: 3 of 5 steps at chance (>= 50 %, >= 5 steps); step 9: 4 of 9 (< 50 %)
    assert [(i + 1, r["state"]) for i, r in enumerate(records) if r] == [(5, "at_chance"), (9, "left_chance")]
    assert records[4]["steps_at_chance"] == 3 and records[4]["steps"] == 5
    assert len(lines) == 2 and lines[0].startswith("norton: warning: the loss is at chance at step 5")
    assert "train.lr" in lines[0] and "left chance at step 9" in lines[1]
    assert not watch.ended_at_chance() and watch.marker() == ""


def test_a_first_loss_far_above_chance_is_said_at_once_with_what_to_change():
    lines: list[str] = []
    watch = ChanceWatch(0.03, 0.5, ChanceCount(), lines.append)
    record = watch.observe(1, 1.6 * CHANCE_16, CHANCE_16)
    assert record is not None and record["state"] == "above_chance" and record["step"] == 1
    assert len(lines) == 1 and "1.60x its chance value 5.5452" in lines[0] and "loss.temperature" in lines[0]
    assert watch.observe(2, 2.0 * CHANCE_16, CHANCE_16) is None and len(lines) == 1  # only the first loss
    # a first loss near chance, or below it, says nothing
    quiet: list[str] = []
    assert ChanceWatch(0.03, 0.5, ChanceCount(), quiet.append).observe(1, 1.2 * CHANCE_16, CHANCE_16) is None
    assert quiet == []


def test_a_run_that_starts_at_chance_by_design_has_its_first_tenth_to_leave_it():
    lines: list[str] = []
    watch = ChanceWatch(0.03, 0.5, ChanceCount(), lines.append, total_steps=180)
    losses = [CHANCE_16] * 10 + [4.0] * 10  # small first logits: 10 steps at chance, then it learns
    assert [watch.observe(step, loss, CHANCE_16) for step, loss in enumerate(losses, 1)] == [None] * 20
    assert lines == []
    # a run that stays there is said to be at chance once its first tenth (18 steps) is over
    stuck = ChanceWatch(0.03, 0.5, ChanceCount(), lines.append, total_steps=180)
    records = [stuck.observe(step, CHANCE_16, CHANCE_16) for step in range(1, 19)]
    assert [i for i, r in enumerate(records, 1) if r] == [18] and "at chance at step 18" in lines[0]
    # the warm-up's steps come first: the demo's first stage (60 steps, 5 of warm-up) is watched from step 11 on,
    # so its 6 steps at chance followed by learning say nothing
    demo: list[str] = []
    watch = ChanceWatch(0.03, 0.5, ChanceCount(), demo.append, total_steps=60, warmup_steps=5)
    assert watch.min_steps == 11
    assert all(watch.observe(step, loss, CHANCE_16) is None
               for step, loss in enumerate([CHANCE_16] * 6 + [4.0] * 20, 1)) and demo == []


def test_steps_on_retrieval_batches_are_counted_apart_in_what_the_watch_says():
    lines: list[str] = []
    watch = ChanceWatch(0.03, 0.5, ChanceCount(), lines.append)
    for step in range(1, 4):
        watch.observe(step, 4.0, CHANCE_16)  # random batches, learning
    records = [watch.observe(step, CHANCE_16, CHANCE_16, retrieved=True) for step in range(4, 8)]
    (record,) = [r for r in records if r]
    assert record["state"] == "at_chance" and record["steps"] == 6 and record["steps_at_chance"] == 3
    assert record["retrieval_steps"] == 3 and record["retrieval_steps_at_chance"] == 3
    assert "3 of them among the 3 steps on retrieval batches" in lines[0]
    # the count survives the checkpointed state
    again = ChanceCount.from_json(watch.count.to_json())
    assert (again.retrieval_steps, again.retrieval_at_chance) == (4, 4)


def test_a_model_that_cannot_learn_is_reported_at_chance_while_it_runs_and_at_its_end(tmp_path, plugins, capsys):
    result = _run(tmp_path, plugins, model={"ignore_input": True}, **QUICK)
    out = capsys.readouterr().out
    # the fake model's outputs ignore the input: every step's loss is exactly 2 ln 16
    assert result.step == 15 and result.metrics["loss"] == pytest.approx(CHANCE_16, rel=1e-6)
    lines = out.splitlines()
    # 15 steps after a warm-up of 2: watched from step 2 + 5 = 7 on
    first = next(i for i, line in enumerate(lines) if "warning: the loss is at chance at step 7" in line)
    assert "5.5452 against chance 5.5452" in lines[first] and "model.freeze" in lines[first]
    assert all("AT CHANCE (5.5452)" in line for line in lines if line.startswith("norton: step ")
               and int(line.split()[2].split("/")[0]) >= 7)
    assert "warning: run fake ended at chance" in lines[-1]
    events = _events(result.run_dir, "chance")
    assert [(e["state"], e["step"]) for e in events] == [("at_chance", 7), ("end", 15)]
    assert events[-1]["ended_at_chance"] and events[-1]["steps_at_chance"] == 15
    table = _runs_table(tmp_path, capsys)
    assert "15/15 !" in table and "warning: fake ended at chance" in table and "look at train.lr" in table
    # run again once complete: it says so again beside its (re)printed results
    _run(tmp_path, plugins, model={"ignore_input": True}, resume=True, **QUICK)
    assert "warning: run fake ended at chance" in capsys.readouterr().out


def test_the_count_continues_across_a_resume(tmp_path, plugins, capsys):
    quick = {**QUICK, "train": {"checkpoint_every": 3, "max_steps": 3}}
    _run(tmp_path, plugins, model={"ignore_input": True}, **quick)
    assert "at chance" not in capsys.readouterr().out  # 3 steps say nothing yet
    result = _run(tmp_path, plugins, model={"ignore_input": True}, resume=True, allow_recipe_change=("train.max_steps",),
                  retrieval={"enabled": False}, train={"checkpoint_every": 3, "max_steps": 8})
    assert result.step == 8
    assert "the loss is at chance at step 7" in capsys.readouterr().out  # 3 steps before, 4 after the resume
    assert _events(result.run_dir, "chance")[-1]["steps"] == 8


def test_a_learning_run_does_not_warn(tmp_path, plugins, capsys):
    result = _run(tmp_path, plugins, **QUICK)
    out = capsys.readouterr().out
    assert result.metrics["loss"] < 0.95 * CHANCE_16  # it learns: the last loss is well below chance
    assert "chance" not in out.lower()
    (end,) = _events(result.run_dir, "chance")
    assert end["state"] == "end" and not end["ended_at_chance"] and end["steps_at_chance"] < 5
    table = _runs_table(tmp_path, capsys)
    assert "warning" not in table and "!" not in table


def test_a_loss_without_chance_values_is_not_watched_and_says_so_once(tmp_path, plugins, capsys, monkeypatch):
    monkeypatch.setattr(FakeLoss, "chance_levels", lambda self, clips: {})
    result = _run(tmp_path, plugins, model={"ignore_input": True}, **QUICK)
    out = capsys.readouterr().out
    assert out.count("declares no chance value") == 1 and "'fake-nce'" in out
    assert "warning" not in out and "AT CHANCE" not in out and not _events(result.run_dir, "chance")
    assert "warning" not in _runs_table(tmp_path, capsys)


def test_the_watch_can_be_switched_off(tmp_path, plugins, capsys):
    result = _run(tmp_path, plugins, model={"ignore_input": True}, logging={"chance_tolerance": 0.0}, **QUICK)
    assert "chance" not in capsys.readouterr().out and not _events(result.run_dir, "chance")
