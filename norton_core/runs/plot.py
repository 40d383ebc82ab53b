"""``norton plot``: one PNG with a panel per loss term, one for the learning rate, and a bar chart of the main
evaluation figures across runs (matplotlib, the ``plot`` extra)."""

from __future__ import annotations

from pathlib import Path

from norton_core.errors import NortonError
from norton_core.runs.read import MAIN_METRICS, RunSummary, final_evaluation

#: step-record keys that are neither loss terms nor the learning rate
_OTHER = ("step", "epoch", "time", "lr", "grad_norm", "clips_per_s")


def loss_terms(runs: list[RunSummary]) -> list[str]:
    """Every loss term the runs logged, ``loss`` first."""
    keys = {k for r in runs for s in r.steps for k, v in s.items() if k not in _OTHER and isinstance(v, (int, float))}
    return sorted(keys, key=lambda k: (k != "loss", k))


def plot_runs(runs: list[RunSummary], names: list[str], out: Path) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed (clusters, CI)
        import matplotlib.pyplot as plt
    except ImportError:
        raise NortonError("norton plot needs matplotlib: pip install 'norton[plot]'") from None
    if out.suffix.lower() != ".png":
        raise NortonError(f"-o {out}: norton plot writes PNG files; name it FILE.png")
    if not any(r.steps for r in runs):
        raise NortonError(f"no step records in {', '.join(str(r.path) for r in runs)}/metrics.jsonl "
                          "(was [logging] sinks without \"jsonl\"?)")
    terms = loss_terms(runs)
    evaluated = [(n, final_evaluation(r)[1]) for n, r in zip(names, runs, strict=True)]
    metrics = [m for m in MAIN_METRICS if any(m in e for _, e in evaluated)]
    panels = [*terms, "lr", *(["evaluation"] if metrics else [])]
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        if panel == "evaluation":
            _bars(ax, evaluated, metrics)
            continue
        for i, (name, run) in enumerate(zip(names, runs, strict=True)):
            points = [(s["step"], s[panel]) for s in run.steps if isinstance(s.get(panel), (int, float))]
            if points:  # a run keeps its colour in every panel, also where another run has no such term
                ax.plot(*zip(*points, strict=True), label=name, linewidth=1.2, color=f"C{i % 10}")
        ax.set_title(panel)
        ax.set_xlabel("step")
        if panel == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if len(runs) > 1:
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=f"C{i % 10}", label=name) for i, name in enumerate(names)]
        fig.legend(handles=handles, loc="upper center", ncol=min(len(runs), 4), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.94 if len(runs) > 1 else 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=72)
    plt.close(fig)
    return out


def _bars(ax: object, evaluated: list[tuple[str, dict[str, float]]], metrics: list[str]) -> None:
    width = 0.8 / max(len(evaluated), 1)
    for i, (name, results) in enumerate(evaluated):
        xs = [m + (i - (len(evaluated) - 1) / 2) * width for m in range(len(metrics))]
        ax.bar(xs, [results.get(m, 0.0) for m in metrics], width, label=name,  # type: ignore[attr-defined]
               color=f"C{i % 10}")
    ax.set_xticks(range(len(metrics)))  # type: ignore[attr-defined]
    ax.set_xticklabels([m.replace("/", "\n") for m in metrics], fontsize=7)  # type: ignore[attr-defined]
    ax.set_title("evaluation (%)")  # type: ignore[attr-defined]
    ax.grid(alpha=0.3, axis="y")  # type: ignore[attr-defined]
