"""Preemption as a cluster scheduler does it: SIGTERM to the whole process group of a run with DataLoader workers,
from an unrelated process, at random moments. Each run stops at a step boundary with that step committed and no
worker lost (``benchmarks/preempt_probe.py`` repeats it 20 times and more, with resumes)."""

from __future__ import annotations

import os
import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.engine import scheduler


@pytest.mark.slow
def test_sigterm_to_the_group_at_random_moments_never_kills_a_run_with_workers(tmp_path):
    seed = int(os.environ.get("NORTON_TEST_SEED", random.randrange(1_000_000)))
    rng = random.Random(seed)
    # three runs at once (they share the machine's cores, which spreads the moments further), each with workers
    # that have a thread born before worker_init_fn (see tests/engine/fakes.py: thread_at_fork). The first two
    # (2 x 60 steps) outlast their 2.5 s window, so some run always gets the signal while it trains; the third
    # (2 x 30 steps) gets it anywhere from its start to after its end, while it exits
    plans = [(scheduler.write_recipe(tmp_path, "trial0", workers=2, videos=240), rng.uniform(0.0, 2.5)),
             (scheduler.write_recipe(tmp_path, "trial1", workers=3, videos=240), rng.uniform(0.0, 2.5)),
             (scheduler.write_recipe(tmp_path, "trial2", workers=2, videos=120), rng.uniform(0.0, 4.0))]
    with ThreadPoolExecutor(len(plans)) as pool:
        trials = list(pool.map(lambda plan: scheduler.preempt_once(*plan), plans))
    for trial in trials:
        assert trial.outcome in ("preempted", "finished"), f"seed {seed}: {trial}"
        assert not trial.traceback, f"seed {seed}: {trial.tail}"
    assert any(t.outcome == "preempted" for t in trials), f"seed {seed}: no signal reached a run: {trials}"
