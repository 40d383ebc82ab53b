"""``norton extract VIDEOS... --out DIR --extractor NAME``: per-second video features (wired in by
``norton_core.cli``). torch and PyAV are imported inside the handler so ``norton --help`` stays fast."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from norton_core.errors import DataError, PluginError


def register_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract", help="video files -> OUT/<id>.npy feature rows (one per second), with a report")
    p.add_argument("videos", nargs="+", metavar="VIDEOS",
                   help="video files, folders of videos (searched recursively) or list files (.txt/.lst, one path "
                        "per line, relative to the list's folder)")
    p.add_argument("--out", required=True, help="output folder: <id>.npy per video, extract_report.json")
    p.add_argument("--extractor", default="s3d-howto100m",
                   help="registered feature extractor (`norton plugins`; default: s3d-howto100m)")
    p.add_argument("--weights", help="the extractor's weights file (s3d-howto100m: s3d_howto100m.pth)")
    p.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="an extractor option (`norton describe feature_extractor NAME`); VALUE is parsed as TOML")
    p.add_argument("--shard", metavar="I/N",
                   help="take share I (from 0) of N of the sorted video list; default under torchrun: RANK/WORLD_SIZE")
    p.add_argument("--batch-size", type=int, default=32, help="chunks per forward pass (default 32)")
    p.add_argument("--workers", type=int, default=2, help="decoding processes (0: decode in the main process)")
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--progress-every", type=float, default=10.0, metavar="SECONDS",
                   help="seconds between progress lines (default 10)")
    p.add_argument("--no-progress", action="store_true", help="no progress lines (the summary is still printed)")
    p.set_defaults(func=_cmd_extract)

    p = sub.add_parser("captions", help="subtitles (.vtt/.srt, YouTube auto-captions included) -> captions.json")
    p.add_argument("subtitles", nargs="+", metavar="SUBTITLES", help="subtitle files or folders (searched recursively); "
                   "the video id is the file name without the suffix and a language tag (abc.en.vtt -> abc)")
    p.add_argument("--out", required=True, help="the captions.json to write (norton prepare how2 reads it)")
    p.set_defaults(func=_cmd_captions)


def _parse_options(items: list[str]) -> dict[str, object]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    options: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DataError(f"--option expects KEY=VALUE, got {item!r}")
        try:
            options[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            options[key.strip()] = value  # a bare word is a string
    return options


def _cmd_extract(args: argparse.Namespace) -> int:
    import torch

    from norton_core import build, default_plugins
    from norton_core.extract.runner import collect_videos, parse_shard, report_name, run_extract, settings_record

    if args.batch_size < 1 or args.workers < 0:
        raise DataError("--batch-size must be >= 1 and --workers >= 0")
    plugins = default_plugins()
    if ("feature_extractor", args.extractor) not in plugins.registry:
        raise PluginError(plugins.registry.unknown_message("feature_extractor", args.extractor) + plugins.broken_note())
    weights = Path(args.weights) if args.weights else None
    if weights is not None and not weights.exists():
        raise DataError(f"--weights {weights}: no such file or directory")
    shard = parse_shard(args.shard)
    videos = collect_videos(args.videos)
    if not videos:
        raise DataError(f"no videos found in {' '.join(args.videos)}")
    local_rank = os.environ.get("LOCAL_RANK")  # under torchrun each process takes its own GPU
    device = args.device or ((f"cuda:{local_rank}" if local_rank else "cuda") if torch.cuda.is_available() else "cpu")
    options = _parse_options(args.options)
    extractor = build("feature_extractor", args.extractor, options, plugins=plugins, weights=weights, device=device)
    config = getattr(extractor, "config", None)
    settings = settings_record(args.extractor, extractor, config, weights)
    out = Path(args.out)
    report = run_extract(videos, out, extractor, name=args.extractor, settings=settings, batch_size=args.batch_size,
                         shard=shard, workers=args.workers, progress_every=args.progress_every,
                         progress=not args.no_progress)
    skipped = report.as_json()["skipped_total"]
    print(f"extract: {report.extracted} extracted, {report.already_done} already done, {skipped} skipped of "
          f"{report.videos} videos ({report.rows} rows, {report.video_seconds:.0f} s of video in "
          f"{report.elapsed_seconds:.0f} s); report: {out / report_name(shard)}", file=sys.stderr)
    for reason, items in report.skipped.items():
        first = items[0]["detail"]
        print(f"extract: skipped {len(items)} ({reason}), e.g. {first}", file=sys.stderr)
    return 0


def _cmd_captions(args: argparse.Namespace) -> int:
    import json

    from norton_core._util.files import replace_atomic
    from norton_core.extract.subtitles import captions_from_subtitles, collect_subtitles

    paths = collect_subtitles(args.subtitles)
    if not paths:
        raise DataError(f"no .vtt or .srt files found in {' '.join(args.subtitles)}")
    captions = captions_from_subtitles(paths)
    empty = sorted(vid for vid, table in captions.items() if not table["text"])
    kept = {vid: table for vid, table in captions.items() if table["text"]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    replace_atomic(out, json.dumps(kept, ensure_ascii=False).encode("utf-8"))
    lines = sum(len(table["text"]) for table in kept.values())
    print(f"captions: {len(kept)} videos, {lines} caption lines -> {out}", file=sys.stderr)
    if empty:
        print(f"captions: left out {len(empty)} subtitle files without any cue text: {', '.join(empty[:5])}"
              + (" ..." if len(empty) > 5 else ""), file=sys.stderr)
    return 0
