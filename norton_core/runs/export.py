"""Exported models: ``norton export RUN OUT`` writes a directory anyone can load without norton's recipes or runs,
and :func:`load` embeds videos and texts into the model's joint space from it.

An export directory holds

- ``model.safetensors``: the model's weights (the run's newest valid checkpoint, or the checkpoint given);
- ``model.json``: the registered model name and its options, plus the input sizes the evaluation used;
- ``text_encoder/``: the text encoder's configuration and tokenizer files (its weights are in the model's);
- ``README.md``: a model card with the run's evaluation table and its training recipe;
- ``recipe.json`` and ``eval.json``: the training recipe and evaluations as the run saved them;
- ``manifest.json``: the size and sha256 of every file above except ``README.md`` (written last, like a
  checkpoint's). Loading checks it first: a missing, added, truncated or altered file (a deleted
  ``text_encoder/tokenizer.json``, a flipped weight byte) is refused naming the file, so an export is used exactly
  as it was written or not at all. The model card is for people and may be edited.

Example::

    from norton_core.runs.export import load

    model = load("exports/how2_demo")
    videos = model.embed_videos([features])        # features: (seconds, 512) float32 per video
    texts = model.embed_texts(["crack the eggs into a bowl"])
    scores = texts @ videos.T                      # higher = better match (as in the evaluation)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from norton_core import __version__
from norton_core._util.bounded import read_bounded, read_json
from norton_core.errors import CheckpointError, NortonError

FORMAT = "norton-export"
#: 2: with manifest.json (version 1 exports had none and are refused: re-export the run)
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
#: files of an export that the manifest does not cover (documentation, free to edit)
UNLISTED = frozenset({"README.md", MANIFEST})
#: the largest JSON metadata file read from an export (model.json, recipe.json, eval.json, manifest.json)
MAX_JSON_BYTES = 16 * 1024 * 1024
#: the evaluation's input sizes (YouCook2 / MSR-VTT defaults): 32 seconds of video, 96 - 32 caption tokens
MAX_VIDEO_SECONDS, TEXT_LEN = 32, 64
#: the longest video or text input an export may declare (its position tables are far smaller in practice)
MAX_INPUT_LENGTH = 4096


# ----------------------------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------------------------


def export_run(source: Path, out: Path, log: Callable[[str], None] = print) -> Path:
    """Export a run directory (its newest valid checkpoint) or one checkpoint directory of a run to ``out``."""
    from norton_core.engine import checkpoint as ckpt
    from norton_core.recipe.load import Recipe, dumps_toml

    source, out = Path(source), Path(out)
    if (source / "recipe.json").is_file():
        run_dir = source
        found = ckpt.find_latest(source / "checkpoints", log)
        if found is None:
            raise CheckpointError(f"{source}: the run has no valid checkpoint to export")
        checkpoint, files = found
    elif (source / "manifest.json").is_file():
        run_dir, checkpoint = source.parent.parent, source
        files = ckpt.read_checkpoint(source)
        if not (run_dir / "recipe.json").is_file():
            raise CheckpointError(f"{source}: a checkpoint outside a run directory ({run_dir / 'recipe.json'} missing)")
    else:
        raise CheckpointError(f"{source}: expected a run directory (with recipe.json) or a checkpoint directory "
                              "(with manifest.json)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise NortonError(f"{out}: already exists and is not an empty directory; choose another OUT")
    resolved = _json_or_empty(run_dir / "recipe.json")
    recipe = Recipe.from_dict(resolved, source=str(run_dir / "recipe.json"))
    state = json.loads(files["state.json"])
    spec = recipe.components["model"]
    evaluation = _json_or_empty(run_dir / "eval.json")

    staging = out.with_name(out.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    (staging / "model.safetensors").write_bytes(files["model.safetensors"])
    options = _export_text_encoder(spec, staging / "text_encoder")
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "norton_version": __version__,
            "model": {"name": spec.name, **options}, "max_video_seconds": MAX_VIDEO_SECONDS, "text_len": TEXT_LEN,
            "text_encoder_from": getattr(spec.config, "text_encoder", None),
            "run": recipe.run.name, "step": int(state["step"]), "checkpoint": checkpoint.name}
    (staging / "model.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    (staging / "recipe.json").write_text(json.dumps(resolved, indent=1), encoding="utf-8")
    (staging / "eval.json").write_text(json.dumps(evaluation, indent=1), encoding="utf-8")
    from norton_core.runs import column_labels

    columns = column_labels(evaluation, recipe.run.name, bool(recipe.run.init_from or recipe.run.pretrain_recipe))
    (staging / "README.md").write_text(model_card(meta, columns, dumps_toml(recipe.resolved())), encoding="utf-8")
    write_manifest(staging)
    load(staging)  # the export must load on its own before it is handed over
    if out.exists():
        out.rmdir()
    os.replace(staging, out)
    log(f"norton: exported {checkpoint} (step {meta['step']}) with its tokenizer and model card")
    return out


def _export_text_encoder(spec: Any, target: Path) -> dict[str, Any]:
    """The model's options, with a text encoder named by the recipe copied in (configuration and tokenizer) and
    its option pointing there: the export then needs neither the hub nor the package that shipped it."""
    from norton_core.recipe.options import to_dict

    options = to_dict(spec.config)
    if "text_encoder" not in options:
        return options
    from transformers import AutoConfig

    from norton_core._util.text_encoders import load_tokenizer, resolve_pretrained

    name = options["text_encoder"]
    AutoConfig.from_pretrained(resolve_pretrained(name)).save_pretrained(target)
    load_tokenizer(name).save_pretrained(target)
    options["text_encoder"] = "text_encoder"  # relative to the export directory
    if "pretrained_text" in options:
        options["pretrained_text"] = False  # the weights are model.safetensors'
    return options


def model_card(meta: dict[str, Any], evaluation: dict[str, Any], recipe_toml: str) -> str:
    """The export's README: what the model is, how to use it, its evaluation (``{column: results}``), its recipe."""
    from norton_core.evaluation import render_report

    lines = [f"# {meta['run']}: a norton video-text model", "",
             f"Exported by norton {meta['norton_version']} from run `{meta['run']}` at step {meta['step']} "
             f"(checkpoint `{meta['checkpoint']}`). Model `{meta['model']['name']}`: a video encoder over per-second "
             f"{meta['model'].get('feature_dim', 512)}-d features and a text encoder"
             + (f" (from `{meta['text_encoder_from']}`)" if meta.get("text_encoder_from") else "")
             + ", trained into one joint space.",
             "", "## Use", "", "```python", "from norton_core.runs.export import load", "",
             "model = load(\"path/to/this/directory\")",
             f"videos = model.embed_videos([features])   # (seconds, {meta['model'].get('feature_dim', 512)}) float32 "
             f"per video; the first {meta['max_video_seconds']} s are encoded",
             "texts = model.embed_texts([\"crack the eggs into a bowl\"])",
             "scores = texts @ videos.T                   # higher = better match", "```", "",
             "Evaluate it with `norton evaluate path/to/this/directory` (the evaluation sets come from the training "
             "recipe's data source, or `--eval-root DIR`).", "", "## Evaluation", ""]
    if evaluation:
        lines += [render_report(evaluation, fmt="markdown"), "",
                  "Numbers are percentages except `MR` and the counts; `chance` is what a random ranking scores."]
    else:
        lines.append("The run was not evaluated.")
    lines += ["", "## Training recipe", "", "```toml", recipe_toml.strip(), "```", ""]
    return "\n".join(lines)


