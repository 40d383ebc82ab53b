from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from norton_core.cli import main
from tests.extract.videos import make_video
from tests.plugins.extractor_weights import make_tiny_clip, random_state


@pytest.mark.slow
def test_norton_extract_with_s3d_howto100m_writes_unit_float16_rows(tmp_path, norton_plugins, capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two contending threads on a busy 2-core machine are many times slower than one
    try:
        weights = tmp_path / "s3d_howto100m.pth"
        torch.save({**random_state(), "text_module.fc1.weight": torch.zeros(2, 2)}, weights)
        (tmp_path / "videos").mkdir()
        make_video(tmp_path / "videos" / "clip.mp4", 200, 150, 30, 30, seed=3)  # exactly 1 s: one row
        code = main(["extract", str(tmp_path / "videos"), "--out", str(tmp_path / "features"), "--weights",
                     str(weights), "--workers", "0", "--batch-size", "1", "--device", "cpu"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0, capsys.readouterr().err
    rows = np.load(tmp_path / "features" / "clip.npy")
    assert rows.shape == (1, 512) and rows.dtype == np.float16
    assert abs(float(np.linalg.norm(rows.astype(np.float32))) - 1.0) < 1e-3
    settings = json.loads((tmp_path / "features" / "extraction.json").read_text())
    assert settings["extractor"] == "s3d-howto100m" and settings["weights"]["file"] == "s3d_howto100m.pth"
    assert settings["decode"] == {"fps": 30, "short_side": 224, "crop": 224, "frames_per_row": 30,
                                  "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}


def test_norton_extract_with_clip_frames(tmp_path, norton_plugins, capsys):
    (tmp_path / "clip").mkdir()
    model_dir = make_tiny_clip(tmp_path / "clip")
    video = make_video(tmp_path / "walk.mp4", 80, 60, 25, 60, seed=4)  # 2.4 s: 3 rows at 2 frames per row
    code = main(["extract", str(video), "--out", str(tmp_path / "features"), "--extractor", "clip-frames",
                 "--weights", str(model_dir), "--option", "frames_per_second=2", "--workers", "0", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    rows = np.load(tmp_path / "features" / "walk.npy")
    assert rows.shape == (3, 16) and rows.dtype == np.float16
    np.testing.assert_allclose(np.linalg.norm(rows.astype(np.float32), axis=1), 1.0, atol=1e-3)
    settings = json.loads((tmp_path / "features" / "extraction.json").read_text())
    assert settings["options"] == {"frames_per_second": 2} and len(settings["weights"]["sha256"]) == 64

