"""The docs site is part of the product: every code block in docs/ is checked or run here, and the generated
reference pages must match the code.

Each fenced block has a language, and each language has its check: Python examples are the tested example
plugins or are executed against the engine; TOML blocks are validated as the recipes, study files or package
metadata they are; every shell command is parsed by norton's own argument parser (a renamed option or command
fails here) and the paths it names must exist; a few cheap sessions run for real. ``text`` blocks are output
samples, not commands. Commands named in prose (inline code) must name real commands and options.

A new page's blocks are checked as they are; a new Python example needs its first line in ``PYTHON_EXAMPLES``
with the test that runs it, and a new kind of shell command a branch in ``check_command``.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import re
import shlex
import sys
import types
from pathlib import Path
from typing import Any

import pytest

import norton_core.plugin.hookspecs as hookspecs
from norton_core.plugin.manager import Plugins
from norton_core.testing import builtin_plugins

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).parents[2]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^[ \t]*```(\w*)\n(.*?)^[ \t]*```$", re.S | re.M)  # indented ones too (in lists)
LANGUAGES = {"python", "toml", "sh", "bash", "text", "json"}
#: the first line of every Python block, and the test that runs it
PYTHON_EXAMPLES = {
    "# norton_example_loss/__init__.py": "test_loss_example_is_the_tested_example_plugin",
    "# norton_example_aligner/__init__.py": "test_aligner_example_is_the_tested_example_aligner",
    "# norton_lsh/__init__.py": "test_retrieval_backend_example_works_with_the_engine",
    "# norton_my_task/__init__.py": "test_evaluator_example_scores_a_planted_model",
    "# an exported model, from Python": "test_export_example_embeds_with_an_exported_model",
    "# norton_frame_means/__init__.py": "test_extractor_example_registers_and_embeds",
}


def blocks(language: str | None = None) -> list[tuple[str, str, str]]:
    """``(page, language, code)`` of every fenced block of the docs pages (README.md has its own test)."""
    found = []
    for page in sorted(DOCS.rglob("*.md")):
        for lang, code in FENCE.findall(page.read_text(encoding="utf-8")):
            if language is None or lang == language or (language == "sh" and lang == "bash"):
                found.append((str(page.relative_to(ROOT)), lang, code))
    return found


def python_example(first_line: str) -> str:
    (code,) = [code for _, _, code in blocks("python") if code.splitlines()[0] == first_line]
    return code


def exec_module(name: str, code: str) -> types.ModuleType:
    module = types.ModuleType(name)
    exec(compile(code, f"docs:{name}", "exec"), module.__dict__)
    return module


# ------------------------------------------------------------------------------------------------------------------
# the generated reference pages
# ------------------------------------------------------------------------------------------------------------------


def _generator() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("generate_reference", DOCS / "generate_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_pages_match_the_code():
    assert _generator().stale_pages() == [], "run `python docs/generate_reference.py` and commit the pages"


def test_a_changed_option_makes_the_options_page_stale(monkeypatch):
    from norton_core.recipe.options import OptionInfo

    generator = _generator()
    page = generator.options_page()
    assert "| `videos_per_batch` | `integer` | `64` | `>= 1` | V: videos per batch" in page
    monkeypatch.setattr("norton_core.recipe.options.describe",
                        lambda cls: [OptionInfo("x", "integer", 1, False, "", "help")])
    assert "| `x` | `integer` | `1` |  | help |" in generator.options_page()


def test_a_stale_page_fails_the_docs_build(tmp_path, monkeypatch):
    from mkdocs import exceptions  # the test extra installs mkdocs
    generator = _generator()
    (tmp_path / "reference").mkdir()
    for rel in generator.PAGES:
        (tmp_path / rel).write_text((DOCS / rel).read_text())
    monkeypatch.setattr(generator, "DOCS", tmp_path)
    generator.on_pre_build(config=None)  # current pages: the build goes on
    (tmp_path / "reference" / "hooks.md").write_text("# Hooks reference\n\nedited by hand\n")
    with pytest.raises(exceptions.PluginError, match="docs/reference/hooks.md differ"):
        generator.on_pre_build(config=None)


def test_table_cells_escape_markdown_outside_code():
    escape = _generator()._escape
    assert escape("a|b <name> `x|y` d_e *f* [g]") == "a\\|b &lt;name&gt; `x\\|y` d\\_e \\*f\\* \\[g\\]"


def test_hooks_reference_gives_every_hook_with_its_exact_signature():
    page = (DOCS / "reference" / "hooks.md").read_text()
    documented = {m.group(1): m.group(0) for m in re.finditer(r"^(norton_\w+)\((.*)\)( -> .*)?$", page, re.M)}
    specs = {name: fn for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("norton_")}
    assert set(documented) == set(specs)
    for name, fn in specs.items():
        params = re.findall(r"(\w+)(?::[^,]*)?(?:, |$)", documented[name].split("(", 1)[1].rsplit(")", 1)[0])
        assert params == list(inspect.signature(fn).parameters), name


def test_every_hook_parameter_is_documented_in_hookspecs():
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction):
        if name.startswith("norton_"):
            doc = inspect.getdoc(fn) or ""
            for param in inspect.signature(fn).parameters:
                assert f":param {param}:" in doc, (name, param)


# ------------------------------------------------------------------------------------------------------------------
# every block has a checked language
# ------------------------------------------------------------------------------------------------------------------


def test_every_block_has_a_language_that_is_checked():
    untagged = [(page, code.splitlines()[:1]) for page, lang, code in blocks() if lang not in LANGUAGES]
    assert untagged == []


def test_every_python_block_is_run_by_a_test():
    firsts = [code.splitlines()[0] for _, _, code in blocks("python")]
    assert sorted(firsts) == sorted(PYTHON_EXAMPLES)
    for test in PYTHON_EXAMPLES.values():
        assert test in globals(), test


def test_json_blocks_are_json():
    for page, _, code in blocks("json"):
        try:
            json.loads(code)
        except ValueError as exc:
            raise AssertionError(f"{page}: a json block does not parse ({exc})") from None


def test_text_blocks_are_output_not_commands():
    for page, _, code in blocks("text"):
        for line in code.splitlines():
            assert not re.match(r"(\$ |norton |norton-run |python |pip )", line), (page, line)


# ------------------------------------------------------------------------------------------------------------------
# Python examples
# ------------------------------------------------------------------------------------------------------------------


def _body(path: Path) -> str:
    return path.read_text().split("from __future__ import annotations\n\n", 1)[1].strip()


def test_loss_example_is_the_tested_example_plugin():
    code = python_example("# norton_example_loss/__init__.py").split("\n", 1)[1]
    assert code.strip() == _body(ROOT / "tests" / "example_plugin" / "norton_example_loss" / "__init__.py")


def test_aligner_example_is_the_tested_example_aligner():
    code = python_example("# norton_example_aligner/__init__.py").split("\n", 1)[1]
    assert code.strip() == _body(ROOT / "tests" / "example_aligner" / "norton_example_aligner" / "__init__.py")


def test_retrieval_backend_example_works_with_the_engine():
    import numpy as np

    from norton_core import build
    from norton_core.plugin.manager import Plugins
    from norton_core.retrieval.round import check_results

    plugins = Plugins()
    plugins.register(exec_module("norton_lsh", python_example("# norton_lsh/__init__.py")), name="lsh",
                     distribution="norton-lsh")
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


def test_evaluator_example_scores_a_planted_model(tmp_path):
    import numpy as np

    from norton_core.evaluation import run_evaluation
    from tests.evaluation.fakes import FakeModel, concepts

    plugins = builtin_plugins()
    plugins.register(exec_module("norton_my_task", python_example("# norton_my_task/__init__.py")), name="my_task")
    root = tmp_path / "my_task"
    (root / "features").mkdir(parents=True)
    for k in range(5):  # video k shows concept 10+k for 20 s; the planted model embeds caption "w<j>" as concept j
        np.save(root / "features" / f"v{k}.npy", np.tile(concepts()[10 + k], (20, 1)).astype(np.float16))
    captions = ["w10", "w11", "w12", "w11", "w14", "w15"]  # v3's caption names v1's concept; v5 has no features
    (root / "pairs.json").write_text(json.dumps([{"video": f"v{k}", "caption": c} for k, c in enumerate(captions)]))
    model = FakeModel(FakeModel.Config()).eval()
    results = run_evaluation(model, ["my-task"], tmp_path, plugins=plugins, progress=False)
    # four captions find their own video first, one does not (and ranks it somewhere in 2..5): R@1 = 4/5, the
    # median rank is 1, and every true video is within the 5 candidates
    assert results == pytest.approx({"my_task/R@1": 80.0, "my_task/R@5": 100.0, "my_task/MR": 1.0,
                                     "my_task/pairs": 5.0, "my_task/videos": 5.0,
                                     "my_task/skipped_missing_features": 1.0})


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, norton_plugins: Plugins) -> Path:
    """A user's fresh working directory, offline, with norton's own plugins."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def norton(words: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run a documented ``norton`` / ``norton-run`` command in this process; its stdout."""
    from norton_core.cli import main

    argv = words[1:] if words[0] == "norton" else ["run", *words[1:]]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, (words, out, err)
    return out


