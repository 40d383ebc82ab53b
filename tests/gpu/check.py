"""The parts of tests/gpu/check.sh, each printing its figures or why it was skipped (see the GPU section of docs/scale.md).

1. the demo recipe on CUDA in bf16, and in fp16 with loss scaling (finite logged losses, wall time);
2. a 2-process NCCL run of the smoke recipe (only with 2 or more GPUs);
3. the ``norton`` loss at B = 1024 on the GPU: forward + backward time, ``torch.cuda.max_memory_allocated``, and
   the largest difference from the CPU result in float64 (must be below 1e-4);
4. a training step at the paper's 64 videos x 16 clips with bert-base (skipped when bert-base-uncased's weights
   are not on this machine): clips/s and the projected time per epoch on HowTo100M's 1.1M videos.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

HOW2_VIDEOS = 1_100_000
PAPER = "paper: about 6 h for the whole post-training on 2 A100s"


def run_recipe(recipe: str, out: Path, *sets: str, nproc: int = 1) -> tuple[float, list[dict]]:
    cmd = ["norton-run", recipe, "--overwrite", "--set", f'run.output_dir="{out}"', "--set", 'run.device="cuda"',
           *[x for s in sets for x in ("--set", s)]]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "norton_core.cli", "run", *cmd[1:]]
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"FAILED: {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    lines = [json.loads(x) for p in out.glob("*/metrics.jsonl") for x in p.read_text().splitlines()]
    steps = [x for x in lines if "event" not in x]
    bad = [x for x in steps if not all(v == v and abs(v) != float("inf") for k, v in x.items() if k.endswith("loss"))]
    if not steps or bad:
        raise SystemExit(f"FAILED: {recipe} {sets}: {len(steps)} logged steps, non-finite losses in {bad[:2]}")
    return seconds, steps


def demo(quick: bool) -> None:
    recipe = "recipes/smoke_cpu.toml" if quick else "recipes/how2_demo.toml"
    for precision in ("bf16", "fp16"):
        with tempfile.TemporaryDirectory() as tmp:
            seconds, steps = run_recipe(recipe, Path(tmp), f'train.precision="{precision}"', 'run.pretrain_recipe=""')
            print(f"demo {recipe} on CUDA, {precision}: {seconds:.0f} s, {len(steps)} steps, last loss "
                  f"{steps[-1]['loss']:.4f}", flush=True)


def nccl() -> None:
    import torch

    if torch.cuda.device_count() < 2:
        print(f"2-process NCCL run: skipped: {torch.cuda.device_count()} GPU(s)", flush=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        seconds, steps = run_recipe("recipes/smoke_cpu.toml", Path(tmp), 'train.precision="bf16"', nproc=2)
        print(f"2-process NCCL run (smoke recipe): {seconds:.0f} s, {len(steps)} steps, last loss "
              f"{steps[-1]['loss']:.4f}", flush=True)


def loss_on_gpu() -> None:
    import torch
    from loss_bench import LEAVES, make_inputs

    import norton_core

    inputs = make_inputs(1024)
    loss = norton_core.build("loss", "norton", {})

    def forward_backward(device: str, dtype: torch.dtype) -> tuple[float, dict]:
        leaves = {k: (v.to(device, dtype if v.is_floating_point() else v.dtype).requires_grad_(k in LEAVES)
                      if hasattr(v, "to") else v) for k, v in inputs.items()}
        terms = loss.to(device)(leaves, {})
        terms["loss"].backward()
        return float(terms["loss"]), {k: leaves[k].grad.double().cpu() for k in LEAVES}

    reference, ref_grads = forward_backward("cpu", torch.float64)
    forward_backward("cuda", torch.float32)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        value, grads = forward_backward("cuda", torch.float32)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    diff = max(abs(value - reference), *((grads[k] - ref_grads[k]).abs().max().item() for k in LEAVES))
    verdict = "ok" if diff < 1e-4 else "FAILED (> 1e-4)"
    print(f"loss B=1024 on GPU: forward+backward median {sorted(times)[2] * 1e3:.1f} ms, max_memory_allocated "
          f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB; vs CPU float64: max |diff| {diff:.1e} {verdict}",
          flush=True)
    if diff >= 1e-4:
        raise SystemExit(1)


def train_step(steps: int) -> None:
    import torch

    import norton_core

    try:
        from transformers import AutoConfig

        AutoConfig.from_pretrained("bert-base-uncased", local_files_only=True)
        from huggingface_hub import try_to_load_from_cache

        if not any(isinstance(try_to_load_from_cache("bert-base-uncased", f), str)
                   for f in ("model.safetensors", "pytorch_model.bin")):
            raise OSError("no weights file")
    except Exception as exc:  # noqa: BLE001 - any failure to find local weights means: skip
        print(f"train step 64 x 16 with bert-base: skipped: bert-base-uncased weights are not on this machine ({exc})",
              flush=True)
        return
    device = "cuda"
    torch.manual_seed(0)
    model = norton_core.build("model", "mmfusion-separate", {"text_encoder": "bert-base-uncased"}).to(device)
    loss = norton_core.build("loss", "norton", {}).to(device)
    params = list(model.trainable_parameters())
    optimizer = torch.optim.Adam(params, lr=1e-5, betas=(0.9, 0.98))
    clips, lt, lv = 64 * 16, 32, 16
    caps = torch.randint(1000, 30000, (clips, lt), device=device)
    cmasks = torch.ones(clips, lt, dtype=torch.bool, device=device)
    vfeats = torch.randn(clips, lv, 512, device=device)
    vmasks = torch.ones(clips, lv, dtype=torch.bool, device=device)
    for precision, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
        times = []
        for i in range(steps + 2):
            torch.cuda.synchronize()
            start = time.perf_counter()
            with torch.autocast("cuda", dtype=dtype):
                terms = loss(model(caps, cmasks, vfeats, vmasks), {})
            (scaler.scale(terms["loss"]) if scaler else terms["loss"]).backward()
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
            if i >= 2:
                times.append(time.perf_counter() - start)
        step = sorted(times)[len(times) // 2]
        rate = clips / step
        epoch_h = HOW2_VIDEOS * 16 / rate / 3600
        print(f"train step 64 x 16, bert-base, {precision}, {len(params)} trainable tensors: {step:.3f} s/step, "
              f"{rate:.0f} clips/s; one epoch of {HOW2_VIDEOS:,} videos x 16 clips: {epoch_h:.1f} h on one GPU "
              f"({epoch_h / 2:.1f} h on 2, without the retrieval round; {PAPER})", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the smoke recipe instead of the demo")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per precision")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print(f"skipped: no CUDA (torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'})", flush=True)
        return 0
    print(f"GPU check on {torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}, torch {torch.__version__}",
          flush=True)
    demo(args.quick)
    nccl()
    loss_on_gpu()
    train_step(args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
