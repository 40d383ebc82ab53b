"""The README is part of the product: its commands, its table and its links must stay true. The docs pages it
links to are checked by tests/docs/test_docs.py."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()
COMMANDS = re.findall(r"```bash\n(.*?)\n```", README, re.S)


def test_readme_is_a_summary():
    assert len(README.splitlines()) <= 250


def test_ci_runs_the_readme_test_command():
    test_command = next(c for c in COMMANDS if c.rstrip().endswith("-m pytest"))
    assert test_command in (ROOT / ".ci" / "run").read_text()
    assert "torch==2.13.0" in (ROOT / ".ci" / "constraints.txt").read_text()


def test_the_demo_command_sets_up_as_the_tested_command_does_and_runs_the_demo_recipe():
    test_command = next(c for c in COMMANDS if c.rstrip().endswith("-m pytest"))
    demo = next(c for c in COMMANDS if "norton-run" in c)
    setup, run = demo.rsplit(" && ", 1)
    assert setup == test_command.rsplit(" && ", 1)[0].replace('-e ".[test]"', "-e .")
    assert run == ".venv/bin/norton-run recipes/how2_demo.toml" and (ROOT / "recipes" / "how2_demo.toml").is_file()


def test_the_docs_quick_start_gives_the_same_commands_and_demo_table():
    index = (ROOT / "docs" / "index.md").read_text()
    assert re.findall(r"```bash\n(.*?)\n```", index, re.S) == COMMANDS
    table = re.compile(r"^\| metric \| chance .*?\n\n", re.S | re.M)
    assert table.search(README).group(0) == table.search(index).group(0)


def test_readme_links_point_at_files_that_exist():
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    local = [link for link in links if not re.match(r"https?://", link)]
    assert len(local) >= 10
    for link in local:
        assert (ROOT / link).exists(), link


def test_readme_commands_table_names_every_command_and_is_the_docs_table():
    from norton_core.cli import build_parser
    from norton_core.plugin.manager import Plugins, set_default_plugins

    table = re.compile(r"^\| command \| what it does \|\n.*?\n\n", re.S | re.M)
    section = table.search(README).group(0)
    assert section == table.search((ROOT / "docs" / "reference" / "commands.md").read_text()).group(0)
    named = set(re.findall(r"`norton ([a-z-]+)", section)) | {"run"}  # `norton-run RECIPE` (= `norton run RECIPE`)
    builtin = Plugins()
    builtin.load_entrypoints(env={"NORTON_LOAD_PLUGINS": ""})  # an installed plugin's commands are its own docs'
    set_default_plugins(builtin)
    try:
        (sub,) = [a for a in build_parser()._actions if a.dest == "command"]
    finally:
        set_default_plugins(None)
    assert named == set(sub.choices)


def test_readme_names_every_shipped_recipe():
    section = README.split("## Recipes\n", 1)[1].split("\n## ", 1)[0]
    for path in (ROOT / "recipes").glob("*.toml"):
        assert f"`{path.stem}`" in section, path.stem


def test_readme_shell_examples_are_docs_blocks_where_they_are_checked():
    docs_blocks = {code for page in (ROOT / "docs").rglob("*.md")
                   for code in re.findall(r"```(?:sh|bash)\n(.*?)\n```", page.read_text(), re.S)}
    examples = re.findall(r"```sh\n(.*?)\n```", README, re.S)
    assert examples and [code for code in examples if code not in docs_blocks] == []