@pytest.mark.slow
def test_export_example_embeds_with_an_exported_model(in_tmp, capsys):
    import numpy as np

    smoke = ROOT / "recipes" / "smoke_cpu.toml"
    smallest = ("run.output_dir=\"runs\"", "run.cache_dir=\"cache\"", "evaluation.after=false", "train.max_steps=1",
                "retrieval.enabled=false", "data.videos=8", "data.youcook2_videos=1", "data.htm_align_videos=1")
    norton(["norton-run", str(smoke), *[arg for option in smallest for arg in ("--set", option)]], capsys)
    norton(["norton", "export", "runs/smoke_cpu", "exports/how2_demo"], capsys)
    features = np.random.default_rng(0).normal(size=(40, 512)).astype(np.float32)
    scope = {"features": features}
    exec(compile(python_example("# an exported model, from Python"), "docs:export", "exec"), scope)
    assert scope["videos"].shape[0] == 1 and scope["scores"].shape == (2, 1) and np.isfinite(scope["scores"]).all()


# ------------------------------------------------------------------------------------------------------------------
# TOML: recipes, study files, package metadata
# ------------------------------------------------------------------------------------------------------------------


def _example_plugins() -> Plugins:
    """The built-in plugins plus every example plugin the docs write, so their recipes validate."""
    sys.path.insert(0, str(ROOT / "tests" / "example_aligner"))
    try:
        import norton_example_aligner
    finally:
        sys.path.pop(0)
    plugins = builtin_plugins()
    plugins.register(norton_example_aligner, name="example_aligner", distribution="norton-example-aligner")
    plugins.register(exec_module("norton_lsh", python_example("# norton_lsh/__init__.py")), name="lsh")
    plugins.register(exec_module("norton_my_task", python_example("# norton_my_task/__init__.py")), name="my_task")
    return plugins


