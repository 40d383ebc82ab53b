"""``norton study --jobs N``: independent stages in N processes, a shared first stage trained once before its arms,
and the same report as one process."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from norton_core.cli import main
from norton_core.study.parallel import _init_worker, _Prefixed, placement
from norton_core.study.runner import Stage
from tests.study.tiny import how2_recipe, study_file


def _stage(threads: int = 0, device: str = "cpu") -> Stage:
    return Stage(label="base", seed=0, name="a", recipe=Path("r.toml"), overrides=(), where=Path("w"),
                 diagnostics=False, seeded=("run.seed",), threads=threads, device=device)


def test_each_worker_gets_its_share_of_the_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    import norton_core.study.parallel as parallel

    monkeypatch.setattr(parallel, "cpu_count", lambda: 16)
    monkeypatch.setattr(parallel, "gpu_ids", lambda: [])
    said: list[str] = []
    assert placement([_stage()], 4, said.append) == (4, 4, None) and said == []
    assert placement([_stage(threads=8)], 4, said.append) == (4, 4, None)  # the recipe's 8 are kept, and said
    assert said == ["norton study: --jobs 4: the recipes set run.threads = 8, so 4 stages at a time use 32 threads "
                    "on 16 CPUs; --set run.threads=4 gives each its share"]


def test_one_stage_per_gpu_when_several_are_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    import norton_core.study.parallel as parallel

    monkeypatch.setattr(parallel, "cpu_count", lambda: 16)
    monkeypatch.setattr(parallel, "gpu_ids", lambda: ["3", "5"])
    said: list[str] = []
    assert placement([_stage(device="auto")], 4, said.append) == (2, 8, ["3", "5"])
    assert said == ["norton study: --jobs 4: 2 stages at a time, one per GPU (3, 5); 2 GPUs visible, so not 4"]
    assert placement([_stage(device="cpu")], 4, said.append) == (4, 4, None)  # CPU stages ignore the GPUs


def test_worker_lines_carry_their_stage() -> None:
    import io

    sink = io.StringIO()
    out = _Prefixed(sink, "[base seed 0 a] ")
    out.write("norton: step 1\nnorton: st")
    out.write("ep 2\n")
    assert sink.getvalue() == "[base seed 0 a] norton: step 1\n[base seed 0 a] norton: step 2\n"


@pytest.mark.slow
def test_two_jobs_give_the_report_of_one(how2_data: tuple[Path, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    how2_recipe(tmp_path / "first.toml", *how2_data)
    base = how2_recipe(tmp_path / "base.toml", *how2_data, first_stage="first.toml")
    one = study_file(tmp_path / "one.toml", base, tmp_path / "one", seeds="[0]")
    two = study_file(tmp_path / "two.toml", base, tmp_path / "two", seeds="[0]")
    assert main(["study", str(one), "--jobs", "1"]) == 0
    capsys.readouterr()
    assert main(["study", str(two), "--jobs", "2"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("norton study: ")]
    # the first stage is trained once, and both arms (independent of each other) start only after it
    finished = lines.index("norton study: base seed 0: first stage: finished")
    assert lines.index("norton study: [2/3] base seed 0: arm norton") > finished
    assert lines.index("norton study: [3/3] base seed 0: arm nce") > finished
    starts = [json.loads(line) for line in (tmp_path / "two/cells/base/seed0/pretrain/metrics.jsonl").open()]
    assert sum(1 for e in starts if e.get("event") == "start") == 1
    assert (tmp_path / "one" / "report.md").read_text() == (tmp_path / "two" / "report.md").read_text()
    for arm in ("norton", "nce"):
        a, b = (json.loads((tmp_path / d / "cells/base/seed0" / f"{arm}.json").read_text()) for d in ("one", "two"))
        assert a["evaluation"] == b["evaluation"] and a["weights_sha256"] == b["weights_sha256"]
    # the records do not depend on how many processes made them: one process reuses what two made
    assert main(["study", str(two), "--jobs", "1"]) == 0
    assert capsys.readouterr().out.count("done, skipped") == 3


def _probe() -> tuple[int, str, int]:
    import time

    import torch

    time.sleep(0.5)  # long enough for the second worker to take the second probe
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES", ""), torch.get_num_threads()


@pytest.mark.slow
def test_a_worker_keeps_its_gpu_and_threads() -> None:
    """Workers start as ``run_parallel`` starts them: each takes one GPU id for good, and its share of threads."""
    ctx = mp.get_context("spawn")
    gpus = ctx.Queue()
    for gpu in ("3", "5"):
        gpus.put(gpu)
    with ProcessPoolExecutor(max_workers=2, mp_context=ctx, initializer=_init_worker, initargs=(1, gpus)) as pool:
        seen = [f.result() for f in [pool.submit(_probe) for _ in range(4)]]
    by_pid = {pid: gpu for pid, gpu, _ in seen}
    assert all(by_pid[pid] == gpu for pid, gpu, _ in seen)  # a worker never changes GPU
    assert len(set(by_pid.values())) == len(by_pid) and set(by_pid.values()) <= {"3", "5"}
    assert {threads for _, _, threads in seen} == {1}
