"""``norton convert-videoclip CHECKPOINT OUT``: fairseq VideoCLIP weights -> our ``mmfusion-separate`` state dict.

The checkpoint is read with :func:`norton_core._util.safe_checkpoint.load_checkpoint` (no code from it runs; ``torch.load`` is
never used; storage records and views are checked against the bytes the archive holds).
Its ``model`` table holds keys prefixed ``mmmodel.`` (fairseq's wrapper). The mapping, applied after stripping
that prefix (a checkpoint without it is accepted too):

=====================================================  ===========================================================
VideoCLIP key                                          ours
=====================================================  ===========================================================
``video_encoder.videomlp.<p>``                         ``videomlp.<p>`` (linear1, LayerNorm, linear2)
``video_encoder.bert.embeddings.word_embeddings``      ``video_encoder.embeddings.word_embeddings``: rows
                                                       ``[cls_id, sep_id]`` of BERT's table (the only words the
                                                       video tower embeds)
``video_encoder.bert.embeddings.position_embeddings``  same name under ``video_encoder.``; the first
                                                       ``max_video_positions`` rows
``video_encoder.bert.embeddings.<token_type, LN>``     ``video_encoder.embeddings.<...>``
``video_encoder.bert.encoder.layer.<i>.<p>``           ``video_encoder.encoder.layer.<i>.<p>``
``text_encoder.<embeddings|encoder>.<p>``              ``text_encoder.<embeddings|encoder>.<p>``
dropped                                                ``*.position_ids`` / ``*.token_type_ids`` buffers,
                                                       ``*.pooler.*`` (unused by the model),
                                                       ``video_encoder.bert.embeddings.seg_embeddings`` (unused,
                                                       kept by MMPT for initialisation randomness only)
=====================================================  ===========================================================

Any other key is an error (weights are never dropped silently). Tensors are written as float32. The model that
loads the file needs the matching config: ``text_encoder`` of BERT-base shape (``bert-base-uncased``),
``video_layers`` = the checkpoint's video layers (6), ``max_video_positions`` = ``--max-video-positions``.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from norton_core import CheckpointError, LazyTensor, load_checkpoint

DROPPED = (
    re.compile(r".*\.position_ids$"),
    re.compile(r".*\.token_type_ids$"),
    re.compile(r"(video_encoder\.bert|text_encoder)\.pooler\..*"),
    re.compile(r"video_encoder\.bert\.embeddings\.seg_embeddings\..*"),
)
RULES = (
    (re.compile(r"video_encoder\.videomlp\.(.+)"), r"videomlp.\1"),
    (re.compile(r"video_encoder\.bert\.((embeddings|encoder)\..+)"), r"video_encoder.\1"),
    (re.compile(r"text_encoder\.((embeddings|encoder)\..+)"), r"text_encoder.\1"),
)


def map_key(key: str) -> str | None:
    """Our key for a VideoCLIP key (``mmmodel.`` already stripped), None if it is dropped by design."""
    if any(p.fullmatch(key) for p in DROPPED):
        return None
    for pattern, target in RULES:
        if pattern.fullmatch(key):
            return pattern.sub(target, key)
    raise CheckpointError(f"VideoCLIP key {key!r} has no mapping (expected video_encoder.videomlp.*, "
                          "video_encoder.bert.*, text_encoder.*)")


def _model_table(obj: Any, path: Path) -> dict[str, Any]:
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        table = obj["model"]
    elif isinstance(obj, dict) and any(str(k).startswith("mmmodel.") for k in obj):
        table = obj
    else:
        raise CheckpointError(f"{path}: no 'model' table of weights (is this a fairseq checkpoint?)")
    return table


def convert(checkpoint: str | Path, out: str | Path, *, cls_id: int = 101, sep_id: int = 102,
            max_video_positions: int = 512) -> dict[str, Any]:
    """Convert and write ``out`` (safetensors). Returns a summary: tensors written, dropped keys, placeholders."""
    import torch
    from safetensors.torch import save_file


    path = Path(checkpoint)
    obj, placeholders = load_checkpoint(path)
    table = _model_table(obj, path)
    tensors: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for raw_key, value in table.items():
        key = str(raw_key).removeprefix("mmmodel.")
        ours = map_key(key)
        if ours is None:
            dropped.append(key)
            continue
        if not isinstance(value, LazyTensor):
            raise CheckpointError(f"{path}: {raw_key} is not a tensor ({type(value).__name__})")
        tensor = value.load().float()
        if ours == "video_encoder.embeddings.word_embeddings.weight":
            if max(cls_id, sep_id) >= tensor.shape[0]:
                raise CheckpointError(f"{path}: {raw_key} has {tensor.shape[0]} rows; cls/sep ids {cls_id}/{sep_id}")
            tensor = tensor[[cls_id, sep_id]]
        elif ours == "video_encoder.embeddings.position_embeddings.weight":
            if tensor.shape[0] < max_video_positions:
                raise CheckpointError(f"{path}: {raw_key} has {tensor.shape[0]} positions, fewer than "
                                      f"--max-video-positions {max_video_positions}")
            tensor = tensor[:max_video_positions]
        if ours in tensors:
            raise CheckpointError(f"{path}: two checkpoint keys map to {ours}")
        tensors[ours] = tensor.contiguous()
    if not tensors:
        raise CheckpointError(f"{path}: the model table holds no VideoCLIP weights")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt", "source": "videoclip", "checkpoint": path.name})
    tmp.replace(out)
    return {"written": len(tensors), "dropped": dropped, "placeholders": sorted(placeholders), "out": str(out)}


def _run(args: argparse.Namespace) -> int:
    summary = convert(args.checkpoint, args.out, cls_id=args.cls_id, sep_id=args.sep_id,
                      max_video_positions=args.max_video_positions)
    print(f"wrote {summary['written']} tensors to {summary['out']}; dropped by design: {len(summary['dropped'])} "
          f"({', '.join(summary['dropped'][:4])}{', ...' if len(summary['dropped']) > 4 else ''}); "
          f"objects read as inert placeholders: {', '.join(summary['placeholders']) or 'none'}")
    return 0


def add_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "convert-videoclip", help="convert a fairseq VideoCLIP checkpoint to mmfusion-separate safetensors",
        description="Read a fairseq VideoCLIP checkpoint without running code from it and write our model's "
                    "weights as safetensors (load with run.init_from = OUT).")
    parser.add_argument("checkpoint", help="fairseq checkpoint (e.g. runs/retri/videoclip/checkpoint_best.pt)")
    parser.add_argument("out", help="output .safetensors file")
    parser.add_argument("--cls-id", type=int, default=101, help="[CLS] id of the text tokenizer (BERT: 101)")
    parser.add_argument("--sep-id", type=int, default=102, help="[SEP] id of the text tokenizer (BERT: 102)")
    parser.add_argument("--max-video-positions", type=int, default=512,
                        help="the model's max_video_positions (rows of the position table kept)")
    parser.set_defaults(func=_run)
