"""The ``wsol`` command line.

Every module in :mod:`wsol.commands` that defines ``NAME``, ``HELP``, ``add_arguments(parser)``
and ``run(args) -> int`` becomes a sub-command; nested commands (``wsol prepare cub``) are built
by the module itself with sub-parsers.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

import wsol
import wsol.commands
from wsol.errors import UserError, WsolError

__all__ = ["UserError", "build_parser", "main"]


def _command_modules(only: str | None = None) -> list:
    """The sub-command modules. With ``only`` (a sub-command name), just that command's module
    is imported when its file follows the convention ``NAME.replace("-", "_")`` (so that, e.g.,
    ``wsol evaluate-maps`` does not import torch through the other commands); otherwise, or
    when no such module defines that NAME, every module."""
    names = [info.name for info in sorted(pkgutil.iter_modules(wsol.commands.__path__),
                                          key=lambda m: m.name) if not info.name.startswith("_")]
    if only is not None and only.replace("-", "_") in names:
        chosen = _load_commands([only.replace("-", "_")])
        if [m.NAME for m in chosen] == [only]:
            return chosen
    return _load_commands(names)


def _load_commands(names: list[str]) -> list:
    modules = []
    for name in names:
        module = importlib.import_module(f"wsol.commands.{name}")
        if all(hasattr(module, attr) for attr in ("NAME", "HELP", "add_arguments", "run")):
            modules.append(module)
    return modules


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``wsol`` parser with every sub-command, or, given the command line ``argv``, with
    only the sub-command it names (its first non-option word), which is all parsing needs."""
    parser = argparse.ArgumentParser(
        prog="wsol",
        description="Weakly supervised object localization: train, localize, evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"wsol {wsol.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    for module in _command_modules(chosen):
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may stand anywhere among the options (argparse only collects one
    # contiguous run of positionals): gather the others too.
    stray = [a for a in extra if "=" in a and not a.startswith("-")]
    if extra and (len(stray) != len(extra) or not hasattr(args, "overrides")):
        parser.parse_args(argv)  # the usual error message for what is not an override
    if stray:
        args.overrides = list(args.overrides or []) + stray
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (WsolError, OSError) as exc:
        # Input errors (wsol.errors) and file-system errors: one clear line, no traceback
        # (WSOL_DEBUG=1 shows it). Anything else is a bug and keeps its traceback.
        import os

        if os.environ.get("WSOL_DEBUG"):
            raise
        print(f"wsol {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
