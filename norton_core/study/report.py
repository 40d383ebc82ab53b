"""The study's markdown report and plots: each metric as mean ± 95 % interval over seeds per (variant, arm), the
paired per-seed difference of every arm against the baseline, and the ground-truth diagnostics."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from norton_core.study.runner import PRETRAIN, final_value
from norton_core.study.spec import Study
from norton_core.study.stats import fmt, mean_ci, paired_diff

DIAGNOSTICS = [
    ("bucket_precision", "bucket precision (flagged captions that are non-visual)"),
    ("bucket_recall", "bucket recall (non-visual captions flagged)"),
    ("bucket_visual_flag_rate", "visual captions flagged"),
    ("plan_on_step", "plan mass on the true step"),
    ("plan_on_step_chance", "same, uniform plan"),
    ("faulty_on_duplicates", "faulty-negative mass on true duplicates"),
    ("faulty_on_duplicates_chance", "same, uniform plan"),
]


def chance_of(metric: str, evaluation: dict[str, Any]) -> float | None:
    """Chance level of a metric from the same evaluation's counts (None when unknown)."""
    task, _, name = metric.partition("/")
    if name.startswith("R@") and name[2:].isdigit():
        count = evaluation.get(f"{task}/pairs") or evaluation.get(f"{task}/videos")
        return 100.0 * int(name[2:]) / count if count else None
    if metric == "htm_align/recall":
        return evaluation.get("htm_align/recall_chance")
    if name == "auc":
        return 50.0
    return None


def _by_seed(results: dict[Any, dict[str, Any]], label: str, arm: str, pick: Any, seeds: tuple[int, ...]
             ) -> dict[int, float | None]:
    return {s: pick(results[label, s, arm]) for s in seeds if (label, s, arm) in results}


def _last_diag(record: dict[str, Any], key: str, first: bool = False) -> float | None:
    diags = record.get("diagnostics", {})
    if not diags:
        return None
    epoch = min(diags, key=int) if first else max(diags, key=int)
    value = diags[epoch].get(key)
    return None if value is None else float(value)


def build_report(study: Study, results: dict[Any, dict[str, Any]], *, note: str = "") -> str:
    labels = [study.variant_label(v) for v in study.variant_values]
    arms = [a.name for a in study.arms]
    has_pre = any(k[2] == PRETRAIN for k in results)
    lines = [f"# Study `{study.name}`", ""]
    if note:
        lines += [note, ""]
    kind = "named variants" if study.variant_cases else f"variants of `{study.variant_key or '-'}`"
    lines += [f"Base recipe `{study.base.name}`; seeds {list(study.seeds)}; {kind}: "
              f"{', '.join(labels)}. Values are means ± the 95 % interval over seeds (Student t); "
              f"`arm − baseline` is the paired per-seed difference (the baseline is `{study.baseline}` unless the "
              f"arm names its own). Cells finished: "
              f"{sum(1 for k in results if k[2] != PRETRAIN)} of {len(labels) * len(study.seeds) * len(arms)}.", ""]
    lines += _data_lines(results, labels)
    if study.variant_cases:
        lines += ["Variants (overrides of every stage):", ""]
        for label in labels:
            lines.append(f"- `{label}`: {', '.join(f'`{s}`' for s in study.variant_cases[label]) or 'none'}")
        lines.append("")
    lines += ["Arms (overrides of the last stage):", ""]
    for spec in study.arms:
        lines.append(f"- `{spec.name}`: {', '.join(f'`{s}`' for s in spec.set) or 'the base recipe'}")
    lines.append("")
    for metric in study.metrics:
        lines += [f"## {metric}", ""]
        others = [a for a in arms if study.baseline_of(a) != a]
        head = ["variant", "chance"] + (["untrained", "first stage"] if has_pre else []) + arms
        head += [f"{a} − {study.baseline_of(a)}" for a in others]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for label in labels:
            row = [label, _chance(results, metric, [label])]
            if has_pre:
                for stage in ("before", "after"):
                    vals = _by_seed(results, label, PRETRAIN, lambda r, m=metric, s=stage: final_value(r, m, s),
                                    study.seeds)
                    row.append(fmt(*mean_ci(list(vals.values()))[:2]))
            for arm in arms:
                vals = _by_seed(results, label, arm, lambda r, m=metric: final_value(r, m), study.seeds)
                row.append(fmt(*mean_ci(list(vals.values()))[:2]))
            for arm in others:
                vals = _by_seed(results, label, arm, lambda r, m=metric: final_value(r, m), study.seeds)
                base_vals = _by_seed(results, label, study.baseline_of(arm), lambda r, m=metric: final_value(r, m),
                                     study.seeds)
                mean, half, n = paired_diff(vals, base_vals)
                row.append(fmt(mean, half) if n else "n/a")
            lines.append("| " + " | ".join(row) + " |")
        if len(labels) > 1:
            lines.append("| " + " | ".join(_pooled_row(study, results, labels, metric, arms, others, has_pre)) + " |")
        lines.append("")
    if study.diagnostics:
        lines += ["## Ground-truth diagnostics (held-out generated videos, last epoch; start of the stage → end)", "",
                  "A caption is flagged when over half of its transport mass goes to the alignable prompt bucket. "
                  "n/a: undefined (nothing flagged, or no non-visual caption).", ""]
        head = ["variant", "diagnostic"] + arms
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for label in labels:
            for key, title in DIAGNOSTICS:
                row = [label, title]
                for arm in arms:
                    end = mean_ci(list(_by_seed(results, label, arm, lambda r, k=key: _last_diag(r, k),
                                                study.seeds).values()))
                    start = mean_ci(list(_by_seed(results, label, arm, lambda r, k=key: _last_diag(r, k, True),
                                                  study.seeds).values()))
                    row.append(f"{fmt(start[0], math.nan)} → {fmt(*end[:2])}")
                lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


