from __future__ import annotations

import attrs
import pytest

import tests.plugin.fakes as fake_components
from norton_core import hookimpl, option
from norton_core.cli import main
from norton_core.errors import RecipeError
from norton_core.plugin.manager import Plugins
from norton_core.recipe.load import Recipe, load_recipe
from tests.plugin.fakes import recipe_text


@pytest.fixture
def plugins():
    import norton_sinks  # the default [logging] sinks = ["jsonl"] is a built-in plugin

    plugins = Plugins()
    plugins.register(fake_components, name="fake", distribution="norton-fake", version="0.1")
    plugins.register(norton_sinks, name="sinks", distribution="norton")
    return plugins


@pytest.fixture
def as_default(plugins, monkeypatch):
    import norton_core.plugin.manager as manager

    monkeypatch.setattr(manager, "_default", plugins)
    return plugins


def at(path, text, start):
    """``file:line`` of the first line of ``text`` that starts with ``start`` (how problems are located)."""
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if ln.startswith(start))
    return f"{path}:{line}"


def write(tmp_path, text, name="r.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_valid_recipe_builds_components_with_their_own_tables(tmp_path, plugins):
    recipe = load_recipe(write(tmp_path, recipe_text()), plugins=plugins)
    assert recipe.train.lr == 1e-4 and recipe.run.seed == 3
    loss = recipe.build("loss", rank=0, world_size=1)
    assert loss.config.beta == 0.5
    assert recipe.build("retrieval.backend", seed=1).config.nlist == 4
    assert recipe.components["evaluation.task_options.fake-eval"].config.windows == 8
    resolved = recipe.resolved()
    assert resolved["loss"] == {"name": "fake-loss", "beta": 0.5, "iterations": 50}
    assert resolved["retrieval"]["backend"] == {"name": "fake-backend", "nlist": 4}
    # the resolved recipe validates again and is stable
    assert Recipe.from_dict(resolved, plugins=plugins).resolved() == resolved


def test_three_mistakes_in_three_tables_all_reported(tmp_path, plugins):
    text = recipe_text(lr='lr = "1e-4"', beta="beta = 3.0", hidden="hiden = 16")
    path = write(tmp_path, text)
    with pytest.raises(RecipeError) as info:
        load_recipe(path, plugins=plugins)
    problems = info.value.problems
    assert len(problems) == 3
    assert f"{at(path, text, 'lr =')}: train.lr: expected number, got string '1e-4'" in problems
    assert f"{at(path, text, 'beta =')}: loss.beta: must be <= 1.0, got 3.0" in problems
    assert any(p.startswith(f"{at(path, text, 'hiden =')}: model.hiden: unknown key (did you mean 'hidden'?)")
               for p in problems)


def test_cli_prints_every_problem_and_exits_2(tmp_path, as_default, capsys):
    path = write(tmp_path, recipe_text(lr="lr = nan", epochs="epochs = true").replace('"fake-loss"', '"fake-los"'))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3, err
    assert all(line.startswith("norton: error: ") for line in err)
    joined = "\n".join(err)
    assert "train.lr: must be a finite number" in joined and "train.epochs: expected integer, got boolean" in joined
    assert "loss.name: unknown loss 'fake-los' (did you mean 'fake-loss'?)" in joined


@pytest.mark.parametrize("name", ["../../x", ".hidden", "a/b", ""])
def test_run_name_cannot_escape_the_output_dir(tmp_path, plugins, name):
    with pytest.raises(RecipeError, match="run.name: must match"):
        load_recipe(write(tmp_path, recipe_text()), [f"run.name={name!r}".replace("'", '"')], plugins=plugins)


def test_unknown_component_lists_known_names_with_providers(tmp_path, plugins):
    path = write(tmp_path, recipe_text().replace('name = "fake-loss"', 'name = "nortn"'))
    with pytest.raises(RecipeError) as info:
        load_recipe(path, plugins=plugins)
    (problem,) = info.value.problems
    assert "loss.name: unknown loss 'nortn'; known: fake-loss [norton-fake]" in problem


def test_problems_point_at_the_line_of_their_key_or_table(tmp_path, plugins):
    text = recipe_text(nlist="nlist = 0", windows="windows = 0").replace('[loss]\nname = "fake-loss"\nbeta = 0.5',
                                                                       '[loss]\nname = "fake-loss"')
    text += "\n[model.extra]\nx = 1\n"
    path = write(tmp_path, text)
    with pytest.raises(RecipeError) as info:
        load_recipe(path, plugins=plugins)
    problems = "\n".join(info.value.problems)
    assert f"{at(path, text, 'nlist =')}: retrieval.backend.nlist: must be >= 1" in problems
    assert f"{at(path, text, 'windows =')}: evaluation.task_options.fake-eval.windows: must be >= 1" in problems
    assert f"{at(path, text, '[model.extra]')}: model.extra: unknown key" in problems


def test_extends_merges_and_child_wins(tmp_path, plugins):
    write(tmp_path, recipe_text(), "base.toml")
    child = write(tmp_path, 'extends = "base.toml"\n[train]\nlr = 0.5\n[loss]\nname = "fake-loss"\niterations = 3\n')
    recipe = load_recipe(child, plugins=plugins)
    assert recipe.train.lr == 0.5 and recipe.train.epochs == 2
    assert recipe.components["loss"].config.iterations == 3 and recipe.components["loss"].config.beta == 0.5


def test_extends_problem_names_the_file_that_set_the_key(tmp_path, plugins):
    base_text = recipe_text(epochs="epochs = -1")
    base = write(tmp_path, base_text, "base.toml")
    child = write(tmp_path, 'extends = "base.toml"\n[train]\nlr = -1.0\n')
    with pytest.raises(RecipeError) as info:
        load_recipe(child, plugins=plugins)
    assert sorted(info.value.problems) == sorted([
        f"{at(base.resolve(), base_text, 'epochs =')}: train.epochs: must be >= 0, got -1",
        f"{child.resolve()}:3: train.lr: must be > 0.0, got -1.0",
    ])


def test_extends_cycle_reports_chain(tmp_path, plugins):
    write(tmp_path, 'extends = "b.toml"\n', "a.toml")
    write(tmp_path, 'extends = "a.toml"\n', "b.toml")
    with pytest.raises(RecipeError, match=r"cycle .*a\.toml -> .*b\.toml -> .*a\.toml"):
        load_recipe(tmp_path / "a.toml", plugins=plugins)


def test_set_overrides_parse_toml_and_are_validated(tmp_path, plugins):
    path = write(tmp_path, recipe_text())
    recipe = load_recipe(path, ["train.lr=0.25", "run.name=\"other\"", "retrieval.backend.nlist=8"], plugins=plugins)
    assert recipe.train.lr == 0.25 and recipe.run.name == "other"
    assert recipe.components["retrieval.backend"].config.nlist == 8
    with pytest.raises(RecipeError) as info:
        load_recipe(path, ["train.epochs=\"3\""], plugins=plugins)
    assert info.value.problems == ["--set: train.epochs: expected integer, got string '3'"]
    with pytest.raises(RecipeError, match="quote strings"):
        load_recipe(path, ["run.name=other"], plugins=plugins)


def test_requires_reports_missing_and_wrong_versions(tmp_path, plugins):
    path = write(tmp_path, 'requires = ["norton-not-installed>=1", "pluggy<1.0"]\n' + recipe_text())
    with pytest.raises(RecipeError) as info:
        load_recipe(path, plugins=plugins)
    text = "\n".join(info.value.problems)
    assert "requires[0]: norton-not-installed is not installed" in text
    assert "requires[1]: pluggy" in text and "the recipe needs pluggy<1.0" in text


def test_unknown_table_and_missing_required_table(tmp_path, plugins):
    text = recipe_text().replace("[loss]", "[los]")
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, text), plugins=plugins)
    text = "\n".join(info.value.problems)
    assert "los: unknown table (did you mean 'loss'?)" in text
    assert "loss: required table is missing" in text


