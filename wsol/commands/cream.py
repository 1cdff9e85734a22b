"""``wsol cream fit``: put CREAM on top of a trained CAM-style checkpoint without retraining.

One pass over the train split (evaluation transforms, no augmentation) computes the class-specific
foreground/background context embeddings (:func:`wsol.methods.cream.fit_embeddings`); the result
is a CREAM checkpoint that ``wsol evaluate`` / ``wsol localize`` use like any other.
"""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "cream"
HELP = "CREAM utilities: fit context embeddings for an existing CAM checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="cream_command", metavar="SUBCOMMAND", required=True)
    fit = sub.add_parser("fit", help="compute CREAM's embeddings for a trained CAM checkpoint")
    fit.add_argument("--checkpoint", required=True, help="trained CAM (or CREAM) checkpoint")
    fit.add_argument("--out", required=True, help="output CREAM checkpoint (.pt)")
    fit.add_argument("--split", default=None, help="split to fit on (default: data.train_split)")
    fit.add_argument("--mode", choices=("mean", "momentum"), default="mean",
                     help="mean: exact per-class average (default); momentum: the training rule")
    fit.add_argument("--device", default=None)
    fit.add_argument("--force", action="store_true", help="overwrite --out")
    fit.add_argument("--no-progress", action="store_true")
    fit.add_argument("overrides", nargs="*", metavar="key=value",
                     help="CREAM options (method.tau=0.2 method.iterations=2 ...) or data paths")


def run(args: argparse.Namespace) -> int:
    import copy

    import torch
    from torch.utils.data import DataLoader

    from wsol.config import parse_overrides, set_key
    from wsol.engine import distributed as dist_utils
    from wsol.engine.checkpoint import load_method, save_checkpoint
    from wsol.engine.data import build_split
    from wsol.engine.evaluate import ShardSampler
    from wsol.methods.cream import CREAM, fit_embeddings

    out = Path(args.out)
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists; use --force to overwrite it")
    method_opts = [o for o in args.overrides if o.startswith("method.")]
    other = [o for o in args.overrides if not o.startswith("method.")]
    source, info = load_method(args.checkpoint, "cpu", overrides=other)
    config = copy.deepcopy(info["config"])
    kwargs = {k: v for k, v in config["method"].items() if k != "name"} \
        if config["method"]["name"] == "cream" else {}
    new_method_cfg = {"name": "cream", **kwargs}
    config["method"] = new_method_cfg
    for key, value in parse_overrides(method_opts):
        set_key(config, key, value, source=f"override {key}={value}")
    cream = CREAM.from_cam(source.backbone, **{k: v for k, v in config["method"].items()
                                               if k != "name"})
    device = dist_utils.init_distributed(args.device or config["device"])
    cream.to(device)
    split = args.split or config["data"]["train_split"]
    dataset, _, _ = build_split(config, split, train=False, backbone=cream.backbone)
    loader = DataLoader(dataset, batch_size=config["data"]["eval_batch_size"],
                        sampler=ShardSampler(len(dataset)),
                        num_workers=config["data"]["num_workers"])
    with torch.no_grad():
        fit_embeddings(cream, loader, device, mode=args.mode, progress=not args.no_progress)
    if dist_utils.is_main_process():
        save_checkpoint(out, cream, config=config, class_names=info["class_names"],
                        epoch=info["epoch"], best_metric=info["best_metric"],
                        best_epoch=info["best_epoch"])
        counts = cream.update_count.cpu()
        print(f"fitted CREAM embeddings on {len(dataset)} images of split {split!r} "
              f"({int((counts[0] > 0).sum())}/{counts.shape[1]} classes with a foreground); "
              f"wrote {out}")
    dist_utils.cleanup()
    return 0
