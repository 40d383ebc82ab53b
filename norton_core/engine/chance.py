"""Never silent at chance: whether a run's loss sits at the value a model that has learnt nothing gets.

A loss declares its chance values through :meth:`norton_core.Loss.chance_levels` (``2 ln B`` for a symmetric InfoNCE
over B pairs). A step is *at chance* when its loss is within ``[logging] chance_tolerance`` (a share, 3 % by
default) of the chance value of the batches it saw. Once at least ``[logging] chance_share`` of the steps so far
were at chance (after at least :data:`MIN_STEPS` steps) the run says so: a warning line, a ``chance`` record in
``metrics.jsonl`` (which ``norton runs`` shows) and a marker on every progress line while it lasts. A run whose
last step is at chance and whose share of steps at chance is still that high *ended at chance*: it ends with a
warning beside its evaluation table. The counts live in the checkpointed training state, so a resume continues them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import attrs

#: steps a run takes before a share of them says anything
MIN_STEPS = 5

#: what to look at when a run sits at chance (said with every warning)
ADVICE = ("look at train.lr and train.warmup_updates (a rate too low, or a warm-up too short for new layers), "
          "model.freeze (which parameters train), the loss's temperature, and whether the data pairs clips with "
          "the captions that describe them")


def at_chance(value: float, chance: float, tolerance: float) -> bool:
    """``value`` within ``tolerance`` x ``chance`` of ``chance`` (a chance value of 0 says nothing)."""
    return chance > 0 and math.isfinite(value) and abs(value - chance) <= tolerance * chance


def chance_levels_of(loss_fn: Any, clips: int) -> dict[str, float]:
    """The loss's declared chance values for a batch of ``clips`` pairs; empty when it declares none."""
    method = getattr(loss_fn, "chance_levels", None)
    levels = method(clips) if callable(method) else {}
    return {str(k): float(v) for k, v in (levels or {}).items()}


@attrs.define
class ChanceCount:
    """The resumable part: steps watched, steps at chance, whether the run has been said to be at chance."""

    steps: int = 0
    at_chance: int = 0
    flagged: bool = False
    last_at_chance: bool = False
    chance: float = math.nan
    loss: float = math.nan

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> ChanceCount:
        fields = {f.name for f in attrs.fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in fields})


class ChanceWatch:
    """Rank 0's watch over the step losses. ``observe`` returns the record to write when something changed."""

    def __init__(self, tolerance: float, share: float, count: ChanceCount, log: Callable[[str], None]) -> None:
        self.tolerance, self.share, self.count, self.log = tolerance, share, count, log

    def share_at_chance(self) -> float:
        return self.count.at_chance / self.count.steps if self.count.steps else 0.0

    def stalled(self) -> bool:
        """At least ``share`` of at least :data:`MIN_STEPS` steps were at chance."""
        return self.count.steps >= MIN_STEPS and self.share_at_chance() >= self.share

    def observe(self, step: int, loss: float, chance: float) -> dict[str, Any] | None:
        """Count one step; say (once) when the run becomes stalled, and when it stops being so."""
        count = self.count
        count.steps += 1
        count.last_at_chance = at_chance(loss, chance, self.tolerance)
        count.at_chance += count.last_at_chance
        count.chance, count.loss = chance, loss
        if self.stalled() and not count.flagged:
            count.flagged = True
            self.log(f"norton: warning: the loss is at chance at step {step}: {self.describe()}; {ADVICE}")
            return self.record("at_chance", step, loss)
        if count.flagged and not self.stalled():
            count.flagged = False
            self.log(f"norton: the loss left chance at step {step} (loss {loss:.4f}, chance {chance:.4f}; "
                     f"{count.at_chance} of {count.steps} steps were at chance)")
            return self.record("left_chance", step, loss)
        return None

    def marker(self) -> str:
        """The progress lines' note while the run is stalled ('' otherwise)."""
        return f"AT CHANCE ({self.count.chance:.4f})" if self.count.flagged else ""

    def ended_at_chance(self) -> bool:
        return self.stalled() and self.count.last_at_chance

    def end_warning(self, run_name: str) -> str:
        """The line a run that ended at chance ends with (beside its evaluation table)."""
        return (f"norton: warning: run {run_name} ended at chance: {self.describe()}; an evaluation of it is of a "
                f"model that has not learnt to pair clips with captions; {ADVICE}")

    def describe(self) -> str:
        count = self.count
        return (f"loss {count.loss:.4f} against chance {count.chance:.4f} (within {self.tolerance:.0%} for "
                f"{count.at_chance} of {count.steps} steps)")

    def record(self, kind: str, step: int, loss: float) -> dict[str, Any]:
        """The ``chance`` record of ``metrics.jsonl``: ``state`` is ``at_chance``, ``left_chance`` or ``end``."""
        count = self.count
        return {"event": "chance", "state": kind, "step": step, "loss": loss, "chance": count.chance,
                "steps": count.steps, "steps_at_chance": count.at_chance, "tolerance": self.tolerance,
                "share": self.share, "ended_at_chance": self.ended_at_chance()}
