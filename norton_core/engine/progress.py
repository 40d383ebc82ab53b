"""What a run tells its user while it trains: a bar in a terminal, one line every ``train.log_every`` steps
elsewhere (SLURM, nohup, CI), both against the whole run's steps (all epochs, honouring ``max_steps``)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

#: step-record keys that are not loss terms (shown on their own, or not at all)
_NOT_TERMS = ("lr", "grad_norm", "clips_per_s", "step", "epoch", "time")


def steps_per_epoch(videos: int, videos_per_batch: int, per_step: int) -> int:
    """Optimizer steps in one epoch: random and retrieved epochs both cut ``videos // V`` batches."""
    return (videos // videos_per_batch) // per_step


def planned_steps(train: Any, per_epoch: int) -> int:
    """Steps of the whole run: every epoch, cut at ``max_steps`` (``train`` is the config or its dict)."""
    get = (lambda k: train[k]) if isinstance(train, Mapping) else (lambda k: getattr(train, k))
    total = int(get("epochs")) * per_epoch
    return min(total, int(get("max_steps"))) if int(get("max_steps")) > 0 else total


def clock(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Rank 0's report of the training steps. ``tty=None`` asks whether stderr is a terminal."""

    def __init__(self, total: int, done: int, epochs: int, log_every: int, log: Callable[[str], None],
                 enabled: bool = True, tty: bool | None = None) -> None:
        self.total, self.start_step, self.epochs, self.log_every, self.log = total, done, epochs, log_every, log
        self.enabled = enabled
        self.began = time.perf_counter()
        self.bar: Any = None
        if enabled and (sys.stderr.isatty() if tty is None else tty):
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit="step", dynamic_ncols=True, file=sys.stderr)

    def epoch(self, epoch: int) -> None:
        if self.bar is not None:
            self.bar.set_description(f"epoch {epoch}/{self.epochs}")

    def eta(self, step: int) -> float | None:
        """Seconds left for the whole run at the pace of this process so far (None before its first step)."""
        done = step - self.start_step
        if done <= 0:
            return None
        return (time.perf_counter() - self.began) / done * max(self.total - step, 0)

    def step(self, step: int, epoch: int, metrics: Mapping[str, float], note: str = "") -> None:
        """After each optimizer step: the bar moves, or (without a terminal) a line every ``log_every`` steps and
        at the last step. ``note`` is shown with them (a loss at chance)."""
        if not self.enabled:
            return
        if self.bar is not None:
            extra = {"note": note} if note else {}
            self.bar.set_postfix(loss=f"{metrics.get('loss', float('nan')):.4f}", lr=f"{metrics['lr']:.2e}",
                                 clips_s=f"{metrics['clips_per_s']:.1f}", **extra, refresh=False)
            self.bar.update(1)
        elif step % self.log_every == 0 or step == self.total:
            self.log(self.line(step, epoch, metrics, note))

    def line(self, step: int, epoch: int, metrics: Mapping[str, float], note: str = "") -> str:
        terms = [k for k in metrics if k not in _NOT_TERMS]
        terms.sort(key=lambda k: (k != "loss", k))
        eta = self.eta(step)
        parts = [f"step {step}/{self.total}", f"epoch {epoch}/{self.epochs}",
                 " ".join(f"{k} {metrics[k]:.4f}" for k in terms),
                 f"lr {metrics['lr']:.2e}", f"{metrics['clips_per_s']:.1f} clips/s",
                 f"elapsed {clock(time.perf_counter() - self.began)}",
                 f"ETA {clock(eta) if eta is not None else '?'}", note]
        return "norton: " + " | ".join(p for p in parts if p)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
