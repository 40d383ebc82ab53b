"""norton_core knows interfaces only: it imports no built-in plugin package (they arrive through entry points)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).parents[1]
PLUGIN_PACKAGES = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["norton"].values())


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_norton_core_imports_no_builtin_plugin_package():
    assert {"norton_aligners", "norton_losses", "norton_models"} <= PLUGIN_PACKAGES
    offenders = {str(path.relative_to(ROOT)): sorted(name for name in imported_modules(path)
                                                     if name.split(".")[0] in PLUGIN_PACKAGES)
                 for path in (ROOT / "norton_core").rglob("*.py")}
    assert {path: names for path, names in offenders.items() if names} == {}
