"""Plugin commands: ``norton describe KIND NAME`` (a component's options), the text behind ``norton plugins
--options``, and ``norton install`` / ``norton uninstall`` (pip in the interpreter norton runs in)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from norton_core.errors import PluginError
from norton_core.plugin.interfaces import KINDS
from norton_core.plugin.manager import Plugins, default_plugins
from norton_core.recipe.options import describe


def register_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("describe", help="a component's options: type, default, bounds and help")
    p.add_argument("kind", choices=KINDS, help="component kind")
    p.add_argument("name", help="registered name (see `norton plugins`)")
    p.set_defaults(func=_cmd_describe)
    for verb in ("install", "uninstall"):
        p = sub.add_parser(verb, help=f"pip {verb} plugin packages into the Python environment norton runs in")
        p.add_argument("packages", nargs="*", metavar="PACKAGE",
                       help="requirements, paths and pip options (-e DIR, -U), passed to pip as they are")
        p.set_defaults(func=_cmd_pip, verb=verb)


def _default_text(value: Any, required: bool) -> str:
    if required:
        return "(required)"
    if value is None:
        return "(unset)"
    return json.dumps(value) if isinstance(value, (str, list, dict, bool)) else repr(value)


def component_text(plugins: Plugins, kind: str, name: str) -> str:
    """``kind name`` with its provider and summary, then one aligned row per option."""
    entry = plugins.registry.get(kind, name)
    summary = " ".join((entry.cls.__doc__ or "").strip().split("\n\n")[0].split())
    lines = [f"{kind} {name!r}  ({entry.provider})" + (f": {summary}" if summary else "")]
    rows = [(o.key, o.type, _default_text(o.default, o.required), o.bounds, o.help) for o in describe(entry.cls.Config)]
    if not rows:
        lines.append("  (no options)")
    widths = [max([len(r[i]) for r in rows] + [0]) for i in range(4)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)]
        lines.append(("  " + "  ".join(cells) + "  " + row[4]).rstrip())
    return "\n".join(lines)


def all_options_text(plugins: Plugins) -> str:
    """Every registered component's options, by kind (``norton plugins --options``)."""
    blocks = [component_text(plugins, kind, name) for kind, name, _ in plugins.registry.items()]
    header = "columns: option, type, default, bounds, help"
    return "\n\n".join([header, *blocks])


def _cmd_describe(args: argparse.Namespace) -> int:
    plugins = default_plugins()
    if (args.kind, args.name) not in plugins.registry:
        raise PluginError(plugins.registry.unknown_message(args.kind, args.name) + plugins.broken_note())
    print(component_text(plugins, args.kind, args.name))
    return 0


def pip_passthrough(argv: list[str]) -> argparse.Namespace | None:
    """``norton install -e DIR``: everything after the verb goes to pip untouched (argparse would take ``-e``)."""
    if len(argv) >= 2 and argv[0] in ("install", "uninstall") and argv[1] not in ("-h", "--help"):
        return argparse.Namespace(func=_cmd_pip, verb=argv[0], packages=argv[1:])
    return None


def _cmd_pip(args: argparse.Namespace) -> int:
    """As ``llm install``: the plugin lands where norton can import it, whichever pip is first on PATH."""
    if not args.packages:
        raise PluginError(f"norton {args.verb}: name at least one package")
    extra = ["-y"] if args.verb == "uninstall" else []
    cmd = [sys.executable, "-m", "pip", args.verb, *extra, *args.packages]
    print(f"norton: running {' '.join(cmd)}", file=sys.stderr)
    return subprocess.run(cmd).returncode
