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


def _command_modules() -> list:
    modules = []
    for info in sorted(pkgutil.iter_modules(wsol.commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"wsol.commands.{info.name}")
        if all(hasattr(module, attr) for attr in ("NAME", "HELP", "add_arguments", "run")):
            modules.append(module)
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsol",
        description="Weakly supervised object localization: train, localize, evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"wsol {wsol.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
