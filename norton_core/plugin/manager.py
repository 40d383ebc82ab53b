"""Plugin discovery and the typed facade over ``pm.hook``.

Every plugin, the built-ins included, is an entry point in the group ``norton``. Entry points are loaded one at a
time so that a plugin which fails to import is named with its distribution, version and entry point (pluggy's
``load_setuptools_entrypoints`` would raise the bare ImportError) and the others still load.

Environment controls (read when the plugins are loaded), as llm and datasette have them:

- ``NORTON_LOAD_PLUGINS=a,b``: of the third-party plugins, load only these (entry-point or distribution names); an
  empty value loads none of them. The built-ins (distribution ``norton``) always load. A name that matches no
  installed plugin is reported (a typo must not silently leave a plugin out).
- ``NORTON_DISABLE_PLUGINS=x,y``: never import these (built-ins included); an unknown-component error then says so.
- ``NORTON_TRACE_PLUGINS=1``: print every hook call to stderr (registration hooks included).
"""

from __future__ import annotations

import importlib.metadata as md
import os
import sys
import traceback
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
import pluggy

from norton_core.errors import PluginError
from norton_core.plugin import hookspecs
from norton_core.plugin.registry import Provider, Register, Registry

if TYPE_CHECKING:
    import argparse

    from norton_core.engine.state import RunContext

GROUP = "norton"
#: the distribution whose entry points are the built-in plugins
BUILTIN_DISTRIBUTION = "norton"

_REGISTER_HOOKS = {
    "data": "norton_register_data_sources",
    "aligner": "norton_register_aligners",
    "model": "norton_register_models",
    "loss": "norton_register_losses",
    "retrieval_backend": "norton_register_retrieval_backends",
    "evaluator": "norton_register_evaluators",
    "metric_sink": "norton_register_metric_sinks",
    "feature_extractor": "norton_register_feature_extractors",
}


@attrs.define
class PluginInfo:
    """One plugin as ``norton plugins`` shows it."""

    name: str
    distribution: str = "?"
    version: str = "?"
    entry_point: str = ""
    error: str | None = None
    hooks: list[str] = attrs.field(factory=list)

    @property
    def provider(self) -> Provider:
        return Provider(self.name, self.distribution, self.version)

    def describe(self) -> str:
        where = f" (entry point `{GROUP}: {self.entry_point}`)" if self.entry_point else ""
        return f"plugin `{self.name}` from {self.distribution} {self.version}{where}"


def _names(value: str | None) -> set[str] | None:
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