def _check_requires(raw: dict[str, Any]) -> None:
    """A recipe's ``requires`` names one of the documented example distributions, at a version it has."""
    from packaging.requirements import Requirement

    examples = {}
    for pyproject in (ROOT / "tests").glob("example_*/pyproject.toml"):
        project = tomllib.loads(pyproject.read_text())["project"]
        examples[project["name"]] = project["version"]
    for text in raw.get("requires", []):
        req = Requirement(text)
        assert req.name in examples and examples[req.name] in req.specifier, text


def _validate_recipe(page: str, code: str, tmp_path: Path) -> None:
    from norton_core import RecipeError
    from norton_core.recipe.load import load_recipe

    raw = tomllib.loads(code)
    _check_requires(raw)
    text = re.sub(r"^requires = .*$", "", code, flags=re.M)  # checked above: the examples are not installed here
    if "extends" not in raw:  # a fragment: over the seconds-long shipped recipe
        text = f'extends = "{ROOT / "recipes" / "smoke_cpu.toml"}"\n' + text
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    try:
        load_recipe(path, plugins=_example_plugins())
    except RecipeError as exc:
        # the one acceptable problem: an optional package of one of norton's extras that this machine lacks
        extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        for line in str(exc).splitlines()[1:] or [str(exc)]:
            named = re.search(r"pip install 'norton\[(\w+)\]'", line)
            assert named and named.group(1) in extras and importlib.util.find_spec(named.group(1)) is None, (page, line)


def _check_study(page: str, code: str, tmp_path: Path) -> None:
    from norton_core.study.spec import load_study

    raw = tomllib.loads(code)
    if "base" not in raw and "arms" in raw:  # a fragment of arms: a study over the seconds-long recipe with them
        path = tmp_path / "fragment.toml"
        path.write_text(f'name = "fragment"\nbase = "{ROOT / "recipes" / "smoke_cpu.toml"}"\n{code}')
        assert [a.name for a in load_study(path).arms] == [a["name"] for a in raw["arms"]], page
        return
    if "base" not in raw:  # a fragment: the named cases of a shipped study, as they are written there
        shipped = tomllib.loads((ROOT / "studies" / "recipe_defaults.toml").read_text())["variants"]["cases"]
        for case, overrides in raw["variants"]["cases"].items():
            assert shipped[case] == overrides, (page, case)
        return
    (tmp_path / "studies").mkdir()
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    path = tmp_path / "studies" / f"{raw['name']}.toml"
    path.write_text(code)
    # a base recipe written out earlier on the same page (its first line names the file) is written beside it
    for other_page, _, other in blocks("toml"):
        if other_page == page and other.strip().splitlines()[0].strip() == f"# {raw['base']}":
            (tmp_path / "studies" / raw["base"]).write_text(other)
    study = load_study(path)
    assert study.name == raw["name"]


