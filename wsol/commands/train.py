"""``wsol train --config FILE [key=value ...]``: train a method end to end (see wsol.engine.train)."""

from __future__ import annotations

import argparse
import json

NAME = "train"
HELP = "train a WSOL method from a YAML config (torchrun-compatible)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config (configs/{method}_{backbone}_{dataset}.yaml)")
    parser.add_argument("--run-dir", help="output directory (overrides run_dir in the config)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --run-dir from checkpoints/last.pt")
    parser.add_argument("--force", action="store_true", help="overwrite an existing run directory")
    parser.add_argument("--stop-after-epochs", type=int, default=None, metavar="N",
                        help="stop cleanly after N epochs of this invocation (resume later)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. optim.lr=0.01 method.name=cream")


def run(args: argparse.Namespace) -> int:
    from wsol.config import load_config
    from wsol.engine import distributed as dist_utils
    from wsol.engine.train import train

    overrides = list(args.overrides)
    if args.run_dir:
        overrides.append(f"run_dir={args.run_dir}")
    config = load_config(args.config, overrides)
    if args.resume and args.force:
        raise ValueError("--resume and --force exclude each other")
    try:
        result = train(config, resume=args.resume, force=args.force,
                       progress=not args.no_progress, stop_after_epochs=args.stop_after_epochs)
        rank = dist_utils.get_rank()
    finally:
        dist_utils.cleanup()
    if rank == 0:
        summary = {k: v for k, v in result.items() if k != "splits"}
        for split, res in result.get("splits", {}).items():
            summary[split] = {k: res[k] for k in ("top1_cls", "top1_loc", "gt_known_loc",
                                                  "MaxBoxAccV2", "MaxBoxAcc", "PxAP") if k in res}
        print(json.dumps(summary, indent=2))
    return 0