def test_invalid_toml_names_file_and_line(tmp_path, plugins):
    path = write(tmp_path, "[train]\nlr = = 1\n")
    with pytest.raises(RecipeError, match=r"r\.toml: invalid TOML: .*line 2"):
        load_recipe(path, plugins=plugins)


def test_dry_run_prints_resolved_toml(tmp_path, as_default, capsys):
    path = write(tmp_path, recipe_text())
    assert main(["run", str(path), "--dry-run", "--set", "train.lr=0.5"]) == 0
    out = capsys.readouterr().out
    assert "[retrieval.backend]\nname = \"fake-backend\"\nnlist = 4" in out
    assert "lr = 0.5" in out


# -- extends: engine tables merge key by key, a component table starts afresh only when its name changes ----------


def _base_with_run_keys(tmp_path):
    text = recipe_text(seed='seed = 3\noutput_dir = "out"\nthreads = 2\ninit_from = "w.safetensors"\n'
                            'pretrain_recipe = "stage.toml"')
    write(tmp_path, "", "stage.toml")
    return write(tmp_path, text, "base.toml"), text


def test_child_renaming_run_keeps_every_other_inherited_run_key(tmp_path, plugins):
    base, _ = _base_with_run_keys(tmp_path)
    child = write(tmp_path, 'extends = "base.toml"\n[run]\nname = "mine"\n[train]\nepochs = 5\n')
    recipe = load_recipe(child, plugins=plugins)
    run = recipe.resolved()["run"]
    assert run["name"] == "mine"
    assert (run["seed"], run["output_dir"], run["threads"], run["init_from"]) == (3, "out", 2, "w.safetensors")
    assert run["pretrain_recipe"] == str((tmp_path / "stage.toml").resolve())
    assert recipe.train.epochs == 5 and recipe.train.lr == 1e-4 and recipe.train.videos_per_batch == 8


