"""``wsol methods [-v]``: the registered WSOL methods (``method.name``), optionally with every
option, its default and documentation."""

from __future__ import annotations

import argparse

NAME = "methods"
HELP = "list the registered WSOL methods (method.name) and their options"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="show every option")


def run(args: argparse.Namespace) -> int:
    from wsol.commands.config import format_options, method_options
    from wsol.methods import list_methods

    for name in list_methods():
        print(name)
        if args.verbose:
            print(format_options("options:", method_options(name)))
    return 0
