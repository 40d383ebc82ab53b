"""The README is part of the product: its hook signatures and commands must stay true."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import norton_core.plugin.hookspecs as hookspecs

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


def test_readme_retrieval_backend_example_works_with_the_engine():
    import types

    import numpy as np

    from norton_core import build
    from norton_core.plugin.manager import Plugins
    from norton_core.retrieval.round import check_results

    code = re.search(r"```python\n# norton_lsh/__init__.py\n(.*?)```", README, re.S).group(1)
    module = types.ModuleType("norton_lsh")
    exec(compile(code, "README.md", "exec"), module.__dict__)
    plugins = Plugins()
    plugins.register(module, name="lsh", distribution="norton-lsh")
    backend = build("retrieval_backend", "lsh", {"planes": 3}, plugins=plugins, seed=7)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16)).astype(np.float32)
    vectors = (centres.repeat(25, 0) + 0.05 * rng.normal(size=(100, 16))).astype(np.float32)
    backend.build(vectors, np.arange(100, dtype=np.int64))
    queries = np.arange(0, 100, 10, dtype=np.int64)
    found = check_results(backend.search(queries, 8), len(queries), 8, 100, backend)
    # well-separated clusters: every returned neighbour is from the query's own cluster, nearest first
    for q, row in zip(queries, found, strict=True):
        row = row[row >= 0]
        assert row[0] == q and set(row // 25) == {q // 25}


def test_readme_aligner_example_is_the_tested_example_aligner():
    code = re.search(r"```python\n# norton_example_aligner/__init__.py\n(.*?)```", README, re.S).group(1)
    source = (ROOT / "tests" / "example_aligner" / "norton_example_aligner" / "__init__.py").read_text()
    assert code.strip() == source.split("from __future__ import annotations\n\n", 1)[1].strip()


def test_readme_names_every_shipped_recipe():
    section = README.split("## Recipes\n", 1)[1].split("\n## ", 1)[0]
    for path in (ROOT / "recipes").glob("*.toml"):
        assert f"`{path.stem}`" in section, path.stem
