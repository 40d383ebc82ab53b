"""``norton runs``, ``norton compare``, ``norton plot`` and ``norton export``: a run's results, read back."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from norton_core.engine.chance import ADVICE
from norton_core.errors import NortonError
from norton_core.runs.read import (
    MAIN_METRICS,
    RunSummary,
    UnreadableRun,
    final_evaluation,
    find_runs,
    read_run,
    run_precision,
    with_precision_label,
)
from norton_core.runs.tables import cell, render, setting


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("runs", help="list runs: state, step, last loss, main evaluation figures")
    p.add_argument("dir", nargs="?", default="runs", help="directory of run directories (default: runs)")
    p.add_argument("--markdown", action="store_true", help="a markdown table")
    p.set_defaults(func=cmd_runs)

    p = subparsers.add_parser("compare", help="evaluations side by side and the recipe settings that differ",
                              description="Runs' last evaluations and evaluation records (the JSON files norton "
                                          "evaluate writes, one per model and task) merged into one table, one "
                                          "column per run or model; then the recipe settings in which the runs "
                                          "differ.")
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="run directories, evaluation record files (.json), or directories of records (e.g. a run's "
                        "evaluations/ or an --output-dir of norton evaluate)")
    p.add_argument("--markdown", action="store_true", help="markdown tables")
    p.add_argument("--all-metrics", action="store_true", help="every metric, not only the rows a paper reports")
    p.set_defaults(func=cmd_compare)

    p = subparsers.add_parser("plot", help="loss terms and lr over steps, and an evaluation bar chart (PNG)")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    p.add_argument("-o", "--output", required=True, metavar="FILE.png", help="image to write")
    p.set_defaults(func=cmd_plot)

    p = subparsers.add_parser("export", help="a self-contained model directory (weights, options, tokenizer, card)")
    p.add_argument("run", help="run directory, or one of its checkpoint directories")
    p.add_argument("out", help="directory to create (must not exist, or be empty)")
    p.set_defaults(func=cmd_export)


# ----------------------------------------------------------------------------------------------------------------


def cmd_runs(args: argparse.Namespace) -> int:
    found = find_runs(args.dir)
    if not found:
        print(f"norton: no runs in {args.dir}")
        return 0
    runs = [r for r in found if isinstance(r, RunSummary)]
    metrics = [m for m in MAIN_METRICS if any(m in final_evaluation(r)[1] for r in runs)]
    headers = ["run", "state", "step", "epoch", "last loss", "at chance", "evaluated", *metrics]
    rows = []
    for run in found:
        if isinstance(run, UnreadableRun):  # listed in its place; why is said under the table
            rows.append([run.name, "unreadable", *("-" * (len(headers) - 2))])
            continue
        total = total_steps(run)
        label, results = final_evaluation(run)
        rows.append([run.name, run.state, f"{run.step}/{total}" if total else str(run.step), str(min(run.epoch, _epochs(run))),
                     cell(run.last_loss, 4), chance_cell(run), label or "-", *(cell(results.get(m)) for m in metrics)])
    print(render(headers, rows, args.markdown))
    for run in found:
        if isinstance(run, UnreadableRun):
            print(f"{run.name}: unreadable: {run.reason}")
    warnings = [line for line in map(chance_warning, runs) if line]
    if warnings:
        print()
        print("\n".join(warnings))
        print(f"norton: {ADVICE}")
    return 0


def chance_cell(run: RunSummary) -> str:
    """``steps at chance / steps watched``, with ``!`` while the run is (or ended) at chance; ``-`` unwatched."""
    record = run.chance
    if record is None:
        return "-"
    stalled = record.get("ended_at_chance") if record.get("state") == "end" else record.get("state") == "at_chance"
    return f"{record.get('steps_at_chance', 0)}/{record.get('steps', 0)}{' !' if stalled else ''}"


def chance_warning(run: RunSummary) -> str:
    """A line for a run whose loss is (or ended) at chance; '' otherwise."""
    record = run.chance
    if record is None:
        return ""
    if record.get("state") == "end" and record.get("ended_at_chance"):
        how = "ended at chance"
    elif record.get("state") == "at_chance":
        how = f"is at chance since step {record.get('step')}"
    else:
        return ""
    return (f"norton: warning: {run.name} {how}: loss {cell(record.get('loss'), 4)} against chance "
            f"{cell(record.get('chance'), 4)}, within {record.get('tolerance', 0):.0%} for "
            f"{record.get('steps_at_chance')} of {record.get('steps')} steps; its evaluation is of a model that has "
            "not learnt to pair clips with captions")


def cmd_compare(args: argparse.Namespace) -> int:
    from norton_core.evaluation.records import merge_records, record_files

    run_paths = [Path(p) for p in args.runs if (Path(p) / "recipe.json").is_file()]
    record_paths = [Path(p) for p in args.runs if not (Path(p) / "recipe.json").is_file()]
    runs = [read_run(p) for p in run_paths]
    names = unique_names(runs)
    if not record_paths:
        print(compare_evaluations(runs, names, args.markdown, args.all_metrics))
    else:
        merged, records = merge_records(record_files(record_paths))
        clash = sorted(set(merged) & set(names))
        if clash:
            raise NortonError(f"a run and evaluation records share the column name {clash[0]!r}; compare them apart")
        finals = {with_precision_label(name, run_precision(r)): final_evaluation(r)[1]
                  for name, r in zip(names, runs, strict=True)}
        print(render_columns({**finals, **merged}, args.markdown, args.all_metrics))
        print()
        print(record_sources(records, args.markdown))
    if len(runs) > 1 or not record_paths:
        print()
        print(compare_recipes(runs, names, args.markdown))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from norton_core.runs.plot import plot_runs

    runs = [read_run(p) for p in args.runs]
    out = plot_runs(runs, unique_names(runs), Path(args.output))
    print(f"norton: wrote {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from norton_core.runs.export import export_run

    out = export_run(Path(args.run), Path(args.out), log=print)
    print(f"norton: exported to {out}; load it with norton_core.runs.export.load({str(out)!r})")
    return 0


# ----------------------------------------------------------------------------------------------------------------


def compare_evaluations(runs: list[RunSummary], names: list[str], markdown: bool = False,
                        all_metrics: bool = False) -> str:
    """Each run's last evaluation side by side: the rows a paper reports (all with ``all_metrics``), with chance."""
    finals = {with_precision_label(name, run_precision(r)): final_evaluation(r)[1]
              for name, r in zip(names, runs, strict=True)}
    if not any(finals.values()):
        return "no evaluation in these runs"
    return render_columns(finals, markdown, all_metrics)


