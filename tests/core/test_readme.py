"""The README is part of the product: its hook signatures and commands must stay true."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import norton_core.hookspecs as hookspecs

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()


def spec_signatures() -> dict[str, str]:
    return {name: f"{name}({', '.join(inspect.signature(fn).parameters)})"
            for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("norton_")}


def test_every_hook_is_documented_with_its_exact_signature():
    section = README.split("## Hooks reference", 1)[1].split("\n## ", 1)[0]
    documented = dict(re.findall(r"`((norton_\w+)\([^)]*\))`", section))
    documented = {name: sig for sig, name in re.findall(r"`((norton_\w+)\([^)]*\))`", section)}
    assert documented == spec_signatures()


def test_every_hook_is_documented_in_hookspecs():
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction):
        if name.startswith("norton_"):
            doc = inspect.getdoc(fn) or ""
            for param in inspect.signature(fn).parameters:
                assert f":param {param}:" in doc, (name, param)


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"```bash\n(.*?)\n```", README, re.S)
    test_command = next(c for c in commands if c.rstrip().endswith("-m pytest"))
    assert test_command in (ROOT / ".ci" / "run").read_text()
    assert "torch==2.13.0" in (ROOT / ".ci" / "constraints.txt").read_text()


def test_readme_plugin_example_is_the_tested_example_plugin():
    code = re.search(r"```python\n# norton_example_loss/__init__.py\n(.*?)```", README, re.S).group(1)
    source = (ROOT / "tests" / "example_plugin" / "norton_example_loss" / "__init__.py").read_text()
    body = source.split("from __future__ import annotations\n\n", 1)[1]
    assert code.strip() == body.strip()