def _check_pyproject(page: str, code: str) -> None:
    project = tomllib.loads(code.split("\n", 1)[1])["project"]
    modules = set(project["entry-points"]["norton"].values())
    examples = {c.splitlines()[0][2:].split("/")[0] for p, _, c in blocks("python") if p == page}
    assert modules <= examples, (page, modules)  # the entry point is the module the page writes
    for example in (ROOT / "tests").glob("example_*/pyproject.toml"):
        shipped = tomllib.loads(example.read_text())["project"]
        if shipped["name"] == project["name"]:
            assert shipped["entry-points"] == project["entry-points"] and shipped["version"] == project["version"]


def toml_blocks() -> list[tuple[str, str]]:
    return [(page, code) for page, _, code in blocks("toml")]


@pytest.mark.parametrize(("page", "code"), toml_blocks(), ids=[f"{p}:{i}" for i, (p, _) in enumerate(toml_blocks())])
def test_toml_block_is_a_valid_recipe_study_or_pyproject(page, code, tmp_path):
    tomllib.loads(code)
    if code.startswith("# pyproject.toml"):
        _check_pyproject(page, code)
    elif re.search(r"^\s*(base|seeds|arms|\[variants)", code, re.M):  # blocks inside lists are indented
        _check_study(page, code, tmp_path)
    else:
        _validate_recipe(page, code, tmp_path)


# ------------------------------------------------------------------------------------------------------------------
# shell commands
# ------------------------------------------------------------------------------------------------------------------


def commands(code: str) -> list[list[str]]:
    """The commands of a shell block: continuations joined, comments, redirections and separators removed."""
    code = code.replace("\\\n", " ").replace("$(which norton-run)", "norton-run")
    out = []
    for line in code.splitlines():
        lexer = shlex.shlex(re.sub(r"\s\d?>&\d", " ", line), posix=True, punctuation_chars=";&|<>")
        lexer.whitespace_split, lexer.commenters = True, "#"
        command: list[str] = []
        words = iter([*lexer, ";"])
        for word in words:
            if word in (">", ">>", "<"):
                next(words)  # the redirection's file
            elif word in (";", "&", "&&", "||", "|"):
                if command:
                    out.append(command)
                command = []
            else:
                command.append(word)
    return out


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += [sub, *_subparsers(sub)]
    return found


def _parse_norton(argv: list[str], where: str) -> None:
    from norton_core.cli import build_parser
    from norton_core.plugin.cli import pip_passthrough

    if pip_passthrough(argv) is not None:
        return
    parser = build_parser()
    for sub in [parser, *_subparsers(parser)]:
        sub.allow_abbrev = False  # the docs write every option in full
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"{where}: `norton {' '.join(argv)}` does not parse") from exc
    assert getattr(args, "func", None) is not None, (where, argv)


def check_command(words: list[str], where: str, readme_commands: str) -> None:
    program, args = words[0], words[1:]
    for arg in args:  # paths into the repository exist
        if re.match(r"(recipes|studies|benchmarks|tests)/", arg):
            assert (ROOT / arg).exists(), (where, arg)
    if program == "norton":
        _parse_norton(args, where)
    elif program == "norton-run":
        _parse_norton(["run", *args], where)
    elif program == "torchrun":
        assert "norton-run" in args, (where, words)
        _parse_norton(["run", *args[args.index("norton-run") + 1:]], where)
    elif program in ("python", "python3") and args and args[0].endswith(".py"):
        source = (ROOT / args[0]).read_text()
        for flag in (a.split("=")[0] for a in args[1:] if a.startswith("--")):
            assert f'"{flag}"' in source, (where, flag)  # the script declares the option
    elif program == "python3" and args[:2] == ["-m", "venv"] or program.startswith(".venv/bin/"):
        assert " ".join(words) in readme_commands, (where, words)  # the set-up commands are the README's
    elif program in ("mkfifo", "ln", "echo", "truncate", "ls", "grep", "sed", "mkdir", "cp"):
        pass  # plain shell around norton: setting up an example's files, listing what it wrote
    elif program in ("set", "sleep", "kill"):
        pass  # job control around norton: preempting a run the way a scheduler does
    elif program != "wait":
        raise AssertionError(f"{where}: no check for the command {words}")


