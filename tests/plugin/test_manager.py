from __future__ import annotations

import importlib.metadata as md
import types

import pytest

import tests.plugin.fakes as fake_components
from norton_core import NortonError, PluginError, build, hookimpl
from norton_core.plugin.manager import Plugins


class FakeDist:
    def __init__(self, name, version="1.0"):
        self.name, self.version = name, version


class FakeEntryPoint:
    """Stands in for importlib.metadata.EntryPoint, like pluggy's own tests do."""

    def __init__(self, name, value, dist, loader):
        self.name, self.value, self.dist, self.group = name, value, FakeDist(dist), "norton"
        self._loader = loader
        self.loaded = False

    def load(self):
        self.loaded = True
        return self._loader()


def _raise_import():
    raise ImportError("No module named 'faiss_gpu'")


@pytest.fixture
def fake_eps(monkeypatch):
    good = types.ModuleType("good_plugin")

    class GoodLoss(fake_components.FakeLoss):
        name = "good-loss"

    @hookimpl
    def norton_register_losses(register):
        register(GoodLoss)

    good.norton_register_losses = norton_register_losses
    eps = [
        FakeEntryPoint("good", "good_plugin", "norton-good", lambda: good),
        FakeEntryPoint("broken", "broken_plugin", "norton-broken", _raise_import),
    ]

    def entry_points(group=None):
        return [ep for ep in eps if group == "norton"]

    monkeypatch.setattr(md, "entry_points", entry_points)
    return eps


def test_broken_plugin_is_named_and_others_still_load(fake_eps):
    plugins = Plugins()
    plugins.load_entrypoints({})
    listing = {p["name"]: p for p in plugins.as_json()}
    assert listing["good"]["components"] == {"loss": ["good-loss"]}
    assert listing["good"]["distribution"] == "norton-good" and listing["good"]["version"] == "1.0"
    assert "ImportError: No module named 'faiss_gpu'" in listing["broken"]["error"]
    assert listing["broken"]["distribution"] == "norton-broken"
    # a recipe naming a component the broken plugin might provide fails with the culprit and how to disable it
    with pytest.raises(PluginError) as info:
        build("loss", "gpu-loss", {}, plugins=plugins)
    message = str(info.value)
    assert "plugin `broken` from norton-broken 1.0" in message and "NORTON_DISABLE_PLUGINS=broken" in message
    assert "good-loss [norton-good]" in message


def test_blocked_plugin_is_never_imported(fake_eps):
    plugins = Plugins()
    plugins.load_entrypoints({"NORTON_DISABLE_PLUGINS": "broken"})
    assert not fake_eps[1].loaded
    assert [p["name"] for p in plugins.as_json()] == ["good"]


def test_allowlist_by_entry_point_or_distribution(fake_eps):
    plugins = Plugins()
    plugins.load_entrypoints({"NORTON_LOAD_PLUGINS": "norton-good"})
    assert fake_eps[0].loaded and not fake_eps[1].loaded
    empty = Plugins()
    empty.load_entrypoints({"NORTON_LOAD_PLUGINS": ""})
    assert empty.as_json() == []


def test_same_entry_point_name_from_two_distributions(monkeypatch):
    eps = [FakeEntryPoint("dup", "a", "norton-a", lambda: types.ModuleType("a")),
           FakeEntryPoint("dup", "b", "norton-b", lambda: types.ModuleType("b"))]
    monkeypatch.setattr(md, "entry_points", lambda group=None: eps)
    with pytest.raises(PluginError, match="norton-a and norton-b"):
        Plugins().load_entrypoints({})


def test_duplicate_component_names_name_both_providers():
    plugins = Plugins()
    plugins.register(fake_components, name="first", distribution="norton-first", version="0.1")
    twin = types.ModuleType("twin")
    twin.norton_register_losses = fake_components.norton_register_losses
    plugins.register(twin, name="second", distribution="norton-second", version="0.2")
    with pytest.raises(PluginError) as info:
        _ = plugins.registry
    assert "norton-first 0.1" in str(info.value) and "norton-second 0.2" in str(info.value)


def test_unknown_hook_fails_at_start_up():
    typo = types.ModuleType("typo")

    @hookimpl
    def norton_register_loses(register):  # misspelled on purpose
        pass

    typo.norton_register_loses = norton_register_loses
    with pytest.raises(PluginError, match="norton_register_loses"):
        Plugins().register(typo, name="typo", distribution="norton-typo")


def test_build_validates_options_strictly():
    plugins = Plugins()
    plugins.register(fake_components, name="fake")
    loss = build("loss", "fake-loss", {"beta": 0.1}, plugins=plugins)
    assert loss.config.beta == 0.1
    with pytest.raises(NortonError) as info:
        build("loss", "fake-loss", {"beta": 2.0, "iterations": True}, plugins=plugins)
    assert len(info.value.problems) == 2


def test_builtins_are_real_entry_points_of_this_distribution():
    names = {ep.name: ep.dist.name for ep in md.entry_points(group="norton") if ep.dist.name == "norton"}
    assert set(names) == {"data", "aligners", "models", "losses", "retrieval", "evaluators", "sinks", "extractors"}


