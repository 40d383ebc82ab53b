"""The budget x noise study's answer as compact tables: one per noise regime and budget, metrics as rows.

``norton study studies/budget_noise.toml`` writes the full report (one table per metric, every arm a column). This
script reads the same cell records and lays them out the way the question is asked: for each regime and budget, the
first stage, Norton, and every other arm's paired per-seed difference from Norton at the same budget (95 %
intervals, Student t over seeds), then the same pooled over both regimes (paired by cell).

    python benchmarks/budget_noise_tables.py runs/studies/budget_noise --set run.threads=1
                                    # the study's output_dir, and the --set values it was run with
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from norton_core.evaluation.report import chance_level
from norton_core.study.runner import collect, final_value
from norton_core.study.spec import PRETRAIN, load_study
from norton_core.study.stats import fmt, mean_ci, paired_diff

STUDY = Path(__file__).resolve().parents[1] / "studies" / "budget_noise.toml"
BUDGETS = {"ln40": "40 steps, LayerNorm affines only (the demo's stage)",
           "all80": "80 steps, every parameter"}
OTHERS = ["nce", "no-video", "no-fne", "no-bucket", "mean-sim"]
LABELS = {
    "youcook2_clip/R@1": "clip R@1", "youcook2_clip/R@10": "clip R@10",
    "youcook2_video/capavg_R@1": "video-paragraph R@1, caption average",
    "youcook2_video/dtw_R@1": "video-paragraph R@1, DTW (reference)",
    "youcook2_video/dtw_centred_R@1": "video-paragraph R@1, DTW centred",
    "youcook2_video/otam_R@1": "video-paragraph R@1, OTAM (reference)",
    "youcook2_video/otam_centred_R@1": "video-paragraph R@1, OTAM centred",
    "htm_align/recall": "HTM-Align recall", "htm_align/auc": "HTM-Align AUC",
}


def tables(output_dir: Path, extra_set: tuple[str, ...] = ()) -> str:
    study = load_study(STUDY, output_dir=str(output_dir), extra_set=extra_set)
    results = collect(study)
    seeds = study.seeds
    regimes = [study.variant_label(v) for v in study.variant_values]
    out: list[str] = []

    def cells(arm: str, metric: str, labels: list[str], stage: str = "after") -> dict[tuple[str, int], float | None]:
        return {(label, s): final_value(results[label, s, arm], metric, stage)
                for label in labels for s in seeds if (label, s, arm) in results}

    for budget, title in BUDGETS.items():
        for labels, name in [([r], f"regime `{r}`") for r in regimes] + [(regimes, "both regimes, paired by cell")]:
            norton = f"norton-{budget}"
            n = len({k for k in cells(norton, study.metrics[0], labels)})
            out += [f"#### {title}: {name} ({n} cell{'s' * (n != 1)})", ""]
            smaller = [f"norton-{b}" for b in BUDGETS if b != budget][:1] if budget != next(iter(BUDGETS)) else []
            head = ["metric", "chance", "first stage", "norton"] + [f"{a} − norton" for a in OTHERS]
            head += [f"norton − {a}" for a in smaller]
            out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for metric in study.metrics:
                base = cells(norton, metric, labels)
                # each cell's own chance (its data has its own counts), averaged over the cells
                chances = [chance_level(metric, results[k].get("evaluation", {}).get("after", {}))
                           for k in results if k[2] == norton and k[0] in labels]
                chance = mean_ci([c for c in chances if c is not None])[0]
                row = [LABELS.get(metric, metric), fmt(chance, math.nan),
                       fmt(*mean_ci(list(cells(PRETRAIN, metric, labels).values()))[:2]),
                       fmt(*mean_ci(list(base.values()))[:2])]
                for arm in [f"{a}-{budget}" for a in OTHERS]:
                    mean, half, count = paired_diff(cells(arm, metric, labels), base)
                    row.append(fmt(mean, half) if count else "n/a")
                for arm in smaller:
                    mean, half, count = paired_diff(base, cells(arm, metric, labels))
                    row.append(fmt(mean, half) if count else "n/a")
                out.append("| " + " | ".join(row) + " |")
            out.append("")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", type=Path, help="the study's output directory (its cells/ are read)")
    parser.add_argument("--set", action="append", default=[], help="the --set values the study was run with")
    args = parser.parse_args()
    print(tables(args.output_dir, tuple(args.set)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