def _json_or_empty(path: Path) -> dict[str, Any]:
    """An export's optional JSON metadata file: absent means none was written."""
    if not path.exists():
        return {}
    value: dict[str, Any] = read_json(path, MAX_JSON_BYTES, "an export's JSON metadata", CheckpointError, expect=dict)
    return value


# ----------------------------------------------------------------------------------------------------------------
# the manifest
# ----------------------------------------------------------------------------------------------------------------


def _listed_files(root: Path) -> list[str]:
    """Every entry under ``root`` the manifest covers (anything but a directory: an added FIFO or link counts
    too), as ``/``-separated relative paths, sorted."""
    out = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if not (path.is_dir() and not path.is_symlink()) and rel not in UNLISTED:
            out.append(rel)
    return out


def _sha256_of(path: Path, size: int) -> str:
    """sha256 of the regular file ``path`` of (at most) ``size`` bytes, streamed."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        left = size
        while left > 0:
            chunk = os.read(fd, min(left, 8 << 20))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    return digest.hexdigest()


def write_manifest(root: Path) -> None:
    """Write ``root/manifest.json``: size and sha256 of every file of the export except the model card."""
    files = {}
    for rel in _listed_files(root):
        size = (root / rel).stat().st_size
        files[rel] = {"size": size, "sha256": _sha256_of(root / rel, size)}
    (root / MANIFEST).write_text(json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, "files": files},
                                            indent=1), encoding="utf-8")


def verify_export(path: Path) -> dict[str, Any]:
    """Check every file of an export against its manifest (present, a regular file, its size and sha256) and that
    no file was added; returns the manifest. Raises CheckpointError naming the first file that differs."""
    import stat

    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.exists():
        raise CheckpointError(f"{path}: no {MANIFEST}, so its files cannot be verified (an export written by an "
                              f"older norton, or damaged); export the run again with `norton export RUN OUT`")
    manifest = _json_or_empty(manifest_path)
    files = manifest.get("files")
    if manifest.get("format") != FORMAT or not isinstance(files, dict):
        raise CheckpointError(f"{manifest_path}: not an export manifest (expected \"format\": \"{FORMAT}\" and "
                              "a \"files\" table)")
    for rel, meta in files.items():
        file = path / rel
        if not isinstance(rel, str) or rel.startswith("/") or ".." in rel.split("/") or rel in UNLISTED:
            raise CheckpointError(f"{manifest_path}: bad file name {rel!r}")
        if not (isinstance(meta, dict) and isinstance(meta.get("size"), int) and isinstance(meta.get("sha256"), str)):
            raise CheckpointError(f"{manifest_path}: the entry of {rel} is malformed")
        try:
            st = os.stat(file)
        except OSError:
            raise CheckpointError(f"{file}: missing from the export (its manifest lists it); the export is "
                                  "incomplete, export the run again") from None
        if not stat.S_ISREG(st.st_mode):
            raise CheckpointError(f"{file}: not a regular file (the export wrote one)")
        if st.st_size != meta["size"]:
            raise CheckpointError(f"{file}: expected {meta['size']} bytes (the export's manifest), found "
                                  f"{st.st_size}")
        if _sha256_of(file, st.st_size) != meta["sha256"]:
            raise CheckpointError(f"{file}: sha256 differs from the export's manifest: the file was altered or is "
                                  "corrupt")
    extra = [rel for rel in _listed_files(path) if rel not in files]
    if extra:
        raise CheckpointError(f"{path / extra[0]}: not written by the export (not in its manifest); remove it "
                              f"({len(extra)} such file(s))")
    return manifest


def read_weights(path: Path) -> bytes:
    """``model.safetensors`` of a verified export, read once and checked against the manifest again (it may have
    changed since :func:`verify_export`)."""
    path = Path(path)
    meta = verify_export(path)["files"].get("model.safetensors")
    if meta is None:
        raise CheckpointError(f"{path / MANIFEST}: does not list model.safetensors")
    data = read_bounded(path / "model.safetensors", meta["size"], "the export's weights", CheckpointError)
    if len(data) != meta["size"] or hashlib.sha256(data).hexdigest() != meta["sha256"]:
        raise CheckpointError(f"{path / 'model.safetensors'}: changed while being read (differs from the manifest)")
    return data


# ----------------------------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------------------------


def is_export(path: Path) -> bool:
    """A directory holding ``model.json`` and ``model.safetensors`` (of any file type: :func:`verify_export` says
    what is wrong with them)."""
    return all(os.path.lexists(Path(path) / name) for name in ("model.json", "model.safetensors"))


def read_meta(path: Path) -> dict[str, Any]:
    path = Path(path)
    meta = _json_or_empty(path / "model.json")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path / 'model.json'}: not a norton export (no \"format\": \"{FORMAT}\")")
    version = meta.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: export format {version!r} is newer than this norton reads "
                              f"({FORMAT_VERSION}); upgrade norton")
    if not isinstance(meta.get("model"), dict) or not isinstance(meta["model"].get("name"), str):
        raise CheckpointError(f"{path / 'model.json'}: expected a \"model\" table with the model's \"name\"")
    for key, default in (("max_video_seconds", MAX_VIDEO_SECONDS), ("text_len", TEXT_LEN)):
        value = meta.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_INPUT_LENGTH:
            raise CheckpointError(f"{path / 'model.json'}: {key} must be an integer in [1, {MAX_INPUT_LENGTH}], "
                                  f"got {value!r}")
    return meta


def model_options(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The model table with its text encoder resolved inside the export directory."""
    model = dict(meta["model"])
    if model.get("text_encoder") == "text_encoder":
        model["text_encoder"] = str((Path(path) / "text_encoder").resolve())
    return model