def render_columns(columns: dict[str, dict[str, float]], markdown: bool = False, all_metrics: bool = False) -> str:
    """Result sets side by side, as every evaluation table is laid out (chance column, the rows a paper reports)."""
    from norton_core.evaluation import render_report

    return render_report(columns, fmt="markdown" if markdown else "table", rows="all" if all_metrics else "paper")


#: what a record says about where its numbers come from, shown per model
_SOURCE_FIELDS = ("checkpoint", "eval_root", "generated", "precision", "norton_version")


def record_sources(records: dict[str, list[dict[str, Any]]], markdown: bool = False) -> str:
    """Per model of the merged records: its tasks and what made them (a field its tasks disagree on says so)."""
    rows = []
    for model, recs in records.items():
        cells = []
        for name in _SOURCE_FIELDS:
            values = list(dict.fromkeys(setting(r.get(name, "<absent>")) for r in recs))
            cells.append(values[0] if len(values) == 1 else "differs: " + " / ".join(values))
        rows.append([model, ", ".join(r["task"] for r in recs), *cells])
    return render(["model", "tasks", *_SOURCE_FIELDS], rows, markdown)


#: keys that differ between any two runs without saying anything about what they trained
_IGNORED = ("source", "run.name", "run.output_dir", "run.cache_dir", "run.threads", "train.num_workers", "logging")


def compare_recipes(runs: list[RunSummary], names: list[str], markdown: bool = False) -> str:
    flat = [dict(_flatten(r.recipe)) for r in runs]
    keys = sorted(set().union(*flat))
    differ = [k for k in keys if not any(k == i or k.startswith(i + ".") for i in _IGNORED)
              and len({repr(f.get(k, "<absent>")) for f in flat}) > 1]
    # where the runs use different components (loss "videoclip-nce" vs "norton"), their options are not comparable:
    # the name row says it, and the options are left out (with a note)
    swapped = [k[: -len(".name")] for k in differ if k.endswith(".name")]
    differ = [k for k in differ if not any(k.startswith(t + ".") and k != t + ".name" for t in swapped)]
    if not differ:
        return "the recipes agree (apart from where the runs are)"
    rows = [[k, *(setting(f.get(k, "<absent>")) for f in flat)] for k in differ]
    note = "".join(f"\n({t}: different components, so their options are not compared)" for t in swapped)
    return render(["recipe setting", *names], rows, markdown) + (f"\n{note}" if note else "")


def unique_names(runs: list[RunSummary]) -> list[str]:
    """Run names, made unique with their directory when two runs share one (the same recipe in two output dirs)."""
    names = [r.name for r in runs]
    return [n if names.count(n) == 1 else str(r.path) for n, r in zip(names, runs, strict=True)]


def total_steps(run: RunSummary) -> int:
    """Steps the whole run takes, as its last start said (0 for a run that has not started training)."""
    starts = [e["total_steps"] for e in run.events if e.get("event") == "start"
              and isinstance(e.get("total_steps"), int) and not isinstance(e["total_steps"], bool)]
    return max(int(starts[-1]), 0) if starts else 0


def _epochs(run: RunSummary) -> int:
    return int(run.recipe.get("train", {}).get("epochs", run.epoch))


def _flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.extend(_flatten(value, f"{prefix}{key}."))
        else:
            out.append((f"{prefix}{key}", value))
    return out

