"""Never silent at chance: whether a run's loss sits at the value a model that has learnt nothing gets.

A loss declares its chance values through :meth:`norton_core.Loss.chance_levels` (``2 ln B`` for a symmetric InfoNCE
over B pairs). A step is *at chance* when its loss is within ``[logging] chance_tolerance`` (a share, 3 % by
default) of the chance value of the batches it saw. Once at least ``[logging] chance_share`` of the steps so far
were at chance, the latest among them, after the warm-up and then at least :data:`MIN_STEPS` steps and a tenth of
the run (a run that starts at chance by design, with small first logits, is given that long to leave it), the run
says so: a warning line, a ``chance`` record in ``metrics.jsonl`` (which ``norton runs`` shows) and a marker on
every progress line while it lasts. A run whose last step is at chance and whose share of steps at chance is still
that high *ended at chance*: it ends with a warning beside its evaluation table. The counts live in the
checkpointed training state, so a resume continues them.

Two more things are said. Steps on retrieval batches (neighbouring videos, from ``retrieval.start_epoch`` on) are
also counted apart: when neighbours share steps their captions repeat inside a batch, which keeps even a model that
separates different steps well above zero loss, so the warning says how many of the steps at chance were on such
batches. And a run whose *first* loss is far above chance (at least :data:`ABOVE_FACTOR` x) is told so at once: its
logits start too large (raw dot products of long vectors), and such a run usually reaches chance by collapsing its
embeddings first, then sits there (the first stage's plateau on unfamiliar data); a larger temperature starts it at
chance instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import attrs

#: steps a run takes before a share of them says anything
MIN_STEPS = 5

#: a first loss at least this many times its chance value is said to start far above chance
ABOVE_FACTOR = 1.25

#: what to look at when a run's first loss is far above chance
ABOVE_ADVICE = ("the logits start too large: a model that starts there usually flattens them by making every clip "
                "alike, then sits at chance; raise the loss's temperature (loss.temperature, and the second stage's "
                "loss.clip_temperature to match) until the first loss is near chance")

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
    retrieval_steps: int = 0
    retrieval_at_chance: int = 0

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> ChanceCount:
        fields = {f.name for f in attrs.fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in fields})


class ChanceWatch:
    """Rank 0's watch over the step losses. ``observe`` returns the record to write when something changed."""

    def __init__(self, tolerance: float, share: float, count: ChanceCount, log: Callable[[str], None],
                 total_steps: int = 0, warmup_steps: int = 0) -> None:
        self.tolerance, self.share, self.count, self.log = tolerance, share, count, log
        # the warm-up's small rates are not expected to move a loss off chance: the grace starts after them
        self.min_steps = warmup_steps + max(MIN_STEPS, total_steps // 10)

    def share_at_chance(self) -> float:
        return self.count.at_chance / self.count.steps if self.count.steps else 0.0

    def stalled(self) -> bool:
        """At least ``share`` of at least ``min_steps`` steps were at chance."""
        return self.count.steps >= self.min_steps and self.share_at_chance() >= self.share

    def observe(self, step: int, loss: float, chance: float, retrieved: bool = False) -> dict[str, Any] | None:
        """Count one step (``retrieved``: its batches were drawn from neighbouring videos); say (once) when the
        run's first loss is far above chance, when the run becomes stalled, and when it stops being so."""
        count = self.count
        first = count.steps == 0
        count.steps += 1
        count.last_at_chance = at_chance(loss, chance, self.tolerance)
        count.at_chance += count.last_at_chance
        count.retrieval_steps += retrieved
        count.retrieval_at_chance += retrieved and count.last_at_chance
        count.chance, count.loss = chance, loss
        if first and chance > 0 and math.isfinite(loss) and loss >= ABOVE_FACTOR * chance:
            self.log(f"norton: warning: the first loss {loss:.4f} is {loss / chance:.2f}x its chance value "
                     f"{chance:.4f} (step {step}): {ABOVE_ADVICE}")
            return self.record("above_chance", step, loss)
        if self.stalled() and count.last_at_chance and not count.flagged:
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
        text = (f"loss {count.loss:.4f} against chance {count.chance:.4f} (within {self.tolerance:.0%} for "
                f"{count.at_chance} of {count.steps} steps")
        if count.retrieval_steps:
            text += (f"; {count.retrieval_at_chance} of them among the {count.retrieval_steps} steps on retrieval "
                     "batches, whose captions repeat when neighbouring videos share steps")
        return text + ")"

    def record(self, kind: str, step: int, loss: float) -> dict[str, Any]:
        """The ``chance`` record of ``metrics.jsonl``: ``state`` is ``above_chance``, ``at_chance``, ``left_chance``
        or ``end``."""
        count = self.count
        return {"event": "chance", "state": kind, "step": step, "loss": loss, "chance": count.chance,
                "steps": count.steps, "steps_at_chance": count.at_chance, "retrieval_steps": count.retrieval_steps,
                "retrieval_steps_at_chance": count.retrieval_at_chance, "tolerance": self.tolerance,
                "share": self.share, "ended_at_chance": self.ended_at_chance()}
