"""Checks at the engine's boundaries that no schema can make alone: recipe values bounded by the data (known only
once the store is open, so checked there, before any work), and what a loss plugin returns."""

from __future__ import annotations

from typing import Any

from norton_core.errors import PluginError, RecipeError


def check_data_bounds(recipe: Any, sampleable: int, store: Any, world_size: int) -> None:
    """Refuse sizes the training store cannot fill, before a retrieval round or a batch is built.

    One optimizer step takes ``world_size x grad_accum`` batches of ``videos_per_batch`` distinct videos from one
    epoch, and a retrieval query has at most every other video as a neighbour.
    """
    tcfg, rcfg = recipe.train, recipe.retrieval
    has = f"the training store {getattr(store, 'path', '(in memory)')} has {sampleable} sampleable videos"
    problems = []
    per_step = world_size * tcfg.grad_accum
    if tcfg.videos_per_batch * per_step > sampleable:
        problems.append(
            f"{recipe.source}: train.videos_per_batch: {tcfg.videos_per_batch} videos x {per_step} batch(es) per step "
            f"(world_size {world_size} x train.grad_accum {tcfg.grad_accum}) need {tcfg.videos_per_batch * per_step} "
            f"videos, but {has}; at most {sampleable // per_step}")
    retrieves = rcfg.enabled and rcfg.start_epoch <= tcfg.epochs
    if retrieves and rcfg.num_cands > sampleable:
        problems.append(f"{recipe.source}: retrieval.num_cands: {rcfg.num_cands} neighbours per query, but {has}; "
                        f"at most {sampleable}")
    if problems:
        raise RecipeError(problems=problems)


def loss_terms(terms: Any, recipe: Any, plugins: Any) -> dict[str, Any]:
    """A loss's output, which must be a dict holding the scalar ``"loss"`` to optimise."""
    if isinstance(terms, dict) and "loss" in terms:
        return terms
    name = recipe.components["loss"].name
    provider = ""
    try:
        provider = f" from {plugins.registry.get('loss', name).provider}"
    except (AttributeError, KeyError, PluginError):
        pass
    got = f"a dict with keys {sorted(map(str, terms))}" if isinstance(terms, dict) else f"a {type(terms).__name__}"
    raise PluginError(f"loss {name!r}{provider} returned {got}; a loss must return a dict with the scalar tensor "
                      "'loss' to optimise (other '*_loss' terms are logged)")
