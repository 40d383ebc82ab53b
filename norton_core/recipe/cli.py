"""``norton recipes``: list the shipped recipes with their purpose, print one, or copy one to edit."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from norton_core.errors import RecipeError
from norton_core.recipe.shipped import purpose, shipped_dir, shipped_names, shipped_path


def register_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recipes", help="list the shipped recipes; `show NAME` prints one, `copy NAME [DEST]` copies it")
    p.set_defaults(func=_cmd_list)
    actions = p.add_subparsers(dest="recipes_command", metavar="ACTION")
    show = actions.add_parser("show", help="print a shipped recipe")
    show.add_argument("name", help="a shipped recipe's name (e.g. how2_demo)")
    show.set_defaults(func=_cmd_show)
    copy = actions.add_parser("copy", help="copy a shipped recipe to edit it")
    copy.add_argument("name", help="a shipped recipe's name (e.g. how2_demo)")
    copy.add_argument("dest", nargs="?", help="file or directory (default: ./NAME.toml)")
    copy.add_argument("--force", action="store_true", help="replace an existing file")
    copy.set_defaults(func=_cmd_copy)


def _cmd_list(args: argparse.Namespace) -> int:
    names = shipped_names()
    width = max(len(n) for n in names)
    for name in names:
        print(f"{name:<{width}}  {purpose(shipped_path(name))}")
    print(f"\n({shipped_dir()}; run one with `norton-run NAME`, extend it with extends = \"NAME\")")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    print(shipped_path(args.name).read_text(), end="")
    return 0


def _cmd_copy(args: argparse.Namespace) -> int:
    source = shipped_path(args.name)
    dest = Path(args.dest) if args.dest else Path(f"{args.name}.toml")
    if dest.is_dir():
        dest = dest / source.name
    if dest.exists() and not args.force:
        raise RecipeError(f"{dest}: already exists (use --force to replace it)")
    text, changed = _names_for_relative_references(source.read_text())
    dest.write_text(text)
    print(f"copied {args.name} to {dest}")
    for old, new in changed:
        print(f"  {old} -> {new}  (a shipped recipe, found by name from anywhere)")
    return 0


def _names_for_relative_references(text: str) -> tuple[str, list[tuple[str, str]]]:
    """Shipped recipes name each other by relative path (they sit together); a copy elsewhere names them by
    their shipped name instead, so that it works where it is written."""
    changed = []

    def swap(match: re.Match[str]) -> str:
        new = f'{match.group(1)}"{Path(match.group(2)).stem}"'
        changed.append((match.group(0).strip(), new.strip()))
        return new

    pattern = re.compile(r'^(\s*(?:extends|pretrain_recipe)\s*=\s*)"([A-Za-z0-9_.-]+\.toml)"', re.M)
    return pattern.sub(swap, text), changed
