"""The ``norton`` and ``norton-run`` commands.

User errors (:class:`~norton_core.errors.NortonError`) print one line per problem and exit 2; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence

from norton_core import __version__
from norton_core.engine.preempt import command_is_the_process
from norton_core.errors import NortonError
from norton_core.plugin.manager import default_plugins

#: core modules that add their own subcommands (data preparation, evaluation, reading runs back, shipped recipes,
#: plugin options and installs, studies, feature extraction)
_CORE_COMMANDS = ("norton_core.data.cli", "norton_core.evaluation.cli", "norton_core.runs.cli", "norton_core.recipe.cli",
                  "norton_core.plugin.cli", "norton_core.study.cli", "norton_core.extract.cli")


def _add_recipe_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="a TOML recipe: a path, or the name of a shipped recipe (`norton recipes`)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE",
                        help="override a recipe value; VALUE is parsed as TOML (quote strings)")


def _cmd_plugins(args: argparse.Namespace) -> int:
    if args.options:
        from norton_core.plugin.cli import all_options_text

        print(all_options_text(default_plugins()))
        return 0
    print(json.dumps(default_plugins().as_json(), indent=2))
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from norton_core.recipe.load import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    print(f"{args.recipe}: ok ({', '.join(f'{p}={s.name}' for p, s in recipe.components.items())})")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from norton_core.recipe.load import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    if args.dry_run or args.explain:
        print(f"# resolved recipe: {recipe.source}")
        if args.explain:
            print("# each value: the file:line (or --set) it came from, or default; paths: -> their absolute form")
        print(recipe.to_toml(explain=args.explain))
        return 0
    from norton_core.engine import train, until_exit

    allow = tuple(k.strip() for k in (args.allow_recipe_change or "").split(",") if k.strip())
    with until_exit(lambda m: print(m, flush=True)):
        train(recipe, resume=args.resume, overwrite=args.overwrite, allow_recipe_change=allow)
    return 0


def _add_run_parser(parser: argparse.ArgumentParser) -> None:
    _add_recipe_args(parser)
    parser.add_argument("--dry-run", action="store_true", help="validate and print the resolved recipe, then stop")
    parser.add_argument("--explain", action="store_true",
                        help="with --dry-run: say for every value which file and line (or --set) it came from")
    parser.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="discard an existing run directory of the same name")
    parser.add_argument("--allow-recipe-change", metavar="KEYS",
                        help="comma-separated dotted keys that may differ from the checkpoint's recipe on --resume")
    parser.set_defaults(func=_cmd_run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="norton", description="Noise-robust video-text pretraining.")
    parser.add_argument("--version", action="version", version=f"norton {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("plugins", help="list installed plugins and their components as JSON")
    p.add_argument("--options", action="store_true",
                   help="instead: every component's options with type, default, bounds and help (text)")
    p.set_defaults(func=_cmd_plugins)
    p = sub.add_parser("validate", help="validate a recipe and report every problem")
    _add_recipe_args(p)
    p.set_defaults(func=_cmd_validate)
    _add_run_parser(sub.add_parser("run", help="train (and evaluate) as a recipe says"))

    for module_name in _CORE_COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.register_commands(sub)
    default_plugins().register_commands(sub)
    return parser


def _warn_broken() -> None:
    """A plugin that failed to import is reported once; a recipe that needs it fails later with the same name."""
    for info in default_plugins().broken:
        print(f"norton: warning: {info.describe()} failed to import: {info.error} "
              f"(disable it with NORTON_DISABLE_PLUGINS={info.name})", file=sys.stderr)


def _dispatch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if args.func is not _cmd_plugins:
        _warn_broken()
    try:
        return int(args.func(args) or 0)
    except NortonError as exc:
        for line in exc.lines():
            print(f"norton: error: {line}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        print("norton: interrupted", file=sys.stderr)
        return 130


def _quiet_broken_pipe(run: Callable[[], int]) -> int:
    """``norton plugins | head``: the reader left; stop without a traceback, with the shell's SIGPIPE status."""
    try:
        code = run()
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
        return 141


def main(argv: Sequence[str] | None = None) -> int:
    return _quiet_broken_pipe(lambda: _main(argv))


def program_main() -> int:
    """The ``norton`` program: :func:`main` as the process's last work (see :func:`.preempt.until_exit`)."""
    command_is_the_process()
    return main()


def program_run_main() -> int:
    """The ``norton-run`` program."""
    command_is_the_process()
    return run_main()


def _main(argv: Sequence[str] | None) -> int:
    from norton_core.plugin.cli import pip_passthrough

    # before the plugins load: `norton uninstall` must work when a broken plugin breaks the CLI's start-up
    passthrough = pip_passthrough(list(sys.argv[1:] if argv is None else argv))
    if passthrough is not None:
        return int(passthrough.func(passthrough))
    try:
        parser = build_parser()
    except NortonError as exc:  # a plugin that breaks the CLI's own start-up
        for line in exc.lines():
            print(f"norton: error: {line}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    return _dispatch(args, parser)


def run_main(argv: Sequence[str] | None = None) -> int:
    """``norton-run RECIPE ...``: the same as ``norton run RECIPE ...``."""
    return _quiet_broken_pipe(lambda: _run_main(argv))


def _run_main(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="norton-run", description="Train (and evaluate) as a recipe says.")
    _add_run_parser(parser)
    args = parser.parse_args(argv)
    try:
        default_plugins()
    except NortonError as exc:
        for line in exc.lines():
            print(f"norton: error: {line}", file=sys.stderr)
        return 2
    return _dispatch(args, parser)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(program_main())
