"""Tiny in-memory components for the engine tests: a store of ragged synthetic videos, an aligner, a linear dual
encoder and an InfoNCE loss that can be told to go non-finite. Registered as the plugin ``engine-fakes``."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from torch import nn

from norton_core import Aligner, DataPaths, DataSource, Loss, Model, Plugins, SpecialTokens, VideoRecord, hookimpl, option

DIM = 8


class FakeStore:
    """``ShardStore``'s reading API over arrays generated from a seed (two videos have no captions)."""

    def __init__(self, n: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.path = Path(f"<fake store {n}>")
        self.manifest: dict[str, Any] = {"tokenizer": "fake"}
        self.records = []
        centres = rng.normal(size=(4, DIM))
        for i in range(n):
            t = int(rng.integers(5, 30))
            feats = (centres[i % 4] + 0.3 * rng.normal(size=(t, DIM))).astype(np.float16)
            ncap = 0 if i in (3, 11) else int(rng.integers(2, 6))
            starts = np.sort(rng.uniform(0, t - 2, size=ncap)).astype(np.float32)
            ends = (starts + 2).astype(np.float32)
            tokens = [(10 + (i % 4) * 10 + rng.integers(0, 10, size=int(rng.integers(1, 5)))).astype(np.int32)
                      for _ in range(ncap)]
            self.records.append(VideoRecord(f"vid{i:03d}", feats, starts, ends, tokens))
        self.video_ids = [r.video_id for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def get(self, i: int) -> VideoRecord:
        return self.records[i]

    def describe(self, i: int) -> str:
        return f"fake video {self.video_ids[i]!r}"


class FakeData(DataSource):
    name = "fake-data"

    @attrs.frozen
    class Config:
        videos: int = option(24, ge=1)
        val_videos: int = option(0, ge=0, help="a validation store of this many other videos (data.val)")
        missing: bool = option(False, help="behave like a source whose data is not there")

    def __init__(self, config: Any, cache_dir: Path | None = None) -> None:
        self.config = config

    def prepare(self, progress: bool = True) -> DataPaths:
        from norton_core.errors import DataError

        if self.config.missing:
            raise DataError("fake-data: the training data is not prepared")
        val = Path(f"fake://val/{self.config.val_videos}") if self.config.val_videos else None
        return DataPaths(train=Path(f"fake://{self.config.videos}"), val=val)


def open_fake_store(path: Path, read_mode: str = "mmap", check_finite: bool = True,
                    check_chunks: bool = True) -> FakeStore:
    return FakeStore(int(str(path).split("//")[-1].split("/")[-1]), seed=1 if "/val/" in str(path) else 0)


class FakeAligner(Aligner):
    name = "fake-aligner"

    @attrs.frozen
    class Config:
        clips: int = option(4, ge=1)

    def __init__(self, config: Any, special_tokens: SpecialTokens | None = None) -> None:
        self.clips_per_video = config.clips
        self.special = special_tokens

    def __call__(self, record: VideoRecord, rng: Any) -> dict[str, np.ndarray]:
        c, lv, lc = self.clips_per_video, 4, 6
        out = {k: [] for k in ("caps", "cmasks", "vfeats", "vmasks", "video_start", "video_end", "text_start",
                               "text_end")}
        for _ in range(c):
            cap = rng.randrange(len(record.tokens))
            start = min(int(record.starts[cap]), len(record.features) - 1)
            end = min(start + lv, len(record.features))
            feats = np.zeros((lv, DIM), np.float16)
            feats[: end - start] = record.features[start:end]
            toks = np.zeros(lc, np.int64)
            tk = record.tokens[cap][: lc]
            toks[: len(tk)] = tk
            out["caps"].append(toks)
            out["cmasks"].append(toks > 0)
            out["vfeats"].append(feats)
            out["vmasks"].append(np.arange(lv) < end - start)
            out["video_start"].append(start)
            out["video_end"].append(end)
            out["text_start"].append(cap)
            out["text_end"].append(cap + 1)
        return {k: np.asarray(v) for k, v in out.items()}


class FakeModel(Model, nn.Module):
    name = "fake-model"

    @attrs.frozen
    class Config:
        hidden: int = option(16, ge=1)
        ignore_input: bool = option(False, help="outputs that ignore the input: a model that cannot learn")

    def __init__(self, config: Any) -> None:
        nn.Module.__init__(self)
        self.ignore_input = config.ignore_input
        self.video = nn.Sequential(nn.Linear(DIM, config.hidden), nn.Tanh(), nn.Linear(config.hidden, config.hidden))
        self.words = nn.Embedding(64, config.hidden)
        self.text = nn.Linear(config.hidden, config.hidden)

    def forward_video(self, vfeats: torch.Tensor, vmasks: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = self.video(vfeats)
        m = vmasks.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp_min(1), h, vmasks

    def forward_text(self, caps: torch.Tensor, cmasks: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = self.text(self.words(caps))
        m = cmasks.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp_min(1), h, cmasks

    def forward(self, caps: torch.Tensor, cmasks: torch.Tensor, vfeats: torch.Tensor, vmasks: torch.Tensor) -> dict:
        if self.ignore_input:  # trainable, but every clip and caption gets the same vectors: no pairing to learn
            vfeats, caps = torch.ones_like(vfeats), torch.full_like(caps, 10)
        pv, hv, mv = self.forward_video(vfeats, vmasks)
        pt, ht, mt = self.forward_text(caps, cmasks)
        return {"pooled_video": pv, "pooled_text": pt, "video_outputs": hv, "text_outputs": ht,
                "video_mask_outputs": mv, "text_mask_outputs": mt}

    def special_tokens(self) -> SpecialTokens:
        return SpecialTokens(cls=1, sep=2, pad=0)

    def tokenizer_name(self) -> str:
        return "fake"

    def tokenize(self, texts: Any) -> list[list[int]]:
        return [[10 + len(t) % 50] for t in texts]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


class _InfGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x * 0

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad * float("inf")


class FakeLoss(Loss, nn.Module):
    name = "fake-nce"

    @attrs.frozen
    class Config:
        nan_at_call: int = option(0, ge=0, help="return a NaN loss at this call (1-based); 0 = never")
        inf_grad_at_call: int = option(0, ge=0, help="finite loss but infinite gradient at this call")

    def __init__(self, config: Any, rank: int = 0, world_size: int = 1) -> None:
        nn.Module.__init__(self)
        self.config, self.calls = config, 0

    def chance_levels(self, clips: int) -> dict[str, float]:
        return {"loss": 2 * math.log(clips), "v2t_loss": math.log(clips), "t2v_loss": math.log(clips)}

    def forward(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        self.calls += 1
        logits = outputs["pooled_video"].float() @ outputs["pooled_text"].float().T
        target = torch.arange(len(logits))
        v2t = nn.functional.cross_entropy(logits, target)
        t2v = nn.functional.cross_entropy(logits.T, target)
        loss = v2t + t2v
        if self.calls == self.config.nan_at_call:
            loss = loss * float("nan")
        if self.calls == self.config.inf_grad_at_call:
            loss = loss + _InfGrad.apply(outputs["pooled_video"].sum())
        return {"loss": loss, "v2t_loss": v2t.detach(), "t2v_loss": t2v.detach()}


class Plugin:
    @staticmethod
    @hookimpl
    def norton_register_data_sources(register: Any) -> None:
        register(FakeData)

    @staticmethod
    @hookimpl
    def norton_register_aligners(register: Any) -> None:
        register(FakeAligner)

    @staticmethod
    @hookimpl
    def norton_register_models(register: Any) -> None:
        register(FakeModel)

    @staticmethod
    @hookimpl
    def norton_register_losses(register: Any) -> None:
        register(FakeLoss)


def fake_plugins() -> Any:
    """Only the built-in retrieval backends and metric sinks (ours) plus the fakes: other built-ins do not affect
    these tests."""
    plugins = Plugins()
    plugins.load_entrypoints({"NORTON_LOAD_PLUGINS": "retrieval,sinks"})
    plugins.register(Plugin(), name="engine-fakes")
    return plugins


def install_fake_store() -> None:
    """Route the engine's store opening to :class:`FakeStore` (tests only)."""
    import norton_core.engine.loader as dataio

    dataio.open_store = open_fake_store


def recipe_dict(tmp: Path, **tables: dict[str, Any]) -> dict[str, Any]:
    """A small, deterministic fake recipe: 22 usable videos, V=4, C=4, 2 epochs, retrieval from epoch 2."""
    base: dict[str, Any] = {
        "run": {"name": "fake", "output_dir": str(tmp / "runs"), "seed": 3, "deterministic": True, "threads": 1,
                "cache_dir": str(tmp / "cache")},
        "train": {"epochs": 3, "videos_per_batch": 4, "lr": 1e-2, "warmup_updates": 2, "log_every": 1,
                  "checkpoint_every": 2, "keep_last": 2},
        "data": {"name": "fake-data"},
        "aligner": {"name": "fake-aligner"},
        "model": {"name": "fake-model"},
        "loss": {"name": "fake-nce"},
        "retrieval": {"start_epoch": 2, "num_cands": 8, "embed_videos_per_batch": 5, "recall_sample": 8,
                      "aligner": {"name": "fake-aligner"}, "backend": {"name": "faiss-ivf", "nlist": 4}},
    }
    for name, table in tables.items():
        base[name] = {**base.get(name, {}), **table}
    return base


def build_recipe(raw: dict[str, Any], plugins: Any) -> Any:
    from norton_core.recipe.load import Recipe

    return Recipe.from_dict(raw, source="<engine test>", plugins=plugins)


def main(argv: list[str]) -> int:
    """Subprocess driver: ``python tests/engine/fakes.py RECIPE.json [--resume] [--allow k1,k2]``. Under torchrun,
    ``NORTON_FAULT_RANK=r`` keeps ``NORTON_FAULT`` for rank r only. ``NORTON_TEST_THREAD_AT_FORK=1`` starts an idle
    thread in every forked child (see :func:`thread_at_fork`)."""
    import os

    from norton_core.engine import train, until_exit

    if os.environ.get("NORTON_TEST_THREAD_AT_FORK") == "1":
        os.register_at_fork(after_in_child=thread_at_fork)
    if os.environ.get("NORTON_FAULT_RANK", os.environ.get("RANK")) != os.environ.get("RANK"):
        os.environ.pop("NORTON_FAULT", None)  # faults for one rank of a torchrun world only
    install_fake_store()
    plugins = fake_plugins()
    raw = json.loads(Path(argv[0]).read_text())
    allow = argv[argv.index("--allow") + 1].split(",") if "--allow" in argv else ()
    from norton_core.errors import NortonError, Preempted

    try:
        with until_exit(print, process_ends=True):  # as the norton program does
            result = train(build_recipe(raw, plugins), resume="--resume" in argv, allow_recipe_change=allow,
                           plugins=plugins)
    except Preempted as exc:  # as the CLI does
        print(f"PREEMPTED {exc}")
        return exc.exit_code
    except NortonError as exc:  # as the CLI does
        for line in exc.lines():
            print(f"norton: error: {line}", file=sys.stderr)
        return 2
    print(f"RESULT step={result.step} complete={result.complete}")
    return 0


def thread_at_fork() -> None:
    """An idle thread started in a forked child before anything else runs there: what the thread pools some hosts'
    torch builds start in a DataLoader worker before ``worker_init_fn`` do. Such a thread has the signal mask of the
    thread that forked, so a process-directed SIGTERM may be handed to it."""
    import threading
    import time

    threading.Thread(target=time.sleep, args=(3600,), name="born-at-fork", daemon=True).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


def run_fake(tmp_path: Path, plugins: Any, **kw: Any) -> Any:
    """Train the fake recipe: dict keywords are recipe tables, the others ``train`` flags (``resume=True`` ...)."""
    from norton_core.engine import train

    tables = {k: v for k, v in kw.items() if isinstance(v, dict)}
    flags = {k: v for k, v in kw.items() if not isinstance(v, dict)}
    return train(build_recipe(recipe_dict(tmp_path, **tables), plugins), plugins=plugins, **flags)
