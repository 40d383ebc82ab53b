"""Tiny stand-in components registered by the core tests (the real built-ins have their own tests)."""

from __future__ import annotations

from typing import Literal

import attrs

from norton_core import Aligner, DataPaths, DataSource, Evaluator, Loss, Model, RetrievalBackend, hookimpl, option


class FakeData(DataSource):
    name = "fake-data"

    @attrs.frozen
    class Config:
        videos: int = option(10, ge=1)

    def __init__(self, config, cache_dir=None):
        self.config = config

    def prepare(self, progress=True):
        return DataPaths(train=".")


class FakeAligner(Aligner):
    name = "fake-aligner"

    @attrs.frozen
    class Config:
        clip_per_video: int = option(4, ge=1)
        mode: Literal["a", "b"] = option("a")

    def __init__(self, config, special_tokens=None):
        self.clips_per_video = config.clip_per_video

    def __call__(self, record, rng):
        return {}


class FakeModel(Model):
    name = "fake-model"

    @attrs.frozen
    class Config:
        hidden: int = option(8, ge=1)
        text_encoder: str = option("none")

    def __init__(self, config):
        self.config = config

    def forward_video(self, vfeats, vmasks): ...
    def forward_text(self, caps, cmasks): ...
    def special_tokens(self): ...
    def tokenizer_name(self): return "none"
    def tokenize(self, texts): return [[1] for _ in texts]
    def trainable_parameters(self): return []


class FakeLoss(Loss):
    name = "fake-loss"

    @attrs.frozen
    class Config:
        beta: float = option(0.3, ge=0.0, le=1.0)
        iterations: int = option(50, ge=1)

    def __init__(self, config, rank=0, world_size=1):
        self.config = config


class FakeBackend(RetrievalBackend):
    name = "fake-backend"

    @attrs.frozen
    class Config:
        nlist: int = option(512, ge=1)

    def __init__(self, config, seed=0):
        self.config = config

    def build(self, vectors, ids): ...
    def search(self, query_ids, k): ...


class FakeAligned(FakeAligner):
    name = "fake-aligned"


class FakeEval(Evaluator):
    name = "fake-eval"

    @attrs.frozen
    class Config:
        windows: int = option(16, ge=1)

    def __init__(self, config):
        self.config = config

    def evaluate(self, model, ctx):
        return {"R@1": 0.0}


@hookimpl
def norton_register_data_sources(register):
    register(FakeData)


@hookimpl
def norton_register_aligners(register):
    register(FakeAligner)
    register(FakeAligned)


@hookimpl
def norton_register_models(register):
    register(FakeModel)


@hookimpl
def norton_register_losses(register):
    register(FakeLoss)


@hookimpl
def norton_register_retrieval_backends(register):
    register(FakeBackend)


@hookimpl
def norton_register_evaluators(register):
    register(FakeEval)


def recipe_text(**replace: str) -> str:
    """A valid recipe using only the fake components; ``replace`` swaps whole lines by their key."""
    text = """
[run]
name = "fake"
seed = 3

[train]
epochs = 2
lr = 1e-4
videos_per_batch = 8

[data]
name = "fake-data"
videos = 20

[aligner]
name = "fake-aligner"
clip_per_video = 4

[model]
name = "fake-model"
hidden = 16

[loss]
name = "fake-loss"
beta = 0.5

[retrieval]
num_cands = 24

[retrieval.aligner]
name = "fake-aligned"

[retrieval.backend]
name = "fake-backend"
nlist = 4

[evaluation]
tasks = ["fake-eval"]

[evaluation.task_options.fake-eval]
windows = 8
"""
    for key, line in replace.items():
        text = text.replace(next(ln for ln in text.splitlines() if ln.startswith(f"{key} =")), line, 1)
    return text
