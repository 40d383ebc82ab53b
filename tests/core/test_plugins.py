from __future__ import annotations

import importlib.metadata as md
import types

import core_fakes as fake_components
import pytest

from norton_core import NortonError, PluginError, build, hookimpl
from norton_core._manager import Plugins


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
    assert set(names) == {"data", "aligners", "models", "losses", "retrieval", "evaluators", "sinks"}


def test_hook_calls_are_traced_on_request(capsys):
    plugins = Plugins()
    plugins.load_entrypoints({"NORTON_LOAD_PLUGINS": "", "NORTON_TRACE_PLUGINS": "1"})
    plugins.register(fake_components, name="fake")
    plugins.call("norton_epoch_start", run=None, epoch=1)
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
