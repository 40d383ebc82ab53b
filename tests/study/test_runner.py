"""``norton study`` on a store prepared with ``norton prepare how2``: the seeds vary ``run.seed`` only, the report
pairs the arms seed by seed and names the store, and a finished cell is reused only when its recipe and data are
the ones asked for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from norton_core.cli import main
from norton_core.errors import RecipeError
from norton_core.plugin.manager import default_plugins
from norton_core.study.runner import plan
from norton_core.study.spec import load_study
from norton_core.study.stats import fmt, mean_ci, paired_diff
from tests.study.tiny import how2_recipe, study_file

R10 = "youcook2_clip/R@10"


def test_a_prepared_store_has_no_data_seed_to_set(how2_data: tuple[Path, Path], tmp_path: Path) -> None:
    base = how2_recipe(tmp_path / "base.toml", *how2_data)
    stages, _ = plan(load_study(study_file(tmp_path / "s.toml", base, tmp_path / "out")), default_plugins())
    assert len(stages) == 4 and all(s.seeded == ("run.seed",) for s in stages)
    assert not any(o.startswith("data.seed") for s in stages for o in s.overrides)


def test_diagnostics_without_ground_truth_are_refused_before_training(how2_data: tuple[Path, Path],
                                                                      tmp_path: Path) -> None:
    study = study_file(tmp_path / "s.toml", how2_recipe(tmp_path / "base.toml", *how2_data), tmp_path / "out")
    study.write_text("diagnostics = true\n" + study.read_text())
    with pytest.raises(RecipeError) as err:
        plan(load_study(study), default_plugins())
    assert err.value.lines() == [f"{study}: {arm}: diagnostics = true needs the ground truth of generated data, and "
                                 "the 'how2' data source has none: set diagnostics = false in the study (cells: base "
                                 "seed 0, base seed 1)" for arm in ("norton", "nce")]


@pytest.mark.slow
def test_two_seeds_two_arms_on_a_prepared_store(how2_data: tuple[Path, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    store, _ = how2_data
    base = how2_recipe(tmp_path / "base.toml", *how2_data)
    assert main(["study", str(study_file(tmp_path / "s.toml", base, tmp_path / "out"))]) == 0
    cells = tmp_path / "out" / "cells" / "base"
    records = {(seed, arm): json.loads((cells / f"seed{seed}" / f"{arm}.json").read_text())
               for seed in (0, 1) for arm in ("norton", "nce")}
    for (seed, _), record in records.items():
        assert record["provenance"]["recipe"]["run"]["seed"] == seed and record["seeded"] == ["run.seed"]
        assert record["provenance"]["data"]["source"] == "how2"
        assert record["provenance"]["data"]["train"]["path"] == str(store.absolute())
        assert record["weights_sha256"] and len(record["weights_sha256"]) == 64
    manifest = {r["provenance"]["data"]["train"]["manifest_sha256"] for r in records.values()}
    assert len(manifest) == 1  # one store for every seed
    report = (tmp_path / "out" / "report.md").read_text()
    assert "the `how2` source has no seed (every seed reads the same data)" in report
    assert f"- `base`: `how2`, `{store.absolute()}` ({manifest.pop()[:12]})" in report
    # the report's numbers, recomputed from the cells' records
    value = {key: r["evaluation"]["after"][R10] for key, r in records.items()}
    diff = paired_diff({s: value[s, "nce"] for s in (0, 1)}, {s: value[s, "norton"] for s in (0, 1)})
    norton = mean_ci([value[0, "norton"], value[1, "norton"]])
    row = next(line for line in report.splitlines() if line.startswith("| base |"))
    assert row.endswith(f"| {fmt(*norton[:2])} | {fmt(*mean_ci([value[0, 'nce'], value[1, 'nce']])[:2])} | "
                        f"{fmt(*diff[:2])} |") and diff[2] == 2
    assert "| variant | chance | norton | nce | nce − norton |" in report


@pytest.mark.slow
def test_a_cell_made_with_another_recipe_is_trained_again_or_refused(how2_data: tuple[Path, Path], tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    base = how2_recipe(tmp_path / "base.toml", *how2_data)
    study = study_file(tmp_path / "s.toml", base, tmp_path / "out", seeds="[0]")
    study.write_text(study.read_text().split("[[arms]]\nname = \"nce\"")[0])  # one arm: one training per step
    record = tmp_path / "out" / "cells" / "base" / "seed0" / "norton.json"
    assert main(["study", str(study)]) == 0
    assert json.loads(record.read_text())["provenance"]["recipe"]["train"]["max_steps"] == 2
    capsys.readouterr()

    how2_recipe(base, *how2_data, max_steps=3)  # the base recipe edited between two runs
    assert main(["study", str(study), "--report-only"]) == 2
    err = capsys.readouterr().err
    assert "made with other settings: train.max_steps: 2 -> 3 (cells: base seed 0 norton)" in err
    assert main(["study", str(study)]) == 0
    out = capsys.readouterr().out
    assert "base/seed0/norton: made with other settings: train.max_steps: 2 -> 3: training it again" in out
    assert "starting run norton" in out and "done, skipped" not in out
    assert json.loads(record.read_text())["provenance"]["recipe"]["train"]["max_steps"] == 3

    # a report over cells trained without an override is refused, not aggregated
    assert main(["study", str(study), "--report-only", "--set", "train.lr=0.0005"]) == 2
    assert "train.lr: 0.001 -> 0.0005 (cells: base seed 0 norton)" in capsys.readouterr().err
    assert main(["study", str(study), "--report-only"]) == 0  # as trained: reported

    # a run without its record (interrupted before the record was written) resumes when nothing changed ...
    record.unlink()
    assert main(["study", str(study)]) == 0
    out = capsys.readouterr().out
    assert "norton: run already complete at step 3" in out and "training it again" not in out
    assert json.loads(record.read_text())["provenance"]["recipe"]["train"]["max_steps"] == 3
    # ... and begins again when its recipe changed since it started
    record.unlink()
    how2_recipe(base, *how2_data, max_steps=2)
    assert main(["study", str(study)]) == 0
    out = capsys.readouterr().out
    assert "base/seed0/norton: interrupted after starting with other settings" in out
    assert json.loads(record.read_text())["provenance"]["recipe"]["train"]["max_steps"] == 2