def sh_blocks() -> list[tuple[str, str]]:
    return [(page, code) for page, _, code in blocks("sh")]


@pytest.mark.parametrize(("page", "code"), sh_blocks(), ids=[f"{p}:{i}" for i, (p, _) in enumerate(sh_blocks())])
def test_shell_block_commands_parse_and_name_existing_files(page, code):
    readme = (ROOT / "README.md").read_text()
    readme_commands = " ".join(" ".join(c) for block in re.findall(r"```bash\n(.*?)\n```", readme, re.S)
                               for c in commands(block))
    found = commands(code)
    assert found, page
    for words in found:
        check_command(words, page, readme_commands)


def test_the_command_check_catches_a_renamed_option_and_a_missing_file():
    with pytest.raises(AssertionError, match="does not parse"):
        check_command(["norton", "evaluate", "runs/x", "--checkpoint", "all"], "test", "")
    with pytest.raises(AssertionError):
        check_command(["norton-run", "recipes/no_such_recipe.toml"], "test", "")
    with pytest.raises(AssertionError, match="no check"):
        check_command(["rm", "-rf", "runs"], "test", "")
    assert commands("a b \\\n  c  # note\nd > out.json; e 2>&1 &\nwait") == [["a", "b", "c"], ["d"], ["e"], ["wait"]]


def _block_with(page: str, text: str) -> str:
    (code,) = [code for p, _, code in blocks("sh") if p == page and text in code]
    return code


def test_the_recipes_session_runs(in_tmp, capsys):
    outputs = {" ".join(words[:2]): norton(words, capsys)
               for words in commands(_block_with("docs/recipes.md", "norton recipes copy"))}
    assert "# default" in outputs["norton-run mine.toml"]  # --explain: where each value came from
    assert outputs["norton describe"].startswith("loss 'norton'")


@pytest.mark.slow
def test_the_data_rehearsal_runs(in_tmp, capsys):
    outputs = [norton(words, capsys) for words in commands(_block_with("docs/data.md", "norton prepare synthetic"))]
    assert '"ok": true, "videos": 40' in outputs[-1]


def inline_commands() -> list[tuple[str, str]]:
    """``(page, span)`` of every inline code span of README.md and the docs pages that starts a norton command."""
    found = []
    for page in [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]:
        prose = FENCE.sub("", page.read_text(encoding="utf-8"))
        found += [(page.relative_to(ROOT).as_posix(), " ".join(span.split()))
                  for span in re.findall(r"`(norton(?:-run)? [^`]*)`", prose)]
    return found


def check_inline_command(span: str, where: str) -> None:
    """A command named in prose (often with placeholders): its subcommands exist and take each ``--option`` given."""
    from norton_core.cli import build_parser

    words = span.split()
    parser = build_parser()
    (top,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert words[0] == "norton-run" or words[1] in top.choices or words[1].isupper(), f"{where}: `{span}`: no command"
    for word in (["run"] if words[0] == "norton-run" else []) + words[1:]:
        (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)] or [None]
        if sub is None or word not in sub.choices:
            break
        parser = sub.choices[word]
    for word in words:
        if word.startswith("--"):
            assert word.split("=")[0] in parser._option_string_actions, f"{where}: `{span}`: no option {word}"


def test_inline_commands_name_real_commands_and_options():
    spans = inline_commands()
    assert len(spans) > 50
    for page, span in spans:
        check_inline_command(span, page)
    with pytest.raises(AssertionError, match="no option --checkpoint"):
        check_inline_command("norton evaluate RUN --checkpoint all", "test")
    with pytest.raises(AssertionError, match="no command"):
        check_inline_command("norton evalute RUN", "test")


def test_extractor_example_registers_and_embeds():
    import types

    import torch

    from norton_core import build
    from norton_core.plugin.manager import Plugins

    module = types.ModuleType("norton_frame_means")
    exec(compile(python_example("# norton_frame_means/__init__.py"), "docs/extract.md", "exec"), module.__dict__)
    plugins = Plugins()
    plugins.register(module, name="frame-means")
    extractor = build("feature_extractor", "frame-means", {"grid": 4}, plugins=plugins)
    chunks = torch.rand(3, extractor.decode.frames_per_row, 3, extractor.decode.crop, extractor.decode.crop)
    rows = extractor.embed(chunks)
    assert rows.shape == (3, extractor.output.width) == (3, 48)
    assert torch.allclose(rows[1], extractor.embed(chunks[1:2])[0])  # a row depends on its own chunk only
    assert torch.allclose(rows[0, :16].mean(), chunks[0, :, 0].mean(), atol=1e-6)  # the red cells average red

