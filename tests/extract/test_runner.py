from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tests.extract.fakes as fakes
from norton_core.cli import main
from norton_core.errors import DataError
from norton_core.extract.decode import iter_chunks
from norton_core.extract.runner import Progress, collect_videos, parse_shard, run_extract, settings_record
from tests.extract.fakes import TINY, TinyConfig, TinyStats
from tests.extract.videos import make_audio_only, make_video

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three good videos (2.0 s, 3.5 s, 1.25 s) of different codecs, sizes and rates, and four dirty files."""
    root = tmp_path_factory.mktemp("videos")
    make_video(root / "v1.mp4", 64, 48, 25, 50)
    make_video(root / "v2.webm", 41, 73, 24, 84, codec="libvpx-vp9", seed=1)
    make_video(root / "v3.avi", 96, 54, 20, 25, codec="mpeg4", seed=2)
    (root / "empty.mp4").write_bytes(b"")
    (root / "garbage.mkv").write_bytes(bytes(range(256)) * 16)
    make_audio_only(root / "audio.mp4")
    make_video(root / "short.mp4", 32, 32, 25, 5)  # 0.2 s: 1 frame at 4 fps, fewer than the 4 of one row
    return root


def tiny(delay: float = 0.0) -> TinyStats:
    return TinyStats(TinyConfig(delay=delay))


def extract(videos, out: Path, **kwargs):
    extractor = tiny()
    settings = settings_record("tiny-stats", extractor, extractor.config, None)
    return run_extract(videos, out, extractor, name="tiny-stats", settings=settings, progress=False, **kwargs)


def expected_rows(path: Path) -> np.ndarray:
    """The rows worked out directly from the decoded chunks: per-frame mean and max of pixels / 255 - 0.5."""
    chunks = np.concatenate(list(iter_chunks(path, TINY))).astype(np.float64) / 255.0 - 0.5
    flat = chunks.reshape(len(chunks), 4, -1)
    return np.concatenate([flat.mean(axis=2), flat.max(axis=2)], axis=1).astype(np.float16)


def test_one_row_per_second_for_good_videos_and_named_reasons_for_dirty_ones(folder, tmp_path):
    out = tmp_path / "features"
    report = extract(collect_videos([folder]), out, batch_size=3)
    rows = {p.stem: np.load(p) for p in out.glob("*.npy")}
    assert sorted(rows) == ["v1", "v2", "v3"]
    # 2.0 s -> 8 frames at 4 fps -> 2 rows; 3.5 s -> 14 frames -> 4 rows (2 zero frames); 1.25 s -> 5 frames -> 2
    assert {k: v.shape for k, v in rows.items()} == {"v1": (2, 8), "v2": (4, 8), "v3": (2, 8)}
    for stem, path in (("v1", folder / "v1.mp4"), ("v2", folder / "v2.webm"), ("v3", folder / "v3.avi")):
        assert rows[stem].dtype == np.float16
        np.testing.assert_allclose(rows[stem].astype(np.float32), expected_rows(path).astype(np.float32), atol=1e-3)
    assert rows["v2"][3, 2] == np.float16(-0.5) and rows["v2"][3, 1] != np.float16(-0.5)  # padded frames are zeros
    saved = json.loads((out / "extract_report.json").read_text())
    assert saved["skipped_counts"] == {"missing file": 0, "empty file": 1, "unreadable": 1, "no video stream": 1,
                                       "decode error": 0, "too short": 1, "non-finite rows": 0}
    assert (saved["videos"], saved["extracted"], saved["skipped_total"], saved["rows"]) == (7, 3, 4, 8)
    assert saved["video_seconds"] == 8.0
    assert [item["video"] for item in saved["skipped"]["too short"]] == [str(folder / "short.mp4")]
    assert "1 frames at 4 fps" in saved["skipped"]["too short"][0]["detail"]
    assert report.extracted == 3


def test_rerun_skips_finished_videos_and_refuses_other_settings(folder, tmp_path):
    out = tmp_path / "features"
    videos = collect_videos([folder / "v1.mp4", folder / "v3.avi"])
    extract(videos, out)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.glob("*.npy")}
    (out / ".v3.npy.tmp-4242").write_bytes(b"half written")  # a killed run's staging file: removed
    (out / ".v7.npy.tmp-4243").write_bytes(b"another shard's")  # not this run's video: left alone
    report = extract(videos, out)
    assert (report.already_done, report.extracted) == (2, 0)
    assert sorted(p.name for p in out.glob(".*")) == [".v7.npy.tmp-4243"]
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.glob("*.npy")} == before
    other = TinyStats(TinyConfig(delay=0.5))
    settings = settings_record("tiny-stats", other, other.config, None)
    with pytest.raises(DataError, match="features made with other settings \\(options differ"):
        run_extract(videos, out, other, name="tiny-stats", settings=settings, progress=False)


def test_batches_mixing_videos_give_the_bytes_of_one_video_alone(folder, tmp_path):
    videos = collect_videos([folder])
    extract(videos, tmp_path / "mixed", batch_size=5)
    for video in videos:
        extract([video], tmp_path / video.stem, batch_size=1)
    assert len(list((tmp_path / "mixed").glob("*.npy"))) == 3
    for path in (tmp_path / "mixed").glob("*.npy"):
        assert path.read_bytes() == (tmp_path / path.stem / path.name).read_bytes()


def test_decoding_workers_give_the_same_bytes(folder, tmp_path):
    videos = collect_videos([folder])
    extract(videos, tmp_path / "inline", batch_size=4)
    report = extract(videos, tmp_path / "workers", batch_size=4, workers=2)
    assert report.as_json()["skipped_total"] == 4
    names = sorted(p.name for p in (tmp_path / "inline").glob("*.npy"))
    assert names == sorted(p.name for p in (tmp_path / "workers").glob("*.npy")) and len(names) == 3
    for name in names:
        assert (tmp_path / "inline" / name).read_bytes() == (tmp_path / "workers" / name).read_bytes()


def test_a_crashed_decoding_process_skips_its_video_and_is_replaced(folder, tmp_path, monkeypatch):
    # the decoding process is killed when it starts its second video; a new process decodes the third
    monkeypatch.setenv("NORTON_FAULT", "extract_decode:2")
    videos = collect_videos([folder / "v1.mp4", folder / "v2.webm", folder / "v3.avi"])
    report = extract(videos, tmp_path / "out", workers=1)
    assert sorted(p.stem for p in (tmp_path / "out").glob("*.npy")) == ["v1", "v3"]
    (item,) = report.skipped["decode error"]
    assert item["video"] == str(folder / "v2.webm") and f"exit code -{signal.SIGKILL.value}" in item["detail"]


def test_rows_past_float16_are_skipped_not_saved_as_inf(folder, tmp_path):
    extractor = TinyStats(TinyConfig(scale=1e6))  # max pixel 0.5 * 1e6 > 65504, the largest float16
    settings = settings_record("tiny-stats", extractor, extractor.config, None)
    report = run_extract([folder / "v1.mp4"], tmp_path, extractor, name="tiny-stats", settings=settings,
                         progress=False)
    assert not list(tmp_path.glob("*.npy"))
    (item,) = report.skipped["non-finite rows"]
    assert item["detail"].endswith("rows [0, 1] are not finite as float16")


def test_shards_split_the_sorted_list(folder, tmp_path):
    videos = collect_videos([folder])
    first = extract(videos, tmp_path / "out", shard=(0, 2))
    second = extract(videos, tmp_path / "out", shard=(1, 2))
    assert (first.videos, second.videos) == (4, 3)
    assert (tmp_path / "out" / "extract_report.shard-0-of-2.json").is_file()
    assert sorted(p.stem for p in (tmp_path / "out").glob("*.npy")) == ["v1", "v2", "v3"]
    assert parse_shard(None, {"RANK": "3", "WORLD_SIZE": "8"}) == (3, 8)
    assert parse_shard("1/4", {}) == (1, 4)
    for bad in ("4/4", "1", "a/b", "-1/2"):
        with pytest.raises(DataError, match="--shard"):
            parse_shard(bad, {})


def test_inputs_folders_lists_and_duplicate_ids(folder, tmp_path):
    listing = tmp_path / "videos.txt"
    listing.write_text(f"# my videos\n{folder / 'v1.mp4'}\n\nrelative/v9.mp4\n")
    videos = collect_videos([listing, folder / "v3.avi"])
    assert videos == [folder / "v1.mp4", folder / "v3.avi", tmp_path / "relative" / "v9.mp4"]
    (tmp_path / "other").mkdir()
    make_video(tmp_path / "other" / "v1.mkv", 32, 32, 25, 25)
    with pytest.raises(DataError, match="two videos have the id 'v1'"):
        collect_videos([folder, tmp_path / "other"])


def _norton(plugins, args: list[str]) -> int:
    """``norton extract ARGS`` in this process, with the tiny extractor registered."""
    plugins.register(fakes, name="tiny")
    return main(["extract", *args])


def _cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tests.extract.fakes", "extract", *args], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=120)


@pytest.mark.slow
def test_kill_during_extraction_then_rerun_gives_the_same_bytes(folder, tmp_path, norton_plugins):
    videos = [str(folder / name) for name in ("v1.mp4", "v2.webm", "v3.avi", "empty.mp4")]
    common = ["--extractor", "tiny-stats", "--batch-size", "2", "--workers", "0", "--no-progress"]
    assert _norton(norton_plugins, [*videos, "--out", str(tmp_path / "whole"), *common]) == 0
    # killed (SIGKILL) after the third batch: v1 (2 rows) is written, v2 (4 rows) is half embedded
    killed = _cli([*videos, "--out", str(tmp_path / "killed"), *common], env={"NORTON_FAULT": "extract_batch:3"})
    assert killed.returncode == -signal.SIGKILL
    assert sorted(p.name for p in (tmp_path / "killed").glob("*.npy")) == ["v1.npy"]
    rerun = _cli([*videos, "--out", str(tmp_path / "killed"), *common])
    assert rerun.returncode == 0, rerun.stderr
    assert "2 extracted, 1 already done, 1 skipped of 4 videos" in rerun.stderr
    whole = sorted(p.name for p in (tmp_path / "whole").iterdir() if p.suffix == ".npy")
    assert whole == sorted(p.name for p in (tmp_path / "killed").iterdir() if p.name != "extract_report.json"
                           and p.name != "extraction.json")
    for name in whole:
        assert (tmp_path / "whole" / name).read_bytes() == (tmp_path / "killed" / name).read_bytes()


def test_cli_errors_are_one_line(folder, tmp_path, norton_plugins, capsys):
    assert _norton(norton_plugins, [str(folder / "v1.mp4"), "--out", str(tmp_path), "--extractor", "tiny-stat"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "norton: error: unknown feature_extractor 'tiny-stat' (did you mean 'tiny-stats'?); known: "
        "clip-frames [norton], s3d-howto100m [norton], tiny-stats [?]"]
    assert main(["extract", str(folder / "v1.mp4"), "--out", str(tmp_path), "--extractor", "tiny-stats",
                 "--shard", "2/2"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "norton: error: --shard '2/2': expected I/N with 0 <= I < N, e.g. 0/4"]
    (tmp_path / "no-videos").mkdir()
    assert main(["extract", str(tmp_path / "no-videos"), "--out", str(tmp_path)]) == 2
    assert "no videos found in" in capsys.readouterr().err
    assert main(["extract", str(folder / "v1.mp4"), "--out", str(tmp_path)]) == 2  # s3d-howto100m without weights
    assert "pass --weights s3d_howto100m.pth" in capsys.readouterr().err


def test_progress_lines_and_summary(folder, tmp_path, norton_plugins, capsys):
    assert _norton(norton_plugins, [str(folder / "v1.mp4"), str(folder / "empty.mp4"), "--out", str(tmp_path),
                                    "--extractor", "tiny-stats", "--workers", "0", "--progress-every", "0"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert any(line.startswith("extract: 2/2 videos,") and "s of video/s, ETA" in line for line in lines)
    assert any(line.startswith("extract: 1 extracted, 0 already done, 1 skipped of 2 videos (2 rows") for line in lines)
    assert any(line.startswith("extract: skipped 1 (empty file), e.g.") for line in lines)


def test_progress_line_rates_and_eta():
    meter = Progress(total=10, every=60.0, enabled=False)
    meter.start, meter.done, meter.seconds = 0.0, 1, 30.0
    assert meter.line(10.0) == "extract: 1/10 videos, 0.10 videos/s, 3.0 s of video/s, ETA 0:01:30"
    meter.total = 100_000
    assert meter.line(10.0).endswith("ETA 277:46:30")  # 99,999 videos at 0.1/s: past a day, in hours
