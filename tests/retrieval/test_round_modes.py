"""Reproduction switches of retrieval rounds: the reference's per-rank indexes and its short batches."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from norton_core import build
from norton_core.engine.loader import BatchDataset
from norton_core.retrieval.round import neighbour_batches, per_share_batches, reference_shares


@pytest.mark.parametrize(("n", "world"), [(10, 2), (11, 2), (7, 3)])
def test_shares_are_the_references_distributed_sampler_without_set_epoch(n, world):
    from torch.utils.data import DistributedSampler

    for rank, share in enumerate(reference_shares(n, world)):
        sampler = DistributedSampler(list(range(n)), num_replicas=world, rank=rank, shuffle=True, seed=0)
        assert share.tolist() == list(dict.fromkeys(iter(sampler)))
    # every video is in a share; the sampler's padding repeats a few in a second share, as in the reference
    assert set(np.concatenate(reference_shares(n, world)).tolist()) == set(range(n))


def test_per_rank_batches_only_hold_neighbours_from_one_share(norton_plugins):
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(40, 8)).astype(np.float32)
    shares = reference_shares(40, 2)
    positions, _, _, filled, _ = per_share_batches(
        matrix, lambda: build("retrieval_backend", "exact", {}, plugins=norton_plugins, seed=0),
        per_batch=4, num_cands=12, shares=2, keep_short=False, seed=1, epoch=1)
    assert positions.shape == (sum(len(s) // 4 for s in shares), 4) and filled == 1.0
    assert not set(shares[0].tolist()) & set(shares[1].tolist())  # 40 videos split evenly: no padding repeats
    owner = {int(v): r for r, share in enumerate(shares) for v in share}
    for row in positions:
        assert len({owner[int(v)] for v in row}) == 1  # searched inside one share only
    first = len(shares[0]) // 4
    assert {owner[int(v)] for v in positions[:first].ravel()} == {0}  # concatenated in rank order


def test_a_short_neighbour_list_stays_a_short_batch_when_asked():
    neighbours = np.asarray([[3, -1, -1], [0, 1, 2]])
    queries = np.asarray([5, 4])
    topped = neighbour_batches(neighbours, queries, 4, 10, random.Random(0))
    kept = neighbour_batches(neighbours, queries, 4, 10, random.Random(0), keep_short=True)
    assert (topped >= 0).all() and len(set(topped[0].tolist())) == 4
    assert kept[0].tolist() == [5, 3, -1, -1] and (kept[1] >= 0).all()
    assert BatchDataset(None, None, kept, 0, 1, "train").batches[0] == [5, 3]  # -1 is not a video


@pytest.mark.slow
def test_the_smoke_recipe_trains_with_the_reference_retrieval(tmp_path, norton_plugins):
    from pathlib import Path

    from norton_core.engine import train
    from norton_core.recipe.load import load_recipe

    recipe = load_recipe(Path(__file__).parents[2] / "recipes" / "smoke_cpu.toml", plugins=norton_plugins, overrides=[
        f'run.output_dir="{tmp_path / "runs"}"', f'run.cache_dir="{tmp_path / "cache"}"', 'retrieval.index="per_rank"',
        "retrieval.index_shares=2", 'retrieval.short_batches="keep"', "retrieval.num_cands=2", "evaluation.tasks=[]"])
    result = train(recipe, plugins=norton_plugins)
    assert result.complete and result.step == 2
    lines = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    (round_,) = [x for x in lines if x.get("event") == "retrieval"]
    assert round_["short_batches"] > 0  # num_cands 2 < V - 1 = 3: lists are short, and kept short
    assert torch.isfinite(torch.tensor([x["loss"] for x in lines if "event" not in x])).all()