def test_a_component_table_without_a_new_name_merges(tmp_path, plugins):
    _base_with_run_keys(tmp_path)
    same = write(tmp_path, 'extends = "base.toml"\n[retrieval.backend]\nname = "fake-backend"\n', "same.toml")
    recipe = load_recipe(same, plugins=plugins)
    assert recipe.components["retrieval.backend"].config.nlist == 4  # the parent's option stays


def test_switched_component_table_drops_parent_options(tmp_path, plugins):
    class OtherLoss(fake_components.FakeLoss):
        name = "other-loss"

        @attrs.frozen
        class Config:
            margin: float = option(0.2)

    import types

    extra = types.ModuleType("extra")
    extra.norton_register_losses = hookimpl(lambda register: register(OtherLoss))
    plugins.register(extra, name="extra")
    _base_with_run_keys(tmp_path)
    child = write(tmp_path, 'extends = "base.toml"\n[loss]\nname = "other-loss"\nmargin = 0.5\n')
    recipe = load_recipe(child, plugins=plugins)  # the parent's `beta = 0.5` would be an unknown key here
    assert recipe.resolved()["loss"] == {"name": "other-loss", "margin": 0.5}
    # the same rule for --set: naming another component replaces the table, later --set keys add to it
    base = tmp_path / "base.toml"
    recipe = load_recipe(base, ['loss.name="other-loss"', "loss.margin=0.1"], plugins=plugins)
    assert recipe.resolved()["loss"] == {"name": "other-loss", "margin": 0.1}


def test_explain_names_the_origin_file_and_line_of_every_value(tmp_path, as_default, capsys, monkeypatch):
    base, base_text = _base_with_run_keys(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    child_text = 'extends = "base.toml"\n[run]\nname = "mine"\n'
    child = write(tmp_path, child_text)
    assert main(["run", str(child), "--dry-run", "--explain", "--set", "train.lr=0.5"]) == 0
    out = capsys.readouterr().out
    lines: dict[str, str] = {}
    for ln in out.splitlines():
        if "=" in ln and not ln.startswith("#"):
            lines.setdefault(ln.split("=")[0].strip(), ln)  # the first of each key
    assert lines["name"].endswith(f"# {at(child.resolve(), child_text, 'name =')}")  # the first `name`: [run]
    assert lines["threads"].endswith(f"# {at(base.resolve(), base_text, 'threads =')}")
    assert lines["lr"].endswith("# --set")
    assert lines["deterministic"].endswith("# default")
    # the rule for relative paths: data, weights and outputs are relative to the working directory; recipe
    # references (extends, run.pretrain_recipe) to the file that wrote them. --dry-run prints both resolved.
    assert lines["output_dir"].endswith(f"-> {elsewhere / 'out'}")
    assert lines["init_from"].endswith(f"-> {elsewhere / 'w.safetensors'}")
    assert lines["pretrain_recipe"].startswith(f'pretrain_recipe = "{(tmp_path / "stage.toml").resolve()}"')


def test_toml_value_writes_what_a_set_reads_back(tmp_path_factory):
    from norton_core.recipe.files import read_toml
    from norton_core.recipe.load import toml_value

    value = {"a": 1, "b c": [1.5, "x", False], "d": {"e": True, "f": "quote \" and \\ back"}}
    path = tmp_path_factory.mktemp("toml") / "v.toml"
    path.write_text("x = " + toml_value(value))
    assert read_toml(path)["x"] == value
