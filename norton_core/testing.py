"""A pytest plugin for plugin authors (and our own suite): fresh plugin managers and recipe helpers.

Loaded through the ``pytest11`` entry point, so it must stay light: no torch import at module level.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from norton_core.plugin import manager as _manager
from norton_core.plugin.manager import Plugins, set_default_plugins


def builtin_plugins(extra_allowed: str = "") -> Plugins:
    """A fresh manager with only the ``norton`` distribution's plugins (plus ``extra_allowed`` names) loaded."""
    plugins = Plugins()
    plugins.load_entrypoints({"NORTON_LOAD_PLUGINS": ",".join(filter(None, ["norton", extra_allowed]))})
    return plugins


@pytest.fixture
def norton_plugins() -> Iterator[Plugins]:
    """A fresh plugin manager with the built-ins, installed as the process default for the test's duration.

    Register a temporary plugin with ``norton_plugins.register(module_or_object, name="...")``; it is gone after
    the test.
    """
    previous = _manager._default
    plugins = builtin_plugins()
    set_default_plugins(plugins)
    try:
        yield plugins
    finally:
        set_default_plugins(previous)


def recipe_dict(**tables: Mapping[str, Any]) -> dict[str, Any]:
    """A minimal valid recipe as a dict (the demo's components), with ``tables`` merged over it per table."""
    base: dict[str, Any] = {
        "data": {"name": "synthetic"},
        "aligner": {"name": "overlapped"},
        "model": {"name": "mmfusion-separate"},
        "loss": {"name": "videoclip-nce"},
    }
    for name, table in tables.items():
        base[name] = {**base.get(name, {}), **table}
    return base