class Plugins:
    """A plugin manager, the plugins it loaded (or failed to), and the component registry they filled."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        #: plugins not loaded on purpose: (info, "NORTON_DISABLE_PLUGINS" or "NORTON_LOAD_PLUGINS")
        self.skipped: list[tuple[PluginInfo, str]] = []
        self.trace = False
        self._registry: Registry | None = None

    # -- loading ---------------------------------------------------------------------------------------------------

    def load_entrypoints(self, env: Mapping[str, str] | None = None) -> None:
        """Load every allowed entry point of the group, one at a time, recording failures instead of raising."""
        env = os.environ if env is None else env
        allow = _names(env.get("NORTON_LOAD_PLUGINS"))
        block = _names(env.get("NORTON_DISABLE_PLUGINS")) or set()
        if env.get("NORTON_TRACE_PLUGINS"):
            self._start_tracing()
        seen: dict[str, str] = {}
        eps = list(md.entry_points(group=GROUP))
        for ep in eps:
            dist = ep.dist.name if ep.dist is not None else "?"
            version = ep.dist.version if ep.dist is not None else "?"
            if ep.name in seen and seen[ep.name] != dist:
                raise PluginError(
                    f"two distributions provide the norton plugin `{ep.name}`: {seen[ep.name]} and {dist}; "
                    "uninstall one of them"
                )
            seen[ep.name] = dist
            info = PluginInfo(ep.name, dist, version, f"{ep.name} = {ep.value}")
            if ep.name in block or dist in block:
                self.pm.set_blocked(ep.name)
                self.skipped.append((info, "NORTON_DISABLE_PLUGINS"))
                continue
            if allow is not None and dist != BUILTIN_DISTRIBUTION and ep.name not in allow and dist not in allow:
                self.skipped.append((info, "NORTON_LOAD_PLUGINS"))
                continue
            if ep.name in self.infos:
                continue
            self.infos[ep.name] = info
            try:
                obj = ep.load()
                self.pm.register(obj, name=ep.name)
            except Exception as exc:  # a broken plugin must not take the others down
                info.error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                self.pm.unregister(name=ep.name) if self.pm.has_plugin(ep.name) else None
                continue
        known = {ep.name for ep in eps} | {ep.dist.name for ep in eps if ep.dist is not None}
        for variable, names in (("NORTON_LOAD_PLUGINS", allow or set()), ("NORTON_DISABLE_PLUGINS", block)):
            for name in sorted(names - known):
                installed = ", ".join(sorted(f"{ep.name} [{ep.dist.name if ep.dist else '?'}]" for ep in eps)) or "none"
                print(f"norton: warning: {variable} names {name!r}, which is no installed norton plugin or "
                      f"distribution (installed: {installed})", file=sys.stderr)
        self.check()

    def _start_tracing(self) -> None:
        if self.trace:
            return
        self.trace = True

        def before(name: str, impls: Any, kwargs: Any) -> None:
            print(f"norton: hook {name}({', '.join(kwargs)}) -> {[i.plugin_name for i in impls]}", file=sys.stderr)

        self.pm.add_hookcall_monitoring(before, lambda outcome, name, impls, kwargs: None)

    def register(self, obj: Any, name: str, distribution: str = "?", version: str = "?") -> None:
        """Register a plugin object directly (tests and notebooks); it is treated like an entry point."""
        self.pm.register(obj, name=name)
        self.infos[name] = PluginInfo(name, distribution, version)
        self._registry = None
        self.check()

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self.infos.pop(name, None)
        self._registry = None

    def check(self) -> None:
        """Fail on hook implementations that match no hook (typos), naming plugin and distribution."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            name = self.pm.get_name(exc.plugin) if exc.plugin is not None else None
            info = self.infos.get(name or "")
            who = info.describe() if info else "a plugin"
            raise PluginError(f"{who}: {exc}") from exc
        self._registry = None

    # -- registry --------------------------------------------------------------------------------------------------

    @property
    def registry(self) -> Registry:
        """Components registered by the loaded plugins (collected once, on first use)."""
        if self._registry is None:
            registry = Registry()
            for kind, hook_name in _REGISTER_HOOKS.items():
                for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                    info = self.infos.get(impl.plugin_name) or PluginInfo(impl.plugin_name)
                    register = Register(registry, kind, info.provider)
                    if self.trace:  # registration hooks are called one implementation at a time, not via pm.hook
                        print(f"norton: hook {hook_name}(register) -> [{impl.plugin_name!r}]", file=sys.stderr)
                    try:
                        impl.function(**({"register": register} if "register" in impl.argnames else {}))
                    except PluginError:
                        raise
                    except Exception as exc:
                        raise PluginError(f"{info.describe()} failed in {hook_name}: {exc!r}") from exc
            self._registry = registry
        return self._registry

    @property
    def broken(self) -> list[PluginInfo]:
        return [info for info in self.infos.values() if info.error]

    def broken_note(self) -> str:
        """What to append to 'unknown component' errors: plugins that failed to import, and plugins left out on
        purpose (by NORTON_DISABLE_PLUGINS or NORTON_LOAD_PLUGINS), any of which may provide the component."""
        notes = []
        if self.broken:
            parts = [f"{i.describe()} failed to import ({i.error})" for i in self.broken]
            notes.append("; ".join(parts) + "; disable it with NORTON_DISABLE_PLUGINS=" + ",".join(
                i.name for i in self.broken))
        for variable, verb in (("NORTON_DISABLE_PLUGINS", "disabled by"), ("NORTON_LOAD_PLUGINS", "not loaded: not in")):
            left_out = [info.describe() for info, why in self.skipped if why == variable]
            if left_out:
                notes.append(f"{verb} {variable}: {', '.join(left_out)}")
        return "".join(f"; note: {note}" for note in notes)

    def as_json(self) -> list[dict[str, Any]]:
        """What ``norton plugins`` prints: every plugin, its version, hooks and components (or error)."""
        by_plugin = self.registry.by_plugin()
        out = []
        for name, info in sorted(self.infos.items()):
            plugin = self.pm.get_plugin(name)
            hooks = sorted(c.name for c in self.pm.get_hookcallers(plugin) or []) if plugin is not None else []
            entry: dict[str, Any] = {
                "name": name,
                "distribution": info.distribution,
                "version": info.version,
                "entry_point": info.entry_point,
                "hooks": hooks,
                "components": by_plugin.get(name, {}),
            }
            if info.error:
                entry["error"] = info.error
            out.append(entry)
        return out

    # -- typed hook calls: one method per hook, so that a misspelt hook or argument fails the type check ---------

    def register_commands(self, subparsers: argparse._SubParsersAction) -> None:
        """:func:`~norton_core.plugin.hookspecs.norton_register_commands`."""
        _call(self.pm.hook.norton_register_commands, subparsers=subparsers)

    def run_start(self, run: RunContext) -> None:
        """:func:`~norton_core.plugin.hookspecs.norton_run_start`."""
        _call(self.pm.hook.norton_run_start, run=run)

    def epoch_start(self, run: RunContext, epoch: int) -> None:
        """:func:`~norton_core.plugin.hookspecs.norton_epoch_start`."""
        _call(self.pm.hook.norton_epoch_start, run=run, epoch=epoch)

    def retrieval_round_end(self, run: RunContext, epoch: int, stats: dict[str, Any]) -> None:
        """:func:`~norton_core.plugin.hookspecs.norton_retrieval_round_end`."""
        _call(self.pm.hook.norton_retrieval_round_end, run=run, epoch=epoch, stats=stats)

    def step_end(self, run: RunContext, step: int, metrics: dict[str, float]) -> None:
        """:func:`~norton_core.plugin.hookspecs.norton_step_end`."""
        _call(self.pm.hook.norton_step_end, run=run, step=step, metrics=metrics)

    def epoch_end(self, run: RunContext, epoch: int, metrics: dict[str, float]) -> None:
        """:func:`~norton_core.plugin.hookspecs.norton_epoch_end`."""
        _call(self.pm.hook.norton_epoch_end, run=run, epoch=epoch, metrics=metrics)

    def run_end(self, run: RunContext, metrics: dict[str, float]) -> None:
        """:func:`~norton_core.plugin.hookspecs.norton_run_end`."""
        _call(self.pm.hook.norton_run_end, run=run, metrics=metrics)


def _call(caller: pluggy.HookCaller, **kwargs: Any) -> None:
    """Call a hook; an exception inside a plugin gets the hook's name added to it."""
    try:
        caller(**kwargs)
    except Exception as exc:
        add_note = getattr(exc, "add_note", None)  # Python 3.11 and later
        if add_note is not None:
            add_note(f"raised inside the norton hook {caller.name}")
        raise


_default: Plugins | None = None


def default_plugins() -> Plugins:
    """The process-wide plugins, loaded from entry points on first use."""
    global _default
    if _default is None:
        plugins = Plugins()
        plugins.load_entrypoints()
        _default = plugins
    return _default


def set_default_plugins(plugins: Plugins | None) -> None:
    """Replace the process-wide plugins (tests use a fresh manager each)."""
    global _default
    _default = plugins
