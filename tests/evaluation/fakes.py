"""A fake dual encoder with a planted alignment, and tiny evaluation sets in the public formats.

Every caption is one word ``w<k>``; the video of concept ``k`` is the fixed random unit vector ``concepts[k]`` (plus
noise). The planted model embeds ``w<k>`` as ``concepts[k]`` and a clip as the mean of its features, so it
retrieves perfectly; the random model embeds words and features with unrelated random matrices (chance level).
``offset`` adds that constant to every caption-clip dot product (an extra coordinate: 1 for clips, offset for
captions), the shift no contrastive loss pins down.
"""

from __future__ import annotations

import csv
import functools
import json
from collections.abc import Sequence
from pathlib import Path

import attrs
import numpy as np
import torch

from norton_core import hookimpl
from norton_core.plugin.interfaces import Aligner, DataPaths, DataSource, Loss, Model, RetrievalBackend, SpecialTokens
from norton_core.recipe.options import option

DIM = 512
VOCAB = 2000
SPECIAL = SpecialTokens(cls=1, sep=2, pad=0)


@functools.cache
def concepts(seed: int = 0) -> np.ndarray:
    """(VOCAB, 512) fixed random unit vectors (read-only: cached)."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((VOCAB, DIM))
    c = (c / np.linalg.norm(c, axis=1, keepdims=True)).astype(np.float32)
    c.flags.writeable = False
    return c


class FakeModel(Model, torch.nn.Module):
    name = "fake-eval"

    @attrs.frozen
    class Config:
        planted: bool = option(True)
        noise: float = option(0.0, ge=0.0, help="std of noise added to the planted word vectors")
        offset: float = option(0.0)
        seed: int = option(0)

    def __init__(self, config: Config) -> None:
        torch.nn.Module.__init__(self)
        self.config = config
        g = torch.Generator().manual_seed(config.seed + 1)
        if config.planted:
            words = torch.from_numpy(concepts().copy()) + config.noise * torch.randn(VOCAB, DIM, generator=g)
            proj = torch.eye(DIM)
        else:
            words = torch.randn(VOCAB, DIM, generator=g)
            proj = torch.randn(DIM, DIM, generator=g) / DIM ** 0.5
        self.words = torch.nn.Parameter(words)
        self.proj = torch.nn.Parameter(proj)
        self.calls = 0
        self.attend_cls_seen: set[bool] = set()
        self.autocast_seen: set[torch.dtype | None] = set()  # the CPU autocast dtype of each forward_video, or None

    def _extra(self, x: torch.Tensor, value: float) -> torch.Tensor:
        return torch.cat([x, torch.full((*x.shape[:-1], 1), value)], dim=-1)

    def forward_video(self, vfeats: torch.Tensor, vmasks: torch.Tensor, *,  # type: ignore[override]
                      attend_cls: bool = True):
        assert not torch.is_grad_enabled() and not self.training  # the evaluators must ask for inference mode
        self.calls += 1
        self.attend_cls_seen.add(attend_cls)
        self.autocast_seen.add(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        tokens = self._extra(vfeats @ self.proj, 1.0)
        m = vmasks.float().unsqueeze(-1)
        pooled = (tokens * m).sum(1) / m.sum(1).clamp(min=1)
        edge = torch.zeros(tokens.shape[0], 1, tokens.shape[-1])
        outputs = torch.cat([edge, tokens, edge], dim=1)
        mask = torch.cat([torch.zeros_like(vmasks[:, :1]), vmasks, torch.ones_like(vmasks[:, :1])], dim=1)
        return pooled, outputs, mask

    def forward_text(self, caps: torch.Tensor, cmasks: torch.Tensor):  # type: ignore[override]
        assert not torch.is_grad_enabled() and not self.training
        words = caps[:, 2:]
        m = (cmasks[:, 2:] & (words != SPECIAL.sep)).float().unsqueeze(-1)
        tokens = self._extra(self.words[words], self.config.offset)
        pooled = (tokens * m).sum(1) / m.sum(1).clamp(min=1)
        return pooled, tokens, cmasks[:, 2:]

    def special_tokens(self) -> SpecialTokens:
        return SPECIAL

    def tokenizer_name(self) -> str:
        return "fake"

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return [[int(w[1:]) for w in t.split()] for t in texts]

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.parameters())


class FakeData(DataSource):
    """Points at an evaluation root given in the recipe (to test ``norton evaluate`` without ``--eval-root``)."""

    name = "fake-eval-data"

    @attrs.frozen
    class Config:
        eval_root: str = option("")

    def __init__(self, config: Config, cache_dir: Path | None = None) -> None:
        self.config = config

    def prepare(self, progress: bool = True) -> DataPaths:
        return DataPaths(train=Path("unused"), eval_root=Path(self.config.eval_root) if self.config.eval_root else None)


class FakeAligner(Aligner):
    name = "fake-eval-aligner"

    def __init__(self, config: object, special_tokens: SpecialTokens | None = None) -> None:
        pass

    def __call__(self, record, rng):  # type: ignore[no-untyped-def]
        raise NotImplementedError


class FakeLoss(Loss):
    name = "fake-eval-loss"

    def __init__(self, config: object, rank: int = 0, world_size: int = 1) -> None:
        pass


class FakeBackend(RetrievalBackend):
    name = "fake-eval-backend"

    def __init__(self, config: object, seed: int = 0) -> None:
        pass

    def build(self, vectors, ids):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def search(self, query_ids, k):  # type: ignore[no-untyped-def]
        raise NotImplementedError


class FakePlugin:
    """Registers the fake components (a recipe needs every table filled)."""

    @staticmethod
    @hookimpl
    def norton_register_models(register):  # type: ignore[no-untyped-def]
        register(FakeModel)

    @staticmethod
    @hookimpl
    def norton_register_data_sources(register):  # type: ignore[no-untyped-def]
        register(FakeData)

    @staticmethod
    @hookimpl
    def norton_register_aligners(register):  # type: ignore[no-untyped-def]
        register(FakeAligner)

    @staticmethod
    @hookimpl
    def norton_register_losses(register):  # type: ignore[no-untyped-def]
        register(FakeLoss)

    @staticmethod
    @hookimpl
    def norton_register_retrieval_backends(register):  # type: ignore[no-untyped-def]
        register(FakeBackend)


def fake_recipe(eval_root: Path | str = "", **model: object) -> dict:
    """A complete recipe dict made of the fake components."""
    return {
        "data": {"name": "fake-eval-data", "eval_root": str(eval_root)},
        "aligner": {"name": "fake-eval-aligner"},
        "model": {"name": "fake-eval", **model},
        "loss": {"name": "fake-eval-loss"},
        "retrieval": {"aligner": {"name": "fake-eval-aligner"}, "backend": {"name": "fake-eval-backend"}},
    }


def eval_plugins():  # type: ignore[no-untyped-def]
    """A plugin manager with only the built-in evaluators and the fakes (independent of the other built-ins)."""
    import norton_evaluators
    import norton_sinks

    from norton_core import Plugins

    plugins = Plugins()
    plugins.register(norton_evaluators, name="evaluators", distribution="norton")
    plugins.register(norton_sinks, name="sinks", distribution="norton")
    plugins.register(FakePlugin, name="fake-eval")
    return plugins


# ----------------------------------------------------------------------------------------------------------------
# evaluation sets
# ----------------------------------------------------------------------------------------------------------------


def _video(rng: np.random.Generator, length: int, spans: list[tuple[int, int, int]], noise: float = 0.05) -> np.ndarray:
    """(length, 512) float16 features: background concepts 1900+, each span filled with its concept."""
    c = concepts()
    feats = c[rng.integers(1900, VOCAB, size=length)].copy()
    for k, start, end in spans:
        feats[start:end] = c[k]
    feats = feats + noise * rng.standard_normal(feats.shape).astype(np.float32)
    return feats.astype(np.float16)


def make_youcook2(root: Path, videos: int = 12, steps: int = 4, seed: int = 0) -> Path:
    """``root/youcook2`` with ``videos`` validation videos of ``steps`` steps each (concepts numbered globally)."""
    rng = np.random.default_rng(seed)
    out = root / "youcook2"
    (out / "features").mkdir(parents=True, exist_ok=True)
    database = {}
    k = 10
    for v in range(videos):
        spans, anns, t = [], [], int(rng.integers(0, 6))
        for i in range(steps):
            length = int(rng.integers(4, 12))
            spans.append((k, t, t + length))
            anns.append({"id": i, "segment": [t, t + length], "sentence": f"w{k}"})
            k += 1
            t += length + int(rng.integers(3, 10))
        vid = f"yc{v:03d}"
        np.save(out / "features" / f"{vid}.npy", _video(rng, t, spans))
        database[vid] = {"duration": float(t), "subset": "validation", "annotations": anns}
    (out / "annotations.json").write_text(json.dumps({"database": database}))
    return out


def make_msrvtt(root: Path, videos: int = 40, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    out = root / "msrvtt"
    (out / "features").mkdir(parents=True, exist_ok=True)
    with (out / "MSRVTT_JSFUSION_test.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["key", "vid_key", "video_id", "sentence"])
        for v in range(videos):
            vid, length = f"video{7000 + v}", int(rng.integers(10, 40))
            np.save(out / "features" / f"{vid}.npy", _video(rng, length, [(500 + v, 0, length)]))
            writer.writerow([f"ret{v}", f"msr{7000 + v}", vid, f"w{500 + v}"])
    return out


def make_htm_align(root: Path, videos: int = 4, seed: int = 2) -> Path:
    """Videos of ~100 s: an alignable step every 20 s (its concept in its span) between non-alignable ASR lines."""
    rng = np.random.default_rng(seed)
    out = root / "htm_align"
    (out / "features").mkdir(parents=True, exist_ok=True)
    data = {}
    k = 1000
    for v in range(videos):
        length = int(rng.integers(80, 120))
        spans, rows = [], []
        for t in range(0, length - 12, 10):
            if (t // 10) % 2 == 1:
                spans.append((k, t + 1, t + 6))
                rows.append([1, float(t + 1), float(t + 6), f"w{k}"])
            else:  # a non-alignable line: a word whose concept appears nowhere
                rows.append([0, float(t), float(t + 4), f"w{k}"])
            k += 1
        vid = f"htm{v:02d}"
        np.save(out / "features" / f"{vid}.npy", _video(rng, length, spans))
        data[vid] = rows
    (out / "htm_align.json").write_text(json.dumps(data))
    return out


def make_eval_root(root: Path) -> Path:
    make_youcook2(root)
    make_msrvtt(root)
    make_htm_align(root)
    return root
