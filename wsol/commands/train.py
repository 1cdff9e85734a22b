"""``wsol train --config FILE [key=value ...]``: train a method end to end (see wsol.engine.train).

``wsol train --resume --run-dir DIR`` continues a run from its own ``config.yaml``: no config
or override needs repeating. An override that changes a saved value is refused (the run would
no longer be what its config says) unless ``--allow-change`` is given; keys that shape the
model (``model.*``, ``method.*``) can never change on resume. A finished run says so and does
nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "train"
HELP = "train a WSOL method from a YAML config (torchrun-compatible)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config: a file, or the name of a shipped config "
                                         "(see `wsol config list`)")
    parser.add_argument("--run-dir", help="output directory (overrides run_dir in the config)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --run-dir from its config.yaml and "
                             "checkpoints/last.pt")
    parser.add_argument("--allow-change", action="store_true",
                        help="with --resume: accept overrides that change saved values "
                             "(not model.* / method.*)")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing run directory (only files wsol wrote)")
    parser.add_argument("--stop-after-epochs", type=int, default=None, metavar="N",
                        help="stop cleanly after N epochs of this invocation (resume later)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. optim.lr=0.01 method.name=cream")


def resume_config(run_dir: Path, overrides: list[str], allow_change: bool,
                  config_file: str | None = None) -> dict:
    """The config of a run to resume: its ``config.yaml`` plus ``overrides``, refusing changes
    (see the module docstring)."""
    from wsol.config import flatten, load_config, resolve_config_path
    from wsol.errors import ConfigError, RunDirError

    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        raise RunDirError(f"--resume: {saved_path} does not exist (is {run_dir} a wsol run?)")
    saved = load_config(saved_path)
    wanted = load_config(resolve_config_path(config_file) if config_file else saved_path,
                         overrides)
    changed = {k: (v, flatten(wanted).get(k)) for k, v in flatten(saved).items()
               if flatten(wanted).get(k) != v}
    changed.update({k: (None, v) for k, v in flatten(wanted).items() if k not in flatten(saved)})
    changed.pop("run_dir", None)
    if changed:
        shape = sorted(k for k in changed if k.startswith(("model.", "method.")))
        if shape:
            raise ConfigError(f"--resume: {', '.join(shape)} would change the model of the run "
                              f"in {run_dir}; start a new run instead")
        if not allow_change:
            desc = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items()))
            raise ConfigError(f"--resume: the overrides change the run's saved config ({desc}); "
                              "pass --allow-change to accept that, or resume without them")
    wanted["run_dir"] = str(run_dir)
    return wanted


def run(args: argparse.Namespace) -> int:
    from wsol.config import load_config, resolve_config_path
    from wsol.engine import distributed as dist_utils
    from wsol.engine.train import train
    from wsol.errors import UserError

    overrides = list(args.overrides)
    if args.resume and args.force:
        raise UserError("--resume and --force exclude each other")
    if args.resume:
        run_dir = args.run_dir
        if run_dir is None:
            if not args.config:
                raise UserError("--resume needs --run-dir (or a --config naming run_dir)")
            run_dir = load_config(resolve_config_path(args.config), overrides).get("run_dir")
            if not run_dir:
                raise UserError("--resume needs --run-dir")
        config = resume_config(Path(run_dir), overrides, args.allow_change, args.config)
    else:
        if args.allow_change:
            raise UserError("--allow-change only applies with --resume")
        if args.run_dir:
            overrides.append(f"run_dir={args.run_dir}")
        config = load_config(resolve_config_path(args.config) if args.config else None,
                             overrides)
    try:
        result = train(config, resume=args.resume, force=args.force,
                       progress=not args.no_progress, stop_after_epochs=args.stop_after_epochs)
        rank = dist_utils.get_rank()
    finally:
        dist_utils.cleanup()
    if rank == 0:
        if result.get("already_finished"):
            print(f"wsol train: the run in {config['run_dir']} is already finished "
                  f"({result.get('epoch', '?')} selected epoch); results: "
                  f"{Path(config['run_dir']) / 'results.json'}")
            return 0
        summary = {k: v for k, v in result.items() if k != "splits"}
        for split, res in result.get("splits", {}).items():
            summary[split] = {k: res[k] for k in ("top1_cls", "top1_loc", "gt_known_loc",
                                                  "MaxBoxAccV2", "MaxBoxAcc", "PxAP") if k in res}
        print(json.dumps(summary, indent=2))
    return 0
