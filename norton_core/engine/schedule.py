"""The learning-rate schedule: linear warm-up, then polynomial decay (fairseq's ``polynomial_decay``).

A pure function of the step, so a resume needs nothing but the step counter.
"""

from __future__ import annotations

from norton_core.recipe.tables import TrainConfig


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """The lr for the update that follows ``step`` completed updates (step 0 = the first update)."""
    if cfg.warmup_updates > 0 and step < cfg.warmup_updates:
        # fairseq warms up from lr/warmup (not exactly 0) so that the very first update moves the weights
        return cfg.lr * (step + 1) / cfg.warmup_updates
    if step >= cfg.total_updates:
        return cfg.end_lr
    span = max(1, cfg.total_updates - cfg.warmup_updates)
    remaining = 1.0 - (step - cfg.warmup_updates) / span
    return (cfg.lr - cfg.end_lr) * remaining ** cfg.power + cfg.end_lr
