"""Study files that would crash a cell, destroy the first stage or write outside the study are refused, in one line
each, before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from norton_core.cli import main
from norton_core.errors import RecipeError
from norton_core.study.runner import cell_dir
from norton_core.study.spec import load_study

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def _write(tmp_path: Path, body: str, arms: str = '[[arms]]\nname = "norton"\n') -> Path:
    path = tmp_path / "s.toml"
    path.write_text(f'base = "{RECIPES / "smoke_cpu.toml"}"\noutput_dir = "{tmp_path / "out"}"\n{body}\n{arms}')
    return path


def _refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, arms: str = '[[arms]]\nname = "a"\n'
             ) -> str:
    """The CLI's error for this study: exit 2, nothing created."""
    path = _write(tmp_path, body, arms)
    assert main(["study", str(path)]) == 2
    assert not (tmp_path / "out").exists()
    return capsys.readouterr().err


@pytest.mark.parametrize("seed", [2**32, 2**40, -1])
def test_seeds_outside_32_bits_are_one_line_before_any_cell(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           seed: int) -> None:
    err = _refused(tmp_path, capsys, f"seeds = [0, {seed}]")
    assert f"seeds: {seed} is out of range: a seed is 0 to 4294967295 (2^32 - 1)" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_the_largest_seed_is_accepted(tmp_path: Path) -> None:
    assert load_study(_write(tmp_path, f"seeds = [{2**32 - 1}]")).seeds == (2**32 - 1,)


def test_seeds_from_the_command_line_are_checked_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["study", str(_write(tmp_path, "")), "--seeds", "0,4294967296"]) == 2
    assert "seeds: 4294967296 is out of range" in capsys.readouterr().err


@pytest.mark.parametrize(("arms", "problem"), [
    ('[[arms]]\nname = "pretrain"\n', "'pretrain' is reserved: it is the first stage's run directory"),
    ('[[arms]]\nname = "Pretrain"\n', "'Pretrain' is reserved"),
    ('[[arms]]\nname = "a"\n[[arms]]\nname = "a.json"\n', "'a.json' ends in one of .json, .tmp"),
    ('[[arms]]\nname = "b.TMP"\n', "'b.TMP' ends in one of .json, .tmp"),
    ('[[arms]]\nname = "nce"\n[[arms]]\nname = "NCE"\n', "'NCE' and 'nce' differ only in case"),
    ('[[arms]]\nname = "a"\n[[arms]]\nname = "a"\n', "arms[1].name: 'a' appears twice"),
])
def test_arm_names_that_collide_with_the_studys_own_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          arms: str, problem: str) -> None:
    assert problem in _refused(tmp_path, capsys, "", arms)


@pytest.mark.parametrize(("body", "arms", "problem"), [
    ("", '[[arms]]\nname = "a"\nset = ["run.output_dir=\\"/tmp\\""]\n', "arms[0].set: run.output_dir cannot be set"),
    ("", '[[arms]]\nname = "a"\nset = ["run.name=\\"x\\""]\n', "arms[0].set: run.name cannot be set"),
    ("", '[[arms]]\nname = "a"\nset = ["run={ seed = 3 }"]\n', "arms[0].set: run.seed cannot be set"),
    ("", '[[arms]]\nname = "a"\nset = ["data.seed=3"]\n', "arms[0].set: data.seed cannot be set here: the arms "
                                                         "share their cell's data"),
    ('set = ["run.seed=4"]', '[[arms]]\nname = "a"\n', "set: run.seed cannot be set here: each cell's seed"),
    ('[variants]\nkey = "run.output_dir"\nvalues = ["x"]', '[[arms]]\nname = "a"\n',
     "variants.key: run.output_dir is set by the study"),
    ('[variants.cases]\nc = ["run.name=\\"..\\""]', '[[arms]]\nname = "a"\n', "variants.cases.c: run.name cannot"),
    ('[variants]\nkey = "data.tasks"\nvalues = [3, 3]', '[[arms]]\nname = "a"\n', "repeated values in [3, 3]"),
])
def test_overrides_of_what_the_study_sets_per_cell(tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str,
                                                   arms: str, problem: str) -> None:
    assert problem in _refused(tmp_path, capsys, body, arms)


def test_a_study_may_fix_the_data_seed_for_every_cell(tmp_path: Path) -> None:
    """``data.seed`` in the study's own ``set`` is kept (the seeds then vary run.seed alone)."""
    from norton_core.plugin.manager import default_plugins
    from norton_core.study.runner import plan

    stages, _ = plan(load_study(_write(tmp_path, 'seeds = [0, 1]\nset = ["data.seed=5"]')), default_plugins())
    assert [s.seeded for s in stages] == [("run.seed",), ("run.seed",)]
    assert all("data.seed=5" in s.overrides and not any(o.startswith("data.seed=0") for o in s.overrides)
               for s in stages)


def test_variant_values_cannot_name_directories_outside_the_study(tmp_path: Path) -> None:
    study = load_study(_write(tmp_path, '[variants]\nkey = "run.cache_dir"\nvalues = ["../../..", "/etc", ".", "a"]'))
    cells = (tmp_path / "out" / "cells").resolve()
    dirs = [cell_dir(study, v, 0) for v in study.variant_values]
    for path in dirs:
        assert path.resolve().parent.parent == cells  # cells/<one plain name>/seed0
        assert ".." not in path.parts and not path.parent.name.startswith(".")
    assert len({d.parent.name for d in dirs}) == 4  # distinct values, distinct directories
    assert dirs[3].parent.name == 'cache_dir="a"'  # a plain label is kept as it is (existing studies keep theirs)
    assert study.variant_label("../../..") == 'cache_dir="../../.."'  # the report still shows the value


def test_variant_directories_that_differ_only_in_case_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="would share the directory cells/"):
        load_study(_write(tmp_path, '[variants.cases]\nwide = ["data.tasks=24"]\nWIDE = ["data.tasks=6"]'))
