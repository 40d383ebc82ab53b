"""The study files we ship resolve in every cell, and a study whose arm cannot resolve fails before training."""

from __future__ import annotations

from pathlib import Path

import pytest

from norton_core.errors import RecipeError
from norton_core.plugin.manager import default_plugins
from norton_core.study.runner import check_cells, run_study
from norton_core.study.spec import load_study

STUDIES = sorted((Path(__file__).resolve().parents[2] / "studies").glob("*.toml"))


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_every_cell_of_a_shipped_study_resolves(path: Path) -> None:
    study = load_study(path)
    assert check_cells(study, default_plugins()) is not None  # each ships a two-stage base


def test_a_bad_arm_fails_before_anything_trains(tmp_path: Path) -> None:
    base = Path(__file__).resolve().parents[2] / "recipes" / "smoke_cpu.toml"
    path = tmp_path / "bad.toml"
    path.write_text(f'base = "{base}"\noutput_dir = "{tmp_path / "out"}"\nseeds = [0, 1]\n'
                    '[variants]\nkey = "data.shift_prob"\nvalues = [0.0, 0.5]\n'
                    '[[arms]]\nname = "ok"\n[[arms]]\nname = "typo"\nset = ["loss.prompt_ration=0.1"]\n')
    with pytest.raises(RecipeError) as err:
        run_study(load_study(path))
    text = str(err.value)
    assert "typo: " in text and "prompt_ration" in text
    assert "shift_prob=0.5 seed 1" in text  # the cells it concerns, named once
    assert text.count("prompt_ration: unknown key") == 1
    assert not (tmp_path / "out").exists()  # nothing trained


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_every_stage_of_a_shipped_study_trains_in_fp32(path: Path) -> None:
    """The same figures on every CPU: the study itself sets fp32 for every stage of every cell."""
    from norton_core.recipe.load import load_recipe
    from norton_core.study.runner import _common

    study = load_study(path)
    plugins = default_plugins()
    stage1 = check_cells(study, plugins)
    assert stage1 is not None and 'train.precision="fp32"' in study.set
    value = study.variant_values[-1]
    where = Path("/nonexistent")
    recipes = [load_recipe(stage1, _common(study, value, 0, where, "pretrain"), plugins=plugins)]
    recipes += [load_recipe(study.base, [*_common(study, value, 0, where, a.name), *a.set, 'run.pretrain_recipe=""'],
                            plugins=plugins) for a in study.arms]
    assert [r.train.precision for r in recipes] == ["fp32"] * (1 + len(study.arms))