#: stores listed per variant (a generated source makes one per seed)
SHOWN_STORES = 3


def _data_lines(results: dict[Any, dict[str, Any]], labels: list[str]) -> list[str]:
    """What the seeds varied, and the training store(s) each variant read (from the cells' provenance)."""
    seeded_sources: set[str] = set()
    fixed: dict[str, Any] = {}
    stores: dict[str, dict[tuple[str, str, str], None]] = {label: {} for label in labels}
    for (label, _, _), record in results.items():
        data = (record.get("provenance") or {}).get("data") or {}
        source = data.get("source")
        if source is None:
            continue
        if "data.seed" in record.get("seeded", ()):
            seeded_sources.add(source)
        else:
            fixed.setdefault(source, (record["provenance"].get("recipe") or {}).get("data", {}).get("seed"))
        train = data.get("train") or {}
        stores.setdefault(label, {})[source, str(train.get("path")), str(train.get("manifest_sha256"))[:12]] = None
    if not any(stores.values()):
        return []
    varied = "Each seed sets `run.seed` of every stage (initial weights, batch order, retrieval rounds)"
    if seeded_sources:
        varied += (f" and `data.seed` of the {_names(seeded_sources)} data source (each seed draws its own data "
                   "set)")
    others = [f"the `{s}` source has no seed (every seed reads the same data)" if v is None else
              f"`data.seed` of the `{s}` source is fixed at {v} by the study" for s, v in sorted(fixed.items())
              if s not in seeded_sources]
    lines = [varied + ("; " + "; ".join(others) if others else "") + ".", "",
             "Training data of each variant (store, sha256 of its manifest):", ""]
    for label in labels:
        found = list(stores.get(label, {}))
        shown = ", ".join(f"`{path}` ({sha})" for _, path, sha in found[:SHOWN_STORES])
        more = f" and {len(found) - SHOWN_STORES} more" if len(found) > SHOWN_STORES else ""
        kinds = _names({source for source, _, _ in found})
        count = f"{len(found)} stores: " if len(found) > 1 else ""
        lines.append(f"- `{label}`: {kinds}, {count}{shown}{more}" if found else f"- `{label}`: no finished cell")
    return [*lines, ""]


def _names(sources: set[str]) -> str:
    return ", ".join(f"`{s}`" for s in sorted(sources))


def _chance(results: dict[Any, dict[str, Any]], metric: str, labels: list[str]) -> str:
    """The chance level of ``metric`` over the arms' cells of these variants (it depends on each cell's counts)."""
    chances = [chance_of(metric, r.get("evaluation", {}).get("after", {}))
               for (label, _, arm), r in results.items() if label in labels and arm != PRETRAIN]
    chances = [c for c in chances if c is not None]
    return fmt(*mean_ci(chances)[:2]) if chances else "-"


def _pooled_row(study: Study, results: dict[Any, dict[str, Any]], labels: list[str], metric: str, arms: list[str],
                others: list[str], has_pre: bool) -> list[str]:
    """Every variant together: means over all (variant, seed) cells, differences paired cell by cell. This asks
    whether an arm is ahead across the variants, not within one of them."""
    def cells(arm: str, stage: str = "after") -> dict[Any, float | None]:
        return {(label, s): final_value(results[label, s, arm], metric, stage)
                for label in labels for s in study.seeds if (label, s, arm) in results}

    row = ["all variants (paired by cell)", _chance(results, metric, labels)]
    if has_pre:
        row += [fmt(*mean_ci(list(cells(PRETRAIN, stage).values()))[:2]) for stage in ("before", "after")]
    row += [fmt(*mean_ci(list(cells(arm).values()))[:2]) for arm in arms]
    for arm in others:
        mean, half, n = paired_diff(cells(arm), cells(study.baseline_of(arm)))
        row.append(fmt(mean, half) if n else "n/a")
    return row


def write_plots(study: Study, results: dict[Any, dict[str, Any]], out_dir: Path) -> list[Path] | None:
    """One PNG per metric (metric against the variant value, one line per arm, 95 % intervals as error bars);
    None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    values = list(study.variant_values)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    xs = values if numeric else list(range(len(values)))
    paths = []
    keys = [(m, lambda r, m=m: final_value(r, m)) for m in study.metrics]
    if study.diagnostics:
        keys += [(f"diagnostics/{k}", lambda r, k=k: _last_diag(r, k)) for k, _ in DIAGNOSTICS if "chance" not in k]
    for metric, pick in keys:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for arm in study.arms:
            stats = [mean_ci(list(_by_seed(results, study.variant_label(v), arm.name, pick, study.seeds).values()))
                     for v in values]
            ax.errorbar(xs, [s[0] for s in stats], yerr=[0 if math.isnan(s[1]) else s[1] for s in stats],
                        marker="o", capsize=3, label=arm.name)
        ax.set_xlabel(study.variant_key or "variant")
        if not numeric:
            ax.set_xticks(xs, [str(v) for v in values])
        ax.set_ylabel(metric)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / (metric.replace("/", "_").replace("@", "at") + ".png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths
