"""Named study variants (``[variants.cases]``): each case is a set of overrides for every stage, for comparing
whole generator configurations rather than one key's values."""

from __future__ import annotations

from pathlib import Path

import pytest

from norton_core.errors import RecipeError
from norton_core.plugin.manager import default_plugins
from norton_core.study.report import build_report
from norton_core.study.runner import cell_dir, plan
from norton_core.study.spec import load_study

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def _write(tmp_path: Path, variants: str) -> Path:
    path = tmp_path / "worlds.toml"
    path.write_text(f'name = "worlds"\nbase = "{RECIPES / "smoke_cpu.toml"}"\noutput_dir = "{tmp_path / "out"}"\n'
                    f'seeds = [0, 1]\n{variants}\n[[arms]]\nname = "norton"\n')
    return path


def test_cases_override_every_stage_and_name_the_cells(tmp_path: Path) -> None:
    study = load_study(_write(tmp_path, '[variants.cases]\nwide = ["data.world_seed=1", "data.tasks=24"]\n'
                                        'short = ["data.step_seconds_max=6"]\n'))
    assert study.variant_values == ("wide", "short")
    stages, _ = plan(study, default_plugins())
    wide = next(s for s in stages if s.label == "wide" and s.seed == 1)
    overrides = wide.overrides
    assert "data.world_seed=1" in overrides and "data.tasks=24" in overrides and "data.seed=1" in overrides
    assert wide.seeded == ("run.seed", "data.seed")  # the synthetic source has a seed: each seed draws its data
    assert "data.step_seconds_max=6" not in overrides
    assert cell_dir(study, "short", 0) == tmp_path / "out" / "cells" / "short" / "seed0"
    report = build_report(study, {})
    assert "- `wide`: `data.world_seed=1`, `data.tasks=24`" in report and "; named variants: wide, short." in report
    # --values picks cases by name
    reduced = load_study(_write(tmp_path, '[variants.cases]\nwide = ["data.tasks=24"]\nshort = ["data.tasks=6"]\n'),
                         values=("short",))
    assert reduced.variant_values == ("short",)


@pytest.mark.parametrize(("variants", "problem"), [
    ('[variants]\nkey = "data.tasks"\n[variants.cases]\na = ["data.tasks=3"]\n', "variants.key: not allowed beside"),
    ('[variants.cases]\n"a/b" = ["data.tasks=3"]\n', "variants.cases.a/b: expected a plain name"),
    ('[variants.cases]\na = ["tasks"]\n', "variants.cases.a: 'tasks' is not table.key=value"),
    ('[variants]\ncases = []\n', "variants.cases: expected a table"),
])
def test_bad_cases_are_reported(tmp_path: Path, variants: str, problem: str) -> None:
    with pytest.raises(RecipeError) as err:
        load_study(_write(tmp_path, variants))
    assert problem in str(err.value)


def test_values_that_are_not_cases_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"--values \['tall'\]: not among the study's cases \(wide\)"):
        load_study(_write(tmp_path, '[variants.cases]\nwide = ["data.tasks=24"]\n'), values=("tall",))


def test_cli_values_name_cases(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from norton_core.cli import main

    study = _write(tmp_path, '[variants.cases]\nwide = ["data.tasks=24"]\nshort = ["data.tasks=6"]\n')
    # a case name is taken as it is (not as TOML): the study loads and only then finds nothing trained
    assert main(["study", str(study), "--values", "short", "--report-only"]) == 2
    err = capsys.readouterr().err
    assert "no finished cells" in err and "not TOML" not in err
    assert main(["study", str(study), "--values", "tall", "--report-only"]) == 2
    assert "not among the study's cases" in capsys.readouterr().err


def test_report_pools_every_case_paired_by_cell(tmp_path: Path) -> None:
    path = _write(tmp_path, '[variants.cases]\nwide = ["data.tasks=24"]\nshort = ["data.tasks=6"]\n')
    path.write_text(path.read_text() + '[[arms]]\nname = "nce"\n')
    study = load_study(path)
    results = {}
    for i, (case, seed) in enumerate([("wide", 0), ("wide", 1), ("short", 0), ("short", 1)]):
        for arm, value in (("norton", 10.0 * (i + 1)), ("nce", 10.0 * (i + 1) + i + 1)):
            after = {"youcook2_clip/R@1": value, "youcook2_clip/pairs": 100}
            results[case, seed, arm] = {"evaluation": {"after": after}}
    report = build_report(study, results)
    row = next(line for line in report.splitlines() if line.startswith("| all variants"))
    # norton 10..40: mean 25, sd 12.91, t(3) 3.182 (nce 11..44: sd 14.20);
    # nce - norton = 1..4 cell by cell: mean 2.5 ± 3.182 * 1.291 / 2
    assert row == "| all variants (paired by cell) | 1.00 ± 0.00 | 25.00 ± 20.54 | 27.50 ± 22.59 | 2.50 ± 2.05 |"


def test_an_arm_may_name_its_own_baseline_for_its_paired_differences(tmp_path: Path) -> None:
    path = _write(tmp_path, "")
    path.write_text(path.read_text() + '[[arms]]\nname = "long"\n[[arms]]\nname = "nce-long"\nbaseline = "long"\n')
    study = load_study(path)
    assert [study.baseline_of(a.name) for a in study.arms] == ["norton", "norton", "long"]
    results = {}
    for seed in (0, 1):
        for arm, value in (("norton", 10.0 + seed), ("long", 20.0 + 2 * seed), ("nce-long", 23.0 + 2 * seed)):
            results["base", seed, arm] = {"evaluation": {"after": {"youcook2_clip/R@1": value,
                                                                   "youcook2_clip/pairs": 100}}}
    report = build_report(study, results)
    head = next(line for line in report.splitlines() if line.startswith("| variant"))
    assert head.endswith("| long − norton | nce-long − long |")
    row = next(line for line in report.splitlines() if line.startswith("| base"))
    # norton 10, 11; long 20, 22; nce-long 23, 25: long − norton = 10, 11 (10.5 ± 12.71 x 0.5); nce-long − long = 3, 3
    assert row == "| base | 1.00 ± 0.00 | 10.50 ± 6.35 | 21.00 ± 12.71 | 24.00 ± 12.71 | 10.50 ± 6.35 | 3.00 ± 0.00 |"


@pytest.mark.parametrize(("arms", "problem"), [
    ('[[arms]]\nname = "b"\nbaseline = "b"\n', "arms[1].baseline: expected the name of another arm, got 'b'"),
    ('[[arms]]\nname = "b"\nbaseline = "c"\n', "arms[1].baseline: 'c' is not an arm (norton, b)"),
])
def test_an_arm_baseline_must_be_another_arm(tmp_path: Path, arms: str, problem: str) -> None:
    path = _write(tmp_path, "")
    path.write_text(path.read_text() + arms)
    with pytest.raises(RecipeError) as err:
        load_study(path)
    assert problem in str(err.value)
