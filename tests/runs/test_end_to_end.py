"""A two-stage smoke run as a user on a cluster starts it (output to a file, no terminal), twice; then its
TensorBoard events, `norton runs`, `norton export` and `norton evaluate` on the export."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SMOKE = Path(__file__).resolve().parents[2] / "recipes" / "smoke_cpu.toml"
pytestmark = pytest.mark.slow


def norton(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NORTON_LOAD_PLUGINS": "norton", "HF_HUB_OFFLINE": "1"}
    # stdout and stderr go to a pipe: what SLURM or nohup give a run (no terminal, so no progress bar)
    return subprocess.run([sys.executable, "-m", "norton_core.cli", *args], cwd=cwd, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)


@pytest.fixture(scope="module")
def two_stage(tmp_path_factory):
    root = tmp_path_factory.mktemp("two_stage")
    (root / "stage1.toml").write_text(f'extends = "{SMOKE}"\n[run]\nname = "smoke_stage1"\n'
                                      '[evaluation]\nbefore = true\n')
    sinks = '["jsonl", "tensorboard"]' if _has("tensorboard") else '["jsonl"]'
    (root / "stage2.toml").write_text(f'extends = "{SMOKE}"\n[run]\nname = "smoke_two_stage"\n'
                                      f'pretrain_recipe = "stage1.toml"\n[logging]\nsinks = {sinks}\n')
    where = ["--set", f'run.output_dir="{root / "runs"}"', "--set", f'run.cache_dir="{root / "cache"}"']
    first = norton("run", str(root / "stage2.toml"), *where, cwd=root)
    second = norton("run", str(root / "stage2.toml"), *where, cwd=root)
    return root, first, second


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_a_run_without_terminal_prints_step_lines_with_losses_lr_and_eta(two_stage):
    root, first, _ = two_stage
    assert first.returncode == 0, first.stdout
    out = first.stdout
    assert "norton: starting run smoke_stage1" in out and "no valid checkpoint" not in out
    assert "2 steps (1 epoch x 6 steps, stopping at train.max_steps = 2)" in out
    lines = [line for line in out.splitlines() if line.startswith("norton: step ")]
    assert len(lines) == 4  # log_every = 1: two steps in each stage
    pattern = (r"norton: step (\d)/2 \| epoch 1/1 \| loss [\d.]+ clip_loss [\d.]+ .*video_loss [\d.]+ \| "
               r"lr [\d.]+e-\d\d \| [\d.]+ clips/s \| elapsed \d:\d\d:\d\d \| ETA \d:\d\d:\d\d")
    assert [re.fullmatch(pattern, line).group(1) for line in lines] == ["1", "2", "1", "2"]


def test_the_same_command_twice_reports_both_stages_complete(two_stage):
    root, first, second = two_stage
    assert second.returncode == 0, second.stdout
    assert second.stdout.count("holds a complete run") == 2
    assert "already holds a run" not in second.stdout and "norton: step " not in second.stdout
    table = second.stdout[second.stdout.rindex("metric"):].splitlines()[0]
    assert table == first.stdout[first.stdout.rindex("metric"):].splitlines()[0]  # the final table, again
    assert "R@1" in second.stdout[second.stdout.rindex("metric"):]


def test_tensorboard_holds_steps_evaluations_and_retrieval_rounds(two_stage):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root, first, _ = two_stage
    assert f"norton: logging to tensorboard: {root / 'runs' / 'smoke_two_stage' / 'tensorboard'}" in first.stdout
    assert not (root / "runs" / "smoke_stage1" / "tensorboard").exists()  # not chosen there: nothing written
    events = EventAccumulator(str(root / "runs" / "smoke_two_stage" / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    assert {"train/lr", "train/clip_loss", "retrieval/seconds", "retrieval/recall", "retrieval/filled",
            "evaluation/after/youcook2_clip/R@1"} <= set(tags)
    after = json.loads((root / "runs" / "smoke_two_stage" / "eval.json").read_text())["after"]
    assert events.Scalars("evaluation/after/youcook2_clip/R@1")[0].value == pytest.approx(after["youcook2_clip/R@1"])


def test_runs_lists_both_stages_complete(two_stage):
    root, *_ = two_stage
    out = norton("runs", str(root / "runs"), cwd=root).stdout.splitlines()
    states = {line.split()[0]: line.split()[1:3] for line in out[2:]}
    assert states == {"smoke_stage1": ["complete", "2/2"], "smoke_two_stage": ["complete", "2/2"]}


def test_export_is_self_contained_and_evaluates_like_the_run(two_stage, tmp_path):
    root, *_ = two_stage
    run_dir = root / "runs" / "smoke_two_stage"
    out = tmp_path / "export"
    done = norton("export", str(run_dir), str(out), cwd=root)
    assert done.returncode == 0, done.stdout
    assert {p.name for p in out.iterdir()} >= {"model.safetensors", "model.json", "README.md", "text_encoder"}
    assert (out / "text_encoder" / "tokenizer.json").is_file() and (out / "text_encoder" / "config.json").is_file()
    card = (out / "README.md").read_text()
    assert "youcook2_clip" in card and 'name = "smoke_two_stage"' in card
    evaluated = norton("evaluate", str(out), "--json", cwd=tmp_path)  # no recipe, from another directory
    assert evaluated.returncode == 0, evaluated.stdout
    results = json.loads(evaluated.stdout.strip().splitlines()[-1])
    after = json.loads((run_dir / "eval.json").read_text())["after"]
    assert results["youcook2_clip/R@1"] == pytest.approx(after["youcook2_clip/R@1"])
    assert results["youcook2_clip/R@10"] == pytest.approx(after["youcook2_clip/R@10"])


def test_export_api_embeds_videos_and_texts_into_one_space(two_stage, tmp_path):
    import numpy as np

    from norton_core import NortonError
    from norton_core.runs.export import load

    root, *_ = two_stage
    out = tmp_path / "export"
    assert norton("export", str(root / "runs" / "smoke_two_stage"), str(out), cwd=root).returncode == 0
    model = load(out)
    rng = np.random.default_rng(0)
    videos = model.embed_videos([rng.normal(size=(40, 512)).astype(np.float32), rng.normal(size=(7, 512))])
    texts = model.embed_texts(["crack the eggs", "whisk the eggs", "crack the eggs"])
    assert videos.shape[0] == 2 and texts.shape == (3, videos.shape[1]) and np.isfinite(videos).all()
    assert np.allclose(texts[0], texts[2]) and not np.allclose(texts[0], texts[1])
    scores = texts @ videos.T
    assert scores.shape == (3, 2)
    with pytest.raises(NortonError, match=r"video 0: expected \(seconds, 512\)"):
        model.embed_videos([np.zeros((5, 3))])
