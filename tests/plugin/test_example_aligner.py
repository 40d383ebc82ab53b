"""A third-party aligner owns its batch: its extra per-clip key, reshaped by its own collate, reaches a loss."""

from __future__ import annotations

import json

import pytest

from tests.plugin.installed import install_example, run_with


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return install_example(tmp_path_factory, "example_aligner")


def test_the_example_aligner_is_discovered(site):
    result = run_with(site, "-m", "norton_core.cli", "plugins")
    assert result.returncode == 0, result.stderr
    listing = {p["name"]: p for p in json.loads(result.stdout)}
    assert listing["example_aligner"]["distribution"] == "norton-example-aligner"
    assert listing["example_aligner"]["components"] == {"aligner": ["example-weighted"],
                                                         "loss": ["example-weighted-nce"]}


@pytest.mark.slow
def test_a_recipe_naming_the_aligner_trains_and_the_loss_receives_its_key(site, tmp_path):
    (tmp_path / "weighted.toml").write_text(
        'extends = "smoke_cpu"\nrequires = ["norton-example-aligner>=0.1"]\n\n'
        '[run]\nname = "weighted"\ncache_dir = "cache"\n\n'
        '[aligner]\nname = "example-weighted"\nclip_per_video = 4\nmax_len = 32\n\n'
        '[loss]\nname = "example-weighted-nce"\n\n[evaluation]\ntasks = []\n')
    result = run_with(site, "-m", "norton_core.cli", "run", "weighted.toml", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(x) for x in (tmp_path / "runs" / "weighted" / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "event" not in x]
    assert [x["step"] for x in steps] == [1, 2]
    for step in steps:  # the aligner's collate normalised the weights it added; the loss saw them
        assert step["clip_weight_mean"] == pytest.approx(1.0, abs=1e-6)
        assert 0.0 < step["clip_weight_min"] < 1.0