def test_hook_calls_are_traced_on_request(capsys):
    plugins = Plugins()
    plugins.load_entrypoints({"NORTON_LOAD_PLUGINS": "", "NORTON_TRACE_PLUGINS": "1"})
    plugins.register(fake_components, name="fake")
    plugins.epoch_start(run=None, epoch=1)  # type: ignore[arg-type]
    assert "norton_epoch_start" in capsys.readouterr().err


def test_light_entries_build_their_implementation_through_create():
    class Heavy:
        def __init__(self, config, rank=0, world_size=1):
            self.config, self.rank = config, rank

    class LightLoss(fake_components.FakeLoss):
        name = "light-loss"

        @classmethod
        def create(cls, config, **context):
            return Heavy(config, **context)

    module = types.ModuleType("light")

    @hookimpl
    def norton_register_losses(register):
        register(LightLoss)

    module.norton_register_losses = norton_register_losses
    plugins = Plugins()
    plugins.register(module, name="light")
    built = build("loss", "light-loss", {"beta": 0.2}, plugins=plugins, rank=3)
    assert isinstance(built, Heavy) and built.rank == 3 and built.config.beta == 0.2


# -- the loading switches behave as llm/datasette users expect ----------------------------------------------------


def test_an_empty_allowlist_keeps_the_builtins():
    plugins = Plugins()
    plugins.load_entrypoints({"NORTON_LOAD_PLUGINS": ""})
    assert {"data", "aligners", "models", "losses", "retrieval", "evaluators"} <= set(plugins.infos)
    assert ("loss", "norton") in plugins.registry


def test_a_typo_in_the_switches_is_reported_by_name(fake_eps, capsys):
    plugins = Plugins()
    plugins.load_entrypoints({"NORTON_LOAD_PLUGINS": "norton-godo", "NORTON_DISABLE_PLUGINS": "brokn"})
    err = capsys.readouterr().err
    assert "NORTON_LOAD_PLUGINS names 'norton-godo', which is no installed norton plugin" in err
    assert "NORTON_DISABLE_PLUGINS names 'brokn'" in err and "good [norton-good]" in err
    assert not fake_eps[0].loaded


@pytest.mark.parametrize(("env", "note"), [
    ({"NORTON_DISABLE_PLUGINS": "good"}, "disabled by NORTON_DISABLE_PLUGINS: plugin `good` from norton-good"),
    ({"NORTON_LOAD_PLUGINS": "broken"}, "not loaded: not in NORTON_LOAD_PLUGINS: plugin `good` from norton-good"),
])
def test_a_missing_component_says_which_switch_left_its_plugin_out(fake_eps, env, note):
    plugins = Plugins()
    plugins.load_entrypoints(env)
    with pytest.raises(PluginError) as info:
        build("loss", "good-loss", plugins=plugins)
    assert "unknown loss 'good-loss'" in str(info.value) and note in str(info.value)


def test_tracing_covers_registration_hooks_too(fake_eps, capsys):
    plugins = Plugins()
    plugins.load_entrypoints({"NORTON_DISABLE_PLUGINS": "broken", "NORTON_TRACE_PLUGINS": "1"})
    assert ("loss", "good-loss") in plugins.registry
    plugins.epoch_start(run=None, epoch=1)  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert "norton: hook norton_register_losses(register) -> ['good']" in err
    assert "norton: hook norton_epoch_start(run, epoch)" in err


def test_a_closed_pipe_ends_the_listing_quietly():
    import os
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)  # the reader (`head`) is gone before norton writes
    try:
        result = subprocess.run([sys.executable, "-m", "norton_core.cli", "plugins", "--options"], stdout=write,
                                stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert result.returncode == 141 and result.stderr == ""


def test_install_runs_pip_in_nortons_own_interpreter(monkeypatch, capsys):
    import subprocess
    import sys

    import norton_core.plugin.cli as plugin_cli
    from norton_core.cli import main

    calls = []
    monkeypatch.setattr(plugin_cli.subprocess, "run", lambda cmd: calls.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    assert main(["install", "-e", "some/dir"]) == 0
    assert calls == [[sys.executable, "-m", "pip", "install", "-e", "some/dir"]]


def test_options_listing_has_every_builtin_component_with_type_default_bounds_and_help(capsys):
    from norton_core.cli import main

    assert main(["plugins", "--options"]) == 0
    out = capsys.readouterr().out
    from norton_core.testing import builtin_plugins

    for kind, name, _ in builtin_plugins().registry.items():
        assert f"{kind} {name!r}  (plugin " in out
    row = next(line for line in out.splitlines() if line.strip().startswith("beta "))
    assert row.split()[:5] == ["beta", "number", "0.3", ">=", "0.0,"] and "weight of the OT plan" in row
    assert main(["describe", "retrieval_backend", "faiss-ivf"]) == 0
    assert "nlist" in capsys.readouterr().out
