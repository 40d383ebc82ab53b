"""Recipe files that are not recipes: each is one line naming the file and what was expected (or the limit hit),
never a hang, a MemoryError or a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from norton_core.errors import RecipeError
from norton_core.recipe.files import MAX_EXTENDS_DEPTH
from norton_core.recipe.load import load_recipe
from norton_core.recipe.options import MAX_UNKNOWN_LINES
from tests.plugin.fakes import recipe_text
from tests.recipe.test_load import plugins, write  # noqa: F401 (the fixture)


def one_line(info: pytest.ExceptionInfo) -> str:
    lines = info.value.lines()
    assert len(lines) == 1, lines
    return lines[0]


def test_a_fifo_named_as_a_recipe_is_refused_without_blocking(tmp_path, plugins):  # noqa: F811
    os.mkfifo(tmp_path / "r.toml")
    began = time.monotonic()
    with pytest.raises(RecipeError) as info:
        load_recipe(tmp_path / "r.toml", plugins=plugins)
    assert "r.toml: is a FIFO (named pipe), not a regular file; expected a recipe" in one_line(info)
    assert time.monotonic() - began < 2


def test_an_extends_target_that_is_dev_zero_or_a_sparse_20_gb_file_is_refused(tmp_path, plugins):  # noqa: F811
    (tmp_path / "zero.toml").symlink_to("/dev/zero")
    with open(tmp_path / "sparse.toml", "wb") as fh:
        fh.truncate(20 * 1024**3)
    child = write(tmp_path, 'extends = "zero.toml"\n', "child.toml")
    with pytest.raises(RecipeError) as info:
        load_recipe(child, plugins=plugins)
    assert "zero.toml: is a character device, not a regular file" in one_line(info)
    child.write_text('extends = "sparse.toml"\n')
    with pytest.raises(RecipeError) as info:
        load_recipe(child, plugins=plugins)
    assert "sparse.toml: 21474836480 bytes, more than the 1 MiB limit for a recipe" in one_line(info)


def test_non_utf8_recipe_bytes_are_one_line_naming_the_byte(tmp_path, plugins):  # noqa: F811
    path = tmp_path / "r.toml"
    path.write_bytes(recipe_text().encode() + b'\n# caf\xe9\n')
    with pytest.raises(RecipeError) as info:
        load_recipe(path, plugins=plugins)
    assert "r.toml: not UTF-8 text (byte" in one_line(info) and "is 0xe9" in one_line(info)


def test_an_extends_cycle_through_symlinks_is_one_line(tmp_path, plugins):  # noqa: F811
    (tmp_path / "d").symlink_to(tmp_path)  # d/ is the directory itself: d/a.toml, d/d/a.toml... are a.toml
    write(tmp_path, 'extends = "d/d/b.toml"\n', "a.toml")
    write(tmp_path, 'extends = "d/a.toml"\n', "b.toml")
    with pytest.raises(RecipeError, match=r"extends: cycle .*a\.toml -> .*b\.toml -> .*a\.toml"):
        load_recipe(tmp_path / "a.toml", plugins=plugins)
    (tmp_path / "x.toml").symlink_to(tmp_path / "y.toml")  # a loop of symbolic links
    (tmp_path / "y.toml").symlink_to(tmp_path / "x.toml")
    write(tmp_path, 'extends = "x.toml"\n', "c.toml")
    with pytest.raises(RecipeError) as info:
        load_recipe(tmp_path / "c.toml", plugins=plugins)
    assert "x.toml" in one_line(info)


def test_an_extends_chain_deeper_than_the_limit_is_refused(tmp_path, plugins):  # noqa: F811
    for i in range(MAX_EXTENDS_DEPTH + 5):
        write(tmp_path, f'extends = "r{i + 1}.toml"\n', f"r{i}.toml")
    with pytest.raises(RecipeError) as info:
        load_recipe(tmp_path / "r0.toml", plugins=plugins)
    assert f"extends: more than {MAX_EXTENDS_DEPTH} levels (the limit)" in one_line(info)


def test_ten_thousand_unknown_keys_are_reported_fast_in_a_screenful(tmp_path, plugins):  # noqa: F811
    stray = "".join(f"stray_{i} = {i}\n" for i in range(10_000))
    path = write(tmp_path, recipe_text().replace("[train]\n", "[train]\n" + stray))
    began = time.perf_counter()
    with pytest.raises(RecipeError) as info:
        load_recipe(path, plugins=plugins)
    took = time.perf_counter() - began
    lines = info.value.lines()
    assert took < 1.0, f"{took:.2f} s"
    assert len(lines) == MAX_UNKNOWN_LINES + 1
    first = path.read_text().splitlines().index("stray_0 = 0") + 1
    assert lines[0].startswith(f"{path}:{first}: train.stray_0: unknown key; allowed keys: epochs, ")
    assert lines[-1].startswith(f"{path}:{first + MAX_UNKNOWN_LINES}: train.stray_{MAX_UNKNOWN_LINES}: and "
                                f"{10_000 - MAX_UNKNOWN_LINES} more unknown keys in this table (e.g. 'stray_20'")


def test_many_problems_print_a_bounded_number_of_lines(tmp_path, plugins):  # noqa: F811
    from norton_core.recipe.files import MAX_PROBLEM_LINES

    text = recipe_text()
    for table in ("[run]\n", "[train]\n", "[retrieval]\n"):  # 25 stray keys in each: 3 x 21 lines
        text = text.replace(table, table + "".join(f"stray_{i} = {i}\n" for i in range(25)))
    path = write(tmp_path, text)
    with pytest.raises(RecipeError) as info:
        load_recipe(path, plugins=plugins)
    lines = info.value.lines()
    assert len(lines) == MAX_PROBLEM_LINES + 1
    assert lines[-1] == f"{path}: ... and {3 * 21 - MAX_PROBLEM_LINES} more problem(s) not shown (at most " \
                        f"{MAX_PROBLEM_LINES} are listed)"


def test_a_fifo_recipe_from_the_command_line_exits_2_with_one_line(tmp_path):
    os.mkfifo(tmp_path / "r.toml")
    done = subprocess.run([sys.executable, "-m", "norton_core.cli", "run", str(tmp_path / "r.toml"), "--dry-run"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "is a FIFO (named pipe), not a regular file" in done.stderr
