from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tests.extract.fakes as fakes
from norton_core.cli import main
from tests.extract.videos import make_video

RECIPES = Path(__file__).parents[2] / "recipes"


def _srt(captions: list[tuple[float, float, str]]) -> str:
    def stamp(t: float) -> str:
        return f"00:00:{int(t):02d},{int(round(t % 1 * 1000)):03d}"

    return "\n".join(f"{i}\n{stamp(a)} --> {stamp(b)}\n{text}\n" for i, (a, b, text) in enumerate(captions, 1))


@pytest.mark.slow
def test_videos_and_subtitles_to_a_training_run(tmp_path, norton_plugins, capsys):
    """Videos + subtitles -> norton extract -> norton captions -> norton prepare how2 -> norton-run, two steps."""
    videos, raw = tmp_path / "videos", tmp_path / "raw"
    videos.mkdir()
    words = ["whisk the eggs", "heat the pan", "pour the batter", "flip it over", "serve warm", "add some salt"]
    for v in range(8):
        make_video(videos / f"vid{v}.mp4", 48, 32, 10, 120, seed=v)  # 12 s each
        captions = [(2.0 * k, 2.0 * k + 1.5, f"{words[(k + v) % len(words)]} now") for k in range(6)]
        (videos / f"vid{v}.en.srt").write_text(_srt(captions))
    norton_plugins.register(fakes, name="tiny")
    assert main(["extract", str(videos), "--out", str(raw / "features"), "--extractor", "tiny-stats",
                 "--option", "width=512", "--workers", "0", "--no-progress"]) == 0
    assert main(["captions", str(videos), "--out", str(raw / "captions.json")]) == 0
    ids = sorted(p.stem for p in (raw / "features").glob("*.npy"))
    assert ids == [f"vid{v}" for v in range(8)]
    assert np.load(raw / "features" / "vid0.npy").shape == (12, 512)
    (raw / "train.lst").write_text("\n".join(ids) + "\n")
    assert json.loads((raw / "captions.json").read_text())["vid1"]["text"][0] == "heat the pan now"
    assert main(["prepare", "how2", str(raw), "--out", str(tmp_path / "prepared"), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["run", str(RECIPES / "smoke_cpu.toml"), "--set", 'data.name="how2"', "--set",
                 f'data.train="{tmp_path / "prepared" / "train"}"', "--set", f'run.output_dir="{tmp_path / "runs"}"',
                 "--set", f'run.cache_dir="{tmp_path / "cache"}"', "--set", "retrieval.start_epoch=2",
                 "--set", "evaluation.tasks=[]", "--set", "evaluation.after=false",
                 "--set", "run.threads=1"]) == 0, capsys.readouterr().err
    metrics = [json.loads(line) for line in (tmp_path / "runs" / "smoke_cpu" / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if "event" not in m]
    assert [m["step"] for m in steps] == [1, 2] and all(np.isfinite(m["loss"]) for m in steps)
