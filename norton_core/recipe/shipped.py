"""The recipes shipped with norton: where they are installed, their one-line purpose, and name lookup.

The files live in the checkout's top-level ``recipes/`` directory. A wheel installs them as package data under
``norton_core/recipes/`` (``pyproject.toml`` maps that data package onto ``recipes/``); an editable install uses the
checkout's directory itself. A shipped recipe is named by its file stem (``how2_demo``) from anywhere: in
``extends``, in ``run.pretrain_recipe`` and on the command line.
"""

from __future__ import annotations

import re
from pathlib import Path

from norton_core.errors import RecipeError

#: the norton_core package directory
_PACKAGE = Path(__file__).resolve().parents[1]


def shipped_dir() -> Path:
    """The directory holding the shipped ``*.toml`` recipes (installed copy first, then the checkout's)."""
    for candidate in (_PACKAGE / "recipes", _PACKAGE.parent / "recipes"):
        if candidate.is_dir() and any(candidate.glob("*.toml")):
            return candidate
    raise RecipeError(f"the shipped recipes are missing: neither {_PACKAGE / 'recipes'} nor {_PACKAGE.parent / 'recipes'} "
                      "holds *.toml files (reinstall norton)")


def shipped_names() -> list[str]:
    return sorted(p.stem for p in shipped_dir().glob("*.toml"))


def is_recipe_name(text: str) -> bool:
    """A bare name (no directory part, no ``.toml``) names a shipped recipe; anything else is a path."""
    return bool(text) and "/" not in text and "\\" not in text and not text.endswith(".toml") and text not in (".", "..")


def shipped_path(name: str) -> Path:
    """The file of the shipped recipe ``name``; an unknown name lists the shipped ones."""
    path = shipped_dir() / f"{name}.toml"
    if not path.is_file():
        import difflib

        names = shipped_names()
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise RecipeError(f"no shipped recipe named {name!r}{hint}; shipped: {', '.join(names)} (`norton recipes`)")
    return path


def purpose(path: Path) -> str:
    """The first sentence of the recipe's header comment (its one-line purpose)."""
    words: list[str] = []
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped.startswith("#") or not stripped.lstrip("#").strip():
            break
        words.append(stripped.lstrip("#").strip())
    text = " ".join(words)
    match = re.search(r"\.(\s|$)", text)
    return text[: match.start() + 1] if match else text


def resolve_recipe_ref(ref: str, base: Path | None) -> Path:
    """Where ``extends`` / ``run.pretrain_recipe`` point: a bare name is a shipped recipe; a path is relative to
    ``base`` (the directory of the recipe file that wrote it; the working directory for ``--set``)."""
    if is_recipe_name(ref):
        return shipped_path(ref)
    path = Path(ref).expanduser()
    return path if path.is_absolute() else (base or Path.cwd()) / path
