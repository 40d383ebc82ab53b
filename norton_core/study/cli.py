"""``norton study FILE``: train every cell of a study and write its report.

A finished cell is reused only when it was made with exactly the resolved recipe and data asked for now (else it is
trained again, with a line naming what changed); an interrupted one resumes. ``--jobs N`` trains N independent
cells at a time (one per GPU when several are visible). The report is ``<output_dir>/report.md`` (plus
``plots/*.png`` when matplotlib is installed: the ``plot`` extra).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("study", help="run a paired-arm study (resumable) and write its report",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", help="path of a study TOML file")
    p.add_argument("--seeds", help="comma-separated seeds instead of the file's (e.g. a reduced run: 0,1)")
    p.add_argument("--values", help="comma-separated variant values (TOML) or case names instead of the file's")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE",
                   help="an override for every stage of every cell, after the file's own")
    p.add_argument("--output", help="output directory instead of the file's output_dir")
    p.add_argument("--report-only", action="store_true",
                   help="aggregate the finished cells, train nothing (refused when a cell was made otherwise)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="train N independent cells at a time, each in its own process with its share of the CPU "
                        "threads (or its own GPU when several are visible); the report is the same")
    p.add_argument("--note", default="", help="a line put at the top of the report (e.g. what was reduced)")
    p.set_defaults(func=cmd_study)


def cmd_study(args: argparse.Namespace) -> int:
    from norton_core.engine.preempt import until_exit
    from norton_core.errors import RecipeError
    from norton_core.study.runner import collect, run_study
    from norton_core.study.spec import load_study

    if args.jobs < 1:
        raise RecipeError(f"--jobs {args.jobs}: expected a number of processes, 1 or more")
    seeds = None
    if args.seeds:
        try:
            seeds = tuple(int(s) for s in args.seeds.split(","))
        except ValueError:
            raise RecipeError(f"--seeds {args.seeds!r}: expected comma-separated integers") from None
    values = None
    if args.values:
        from norton_core.recipe.files import parse_override

        texts = tuple(v.strip() for v in args.values.split(","))
        # named variants are picked by name; a key's values are TOML (0.3, "default", true)
        values = texts if load_study(args.study).variant_cases else tuple(parse_override(f"v={v}")[1] for v in texts)
    study = load_study(args.study, seeds=seeds, values=values, extra_set=tuple(args.overrides),
                       output_dir=args.output)
    if args.report_only:
        results = collect(study)
        _report(study, results, args.note)
        return 0
    with until_exit(lambda m: print(m, flush=True)):  # the report too: a signal must not cut report.md short
        results = run_study(study, log=lambda m: print(m, flush=True), jobs=args.jobs)
        _report(study, results, args.note)
    return 0


def _report(study: Any, results: dict[Any, dict[str, Any]], note: str) -> None:
    from norton_core._util.files import replace_atomic
    from norton_core.study.report import build_report, write_plots

    out = Path(study.output_dir)
    plots = write_plots(study, results, out / "plots")
    text = build_report(study, results, note=note)
    if plots is None:
        print("norton study: matplotlib is not installed: no plots (install the 'plot' extra)", flush=True)
    else:
        text += "\n## Plots\n\n" + "\n".join(f"![{p.stem}](plots/{p.name})" for p in plots) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    replace_atomic(out / "report.md", text.encode())
    print(text)
    print(f"norton study: report written to {out / 'report.md'}", flush=True)
