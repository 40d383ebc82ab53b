"""Small video files made with PyAV for the extraction tests: a moving colour pattern with noise, so that scaling,
cropping and frame-rate conversion all change the pixels."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def pattern(width: int, height: int, index: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed * 100_003 + index)
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = (np.arange(width)[None, :] * 3 + index * 5) % 256
    img[..., 1] = (np.arange(height)[:, None] * 2 + index * 7) % 256
    img[..., 2] = rng.integers(0, 256, (height, width))
    return img


def make_video(path: Path, width: int = 320, height: int = 240, fps: int = 25, frames: int = 50,
               codec: str = "libx264", pix_fmt: str = "yuv420p", seed: int = 0, audio: bool = False) -> Path:
    """A ``frames``-frame video at ``fps`` (``frames / fps`` seconds)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if codec == "libvpx-vp9":  # its default (best quality) encoding takes seconds even for tiny videos
            stream.options = {"deadline": "realtime", "cpu-used": "8"}
        sound = container.add_stream("aac", rate=16000) if audio else None
        for i in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(pattern(width, height, i, seed), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if sound is not None:
            _write_tone(container, sound, frames / fps)
    return path


def make_audio_only(path: Path, seconds: float = 2.0) -> Path:
    with av.open(str(path), "w") as container:
        _write_tone(container, container.add_stream("aac", rate=16000), seconds)
    return path


def _write_tone(container: av.container.OutputContainer, stream: av.audio.stream.AudioStream, seconds: float) -> None:
    samples = int(16000 * seconds)
    tone = (0.1 * np.sin(np.arange(samples) * 2 * np.pi * 440 / 16000)).astype(np.float32)[None, :]
    for start in range(0, samples, 1024):
        frame = av.AudioFrame.from_ndarray(tone[:, start:start + 1024], format="fltp", layout="mono")
        frame.sample_rate = 16000
        frame.pts = start
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
