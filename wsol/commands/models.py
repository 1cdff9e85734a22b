"""``wsol models [PATTERN] [-v]``: the registered backbones (``model.name``), optionally with
every option, its default and documentation."""

from __future__ import annotations

import argparse

NAME = "models"
HELP = "list the registered backbones (model.name) and their options"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", nargs="?", default="*", help="glob, e.g. 'res*'")
    parser.add_argument("-v", "--verbose", action="store_true", help="show every option")


def run(args: argparse.Namespace) -> int:
    from wsol.commands.config import format_options, model_options
    from wsol.models import list_models

    for name in list_models(args.pattern):
        print(name)
        if args.verbose:
            print(format_options("options:", model_options(name)))
    return 0
