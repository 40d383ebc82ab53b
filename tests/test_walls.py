"""The walls between the rooms: core knows plugins only through entry points, plugins know core only through its
package face, pluggy stays in the plugin host, and the data room needs no engine."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).parents[1]
PLUGIN_PACKAGES = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["norton"].values())
PLUGIN_DIRS = [ROOT / "plugins", ROOT / "tests" / "example_plugin", ROOT / "tests" / "example_aligner"]
#: the only modules at norton_core's top level: the package face, the CLI, the errors and the pytest plugin
TOP_LEVEL = {"__init__.py", "cli.py", "errors.py", "testing.py"}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def sources(*roots: Path) -> list[Path]:
    return [path for root in roots for path in root.rglob("*.py") if "build" not in path.relative_to(root).parts]


def offenders(paths: list[Path], bad) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    found = {str(path.relative_to(ROOT)): sorted(name for name in imported_modules(path) if bad(name)) for path in paths}
    return {path: names for path, names in found.items() if names}


def test_norton_core_imports_no_builtin_plugin_package():
    assert {"norton_aligners", "norton_losses", "norton_models"} <= PLUGIN_PACKAGES
    assert offenders(sources(ROOT / "norton_core"), lambda name: name.split(".")[0] in PLUGIN_PACKAGES) == {}


def test_plugins_import_core_only_through_its_package_face():
    paths = sources(*PLUGIN_DIRS)
    assert len(paths) > 20
    assert offenders(paths, lambda name: name.startswith("norton_core.")) == {}


def test_norton_core_top_level_holds_only_the_face_cli_errors_and_pytest_plugin():
    modules = {path.name for path in (ROOT / "norton_core").glob("*.py")}
    assert modules == TOP_LEVEL


def test_pluggy_lives_only_in_the_plugin_host():
    paths = [p for p in sources(ROOT / "norton_core") if p.parent.name != "plugin" and p.name != "__init__.py"]
    assert offenders(paths, lambda name: name.split(".")[0] == "pluggy") == {}


def test_the_data_room_imports_no_engine_retrieval_or_evaluation_code():
    rooms = ("norton_core.engine", "norton_core.retrieval", "norton_core.evaluation", "norton_core.study")
    assert offenders(sources(ROOT / "norton_core" / "data"), lambda name: name.startswith(rooms)) == {}


def test_the_package_face_and_plugin_listing_do_not_import_torch():
    code = ("import sys, norton_core; from norton_core.plugin.manager import default_plugins; "
            "default_plugins().as_json(); print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_the_plugin_guide_lists_everything_the_package_face_exports():
    import norton_core

    guide = (ROOT / "docs" / "plugins" / "index.md").read_text()
    section = guide[guide.index("## What a plugin may import"):]
    assert [name for name in norton_core.__all__ if name != "__version__" and f"`{name}`" not in section] == []
