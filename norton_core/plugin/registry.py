"""Name -> component class registries, one per kind, filled by the ``norton_register_*`` hooks."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Any

import attrs

from norton_core.errors import PluginError
from norton_core.plugin.interfaces import KINDS, Component


@attrs.frozen
class Provider:
    """Who registered a component: the plugin (entry-point name) and its distribution."""

    plugin: str
    distribution: str = "?"
    version: str = "?"

    def __str__(self) -> str:
        return f"plugin {self.plugin!r} ({self.distribution} {self.version})"


@attrs.frozen
class Entry:
    cls: type[Component]
    provider: Provider


class Register:
    """The callable handed to a ``norton_register_*`` hook: ``register(ComponentClass)``.

    Keyword arguments may be added in later versions (e.g. aliases), so implementations must call it by position.
    """

    def __init__(self, registry: Registry, kind: str, provider: Provider) -> None:
        self._registry, self._kind, self._provider = registry, kind, provider

    def __call__(self, cls: type[Component]) -> None:
        self._registry.add(self._kind, cls, self._provider)


class Registry:
    """All registered components by kind and name. Duplicate names are an error naming both providers."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}

    def add(self, kind: str, cls: type[Component], provider: Provider) -> None:
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"{provider} registered {cls!r} as a {kind} without a string `name` attribute")
        config = getattr(cls, "Config", None)
        if not (isinstance(config, type) and attrs.has(config)):
            raise PluginError(f"{provider} registered {kind} {name!r} whose `Config` is not an attrs class")
        table = self._entries[kind]
        if name in table:
            raise PluginError(
                f"two plugins provide the {kind} {name!r}: {table[name].provider} and {provider}; "
                "uninstall or disable one (NORTON_DISABLE_PLUGINS)"
            )
        table[name] = Entry(cls, provider)

    def get(self, kind: str, name: str) -> Entry:
        table = self._entries[kind]
        if name not in table:
            raise PluginError(self.unknown_message(kind, name))
        return table[name]

    def unknown_message(self, kind: str, name: str) -> str:
        table = self._entries[kind]
        close = difflib.get_close_matches(name, list(table), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        known = ", ".join(f"{n} [{e.provider.distribution}]" for n, e in sorted(table.items())) or "none installed"
        return f"unknown {kind} {name!r}{hint}; known: {known}"

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def __contains__(self, item: tuple[str, str]) -> bool:
        kind, name = item
        return name in self._entries.get(kind, {})

    def items(self) -> Iterator[tuple[str, str, Entry]]:
        for kind, table in self._entries.items():
            for name, entry in sorted(table.items()):
                yield kind, name, entry

    def by_plugin(self) -> dict[str, dict[str, list[str]]]:
        out: dict[str, dict[str, list[str]]] = {}
        for kind, name, entry in self.items():
            out.setdefault(entry.provider.plugin, {}).setdefault(kind, []).append(name)
        return out

    def as_json(self) -> dict[str, Any]:
        return {kind: {n: str(e.provider) for n, e in table.items()} for kind, table in self._entries.items()}