def export_recipe(path: Path) -> Any:
    """The training recipe of an export with its model table pointing into the export (``norton evaluate``)."""
    from norton_core.recipe.load import Recipe

    path = Path(path)
    raw = _json_or_empty(path / "recipe.json")
    if not raw:
        raise CheckpointError(f"{path}: an export without recipe.json; pass --recipe and --eval-root")
    raw["model"] = model_options(path, read_meta(path))
    check_model_options(path, raw["model"])
    return Recipe.from_dict(raw, source=str(path / "recipe.json"))


class ExportedModel:
    """A loaded export: :meth:`embed_videos` and :meth:`embed_texts` give vectors of one joint space, compared
    by dot product (as the evaluation does)."""

    def __init__(self, path: Path, device: str = "cpu") -> None:
        from norton_core import build
        from norton_core.evaluation.cli import load_weights

        self.path, self.device = Path(path), device
        verify_export(self.path)  # before the model reads its text encoder's files from the export
        self.meta = read_meta(self.path)
        options = model_options(self.path, self.meta)
        check_model_options(self.path, options)
        name = options.pop("name")
        self.model = build("model", name, options)
        weights = self.path / "model.safetensors"
        load_weights(self.model, weights, read_weights(self.path))
        self.model.to(device)
        self.model.eval()
        self.max_video_seconds = int(self.meta.get("max_video_seconds", MAX_VIDEO_SECONDS))
        self.text_len = int(self.meta.get("text_len", TEXT_LEN))
        self.feature_dim = int(options.get("feature_dim", 512))

    def embed_videos(self, features_per_second: Sequence[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """``(N, d)`` float32: one vector per video from its per-second features ``(seconds, feature_dim)``
        (the first ``max_video_seconds`` seconds, as in the evaluation)."""
        from norton_core.evaluation.embed import encode_clips

        spans = []
        for i, features in enumerate(features_per_second):
            array = np.asarray(features, dtype=np.float32)
            if array.ndim != 2 or array.shape[1] != self.feature_dim or len(array) == 0:
                raise NortonError(f"embed_videos: video {i}: expected (seconds, {self.feature_dim}) features, "
                                  f"got shape {array.shape}")
            if not np.isfinite(array).all():
                raise NortonError(f"embed_videos: video {i}: features hold NaN or inf")
            spans.append((array, 0, len(array)))
        return encode_clips(self.model, spans, self.max_video_seconds, batch_size=batch_size, device=self.device)

    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """``(N, d)`` float32: one vector per text (captions, step descriptions, queries)."""
        from norton_core.evaluation.embed import encode_texts

        texts = list(texts)
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise NortonError(f"embed_texts: item {bad[0]} is a {type(texts[bad[0]]).__name__}, expected a string")
        return encode_texts(self.model, texts, self.text_len, batch_size=batch_size, device=self.device)


def check_model_options(path: Path, model: dict[str, Any]) -> None:
    """The model table of ``model.json`` (with ``name``) against the registered model's option schema: an option
    out of its declared range (``video_layers = 100000``) is refused before anything is allocated, naming
    ``model.json``."""
    from norton_core.plugin.manager import default_plugins
    from norton_core.recipe.options import parse_config

    registry = default_plugins().registry
    options = {k: v for k, v in model.items() if k != "name"}
    if ("model", model["name"]) not in registry:
        raise CheckpointError(f"{path / 'model.json'}: {registry.unknown_message('model', model['name'])}")
    _, problems = parse_config(registry.get("model", model["name"]).cls.Config, options, path="model",
                               source=str(path / "model.json"))
    if problems:
        raise CheckpointError(problems[0] if len(problems) == 1 else f"{len(problems)} problems in "
                              f"{path / 'model.json'}", problems=problems)


def load(path: str | Path, device: str = "cpu") -> ExportedModel:
    """Load an export directory written by ``norton export``."""
    if not is_export(Path(path)):
        raise CheckpointError(f"{path}: not an export directory (expected model.json and model.safetensors)")
    return ExportedModel(Path(path), device)
