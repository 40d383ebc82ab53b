"""The plugin surface is explicit: every hook has one typed method on the manager with the hook's own signature,
and each method calls its own hook with its own arguments."""

from __future__ import annotations

import inspect

from norton_core import hookimpl
from norton_core.plugin import hookspecs
from norton_core.plugin.manager import _REGISTER_HOOKS, Plugins

HOOKS = {name: fn for name, fn in vars(hookspecs).items() if name.startswith("norton_") and callable(fn)}
REGISTRATION = set(_REGISTER_HOOKS.values())
CALLED = {name: fn for name, fn in HOOKS.items() if name not in REGISTRATION}


def test_every_hook_is_a_registration_hook_or_has_a_typed_method_with_its_signature():
    assert REGISTRATION <= set(HOOKS)
    assert "norton_run_start" in CALLED and "norton_register_commands" in CALLED
    for name, spec in CALLED.items():
        method = getattr(Plugins, name.removeprefix("norton_"), None)
        assert method is not None, f"Plugins has no method for {name}"
        want = list(inspect.signature(spec).parameters.values())
        got = list(inspect.signature(method).parameters.values())[1:]  # less self
        assert [(p.name, p.annotation) for p in got] == [(p.name, p.annotation) for p in want], name


def test_each_method_calls_its_own_hook_with_its_arguments():
    calls: list[tuple[str, dict[str, object]]] = []

    class Recorder:
        pass

    recorder = Recorder()
    for name, spec in CALLED.items():
        setattr(recorder, name, hookimpl(_recording_impl(name, list(inspect.signature(spec).parameters), calls)))
    plugins = Plugins()
    plugins.register(recorder, name="recorder")
    for name, spec in CALLED.items():
        args = {p: f"{name}:{p}" for p in inspect.signature(spec).parameters}
        getattr(plugins, name.removeprefix("norton_"))(**args)
    assert calls == [(name, {p: f"{name}:{p}" for p in inspect.signature(spec).parameters})
                     for name, spec in CALLED.items()]


def _recording_impl(name: str, params: list[str], calls: list[tuple[str, dict[str, object]]]) -> object:
    """A hook implementation taking exactly ``params`` by keyword (pluggy reads the argument names)."""
    namespace: dict[str, object] = {"calls": calls}
    exec(f"def {name}({', '.join(params)}):\n    calls.append(({name!r}, dict({', '.join(f'{p}={p}' for p in params)})))",
         namespace)
    return namespace[name]
