"""``wsol config show [FILE] [key=value ...]`` and ``wsol config list``.

``show`` prints the resolved config (defaults <- file <- overrides, exactly what ``wsol train``
would use and save as ``config.yaml``) followed by every option of the chosen model and method:
name, default and one line of documentation, read from their signatures and docstrings.
``list`` prints the configs shipped in the package (``wsol train --config NAME``).
"""

from __future__ import annotations

import argparse

NAME = "config"
HELP = "show the resolved config with every model/method option, or list shipped configs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="config_command", metavar="{show,list}", required=True)
    show = sub.add_parser("show", help="print the resolved config and the options of its model "
                                       "and method", description=__doc__)
    show.add_argument("file", nargs="?", help="YAML config file or shipped config name")
    show.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    sub.add_parser("list", help="list the configs shipped in the package")


def format_options(title: str, options) -> str:
    lines = [f"# {title}"]
    for opt in options:
        default = "(required)" if opt.required else repr(opt.default)
        doc = opt.doc or opt.annotation
        lines.append(f"#   {opt.name} = {default}" + (f"  -- {doc}" if doc else ""))
    if len(lines) == 1:
        lines.append("#   (no options)")
    return "\n".join(lines)


def model_options(name: str):
    from wsol.models.registry import _MODELS, list_models
    from wsol.utils.signature import options_of

    list_models()
    if name not in _MODELS:
        return None
    return options_of(_MODELS[name], skip=("num_classes", "pretrained"))


def method_options(name: str):
    from wsol.methods.registry import _METHODS, list_methods
    from wsol.utils.signature import options_of

    list_methods()
    if name not in _METHODS:
        return None
    return options_of(_METHODS[name], skip=("backbone",))


def run(args: argparse.Namespace) -> int:
    from wsol.config import dump_config, list_configs, load_config, resolve_config_path
    from wsol.errors import ConfigError

    if args.config_command == "list":
        for name in list_configs():
            print(name)
        return 0
    file, overrides = args.file, list(args.overrides)
    if file is not None and "=" in file:  # `wsol config show key=value ...` without a file
        file, overrides = None, [file, *overrides]
    config = load_config(resolve_config_path(file) if file else None, overrides)
    print(dump_config(config).rstrip())
    model, method = config["model"]["name"], config["method"]["name"]
    m_opts, me_opts = model_options(model), method_options(method)
    if m_opts is None:
        raise ConfigError(f"model.name {model!r} is not a registered model (see `wsol models`)")
    if me_opts is None:
        raise ConfigError(f"method.name {method!r} is not a registered method "
                          "(see `wsol methods`)")
    print()
    print(format_options(f"options of model {model!r} (model.<option>=value):", m_opts))
    print(format_options(f"options of method {method!r} (method.<option>=value):", me_opts))
    return 0
