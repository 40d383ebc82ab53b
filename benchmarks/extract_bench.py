"""Feature extraction speed: decoding alone, and decoding + S3D-G (random weights), in seconds of video per
second, with the projected time for HowTo100M (~1.1M videos, ~134k hours).

    python benchmarks/extract_bench.py [--videos 2] [--seconds 8] [--width 640 --height 360] [--threads 2]
                                       [--device cuda] [--batch-size 32] [--workers 0]

Videos are generated here (H.264 at 30 fps, a moving pattern with noise). "decode" runs the extraction decoder
(PyAV, fps=30, scale, crop 224) over every video; "extract" runs ``norton extract``'s pipeline with
``s3d-howto100m`` on the same videos and reports which share of its time the model's forward passes took. A
2048^3 GEMM rate measured in the same process says how fast the machine is right now (shared machines vary).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

HOWTO100M_HOURS = 134_000
HOWTO100M_VIDEOS = 1_100_000


def gemm_rate() -> float:
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    began = time.perf_counter()
    for _ in range(3):
        a @ b
    return 3 * 2 * 2048**3 / (time.perf_counter() - began) / 1e9


def make_videos(root: Path, count: int, seconds: float, width: int, height: int) -> list[Path]:
    import av
    import numpy as np

    paths = []
    rng = np.random.default_rng(0)
    for v in range(count):
        path = root / f"bench{v}.mp4"
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=30)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            base = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            for i in range(int(seconds * 30)):
                img = np.roll(base, 4 * i, axis=1)
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        paths.append(path)
    return paths


def projection(video_seconds_per_second: float) -> str:
    days = HOWTO100M_HOURS * 3600 / video_seconds_per_second / 86400
    return f"HowTo100M ({HOWTO100M_HOURS:,} h) would take {days:,.0f} days on one such device"


def bench_decode(paths: list[Path]) -> float:
    from norton_core.extract.decode import iter_chunks
    from norton_core.plugin.interfaces import DecodeSpec

    began = time.perf_counter()
    rows = sum(len(piece) for path in paths for piece in iter_chunks(path, DecodeSpec()))
    spent = time.perf_counter() - began
    rate = rows / spent
    print(f"decode alone:      {rows} s of video in {spent:6.2f} s = {rate:7.1f} s of video/s, "
          f"{len(paths) / spent:.2f} videos/s; {projection(rate)}")
    return rate


def bench_extract(paths: list[Path], device: str, batch_size: int, workers: int, tmp: Path) -> None:
    import torch
    from norton_extractors.s3dg import S3DG

    from norton_core import build
    from norton_core.extract.runner import run_extract, settings_record

    weights = tmp / "random_s3d.pth"
    torch.save(S3DG().state_dict(), weights)
    extractor = build("feature_extractor", "s3d-howto100m", {}, weights=weights, device=device)
    model_time = [0.0]
    embed = extractor.embed

    def timed(chunks: torch.Tensor) -> torch.Tensor:
        began = time.perf_counter()
        rows = embed(chunks)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        model_time[0] += time.perf_counter() - began
        return rows

    extractor.embed = timed  # type: ignore[method-assign]
    settings = settings_record("s3d-howto100m", extractor, extractor.config, weights)
    began = time.perf_counter()
    report = run_extract(paths, tmp / "features", extractor, name="s3d-howto100m", settings=settings,
                         batch_size=batch_size, workers=workers, progress=False)
    spent = time.perf_counter() - began
    rate = report.rows / spent
    print(f"decode + S3D-G ({device}, batch {batch_size}, workers {workers}): {report.rows} s of video in {spent:6.2f} s "
          f"= {rate:6.2f} s of video/s, {report.extracted / spent:.3f} videos/s; model forward "
          f"{100 * model_time[0] / spent:.0f}% of the time; {projection(rate)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--skip-model", action="store_true", help="decoding only")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    print(f"torch threads {args.threads}; load average {os.getloadavg()[0]:.1f}; "
          f"GEMM {gemm_rate():.1f} GFLOP/s now")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = make_videos(root, args.videos, args.seconds, args.width, args.height)
        print(f"{args.videos} videos of {args.seconds:g} s, {args.width}x{args.height} H.264 at 30 fps")
        bench_decode(paths)
        if not args.skip_model:
            bench_extract(paths, args.device, args.batch_size, args.workers, root)


if __name__ == "__main__":
    main()
