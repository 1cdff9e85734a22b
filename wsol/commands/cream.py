"""``wsol cream fit``: put CREAM on top of a trained checkpoint of any method without retraining.

One pass over the train split (evaluation transforms, no augmentation) computes the class-specific
foreground/background context embeddings (:func:`wsol.methods.cream.fit_embeddings`) on the
features the method's map is computed from, guided by its own map. A CAM checkpoint becomes a
``cream`` checkpoint (CREAM on CAM); a checkpoint of another method (HaS, ACoL, SPG, ADL, CutMix)
becomes the same method with ``cream: true``; a checkpoint that already has CREAM gets fresh
embeddings. ``wsol evaluate`` / ``wsol localize`` use the result like any other checkpoint.
"""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "cream"
HELP = "CREAM utilities: fit context embeddings for a trained checkpoint of any method"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="cream_command", metavar="SUBCOMMAND", required=True)
    fit = sub.add_parser(
        "fit", help="compute CREAM's embeddings for a trained checkpoint",
        description="Put CREAM on a trained checkpoint of any method without retraining: the "
                    "class-specific foreground/background context embeddings (Eq.3-4) are "
                    "computed from the training images' CAM-guided feature averages, and the "
                    "result is a checkpoint that `wsol evaluate` / `wsol localize` use like any "
                    "other (stages cam, calibrated, fused).")
    fit.add_argument("--checkpoint", required=True,
                     help="trained checkpoint of any method (cam, has, acol, spg, adl, cutmix)")
    fit.add_argument("--out", required=True, help="output CREAM checkpoint (.pt)")
    fit.add_argument("--split", default=None, help="split to fit on (default: data.train_split)")
    fit.add_argument("--mode", choices=("mean", "momentum"), default="mean",
                     help="mean: exact per-class average (default); momentum: the training rule")
    fit.add_argument("--device", default=None)
    fit.add_argument("--force", action="store_true", help="overwrite --out")
    fit.add_argument("--no-progress", action="store_true")
    fit.add_argument("overrides", nargs="*", metavar="key=value",
                     help="CREAM options (method.tau=0.2 method.iterations=2 ...) or data paths")


_CREAM_BUFFERS = ("fg_embeddings", "bg_embeddings", "update_count")


def cream_config(method_section: dict) -> dict:
    """The method section of the CREAM version of a method: ``cam`` -> ``cream`` (CREAM on
    CAM, the existing configs), any other method -> the same with ``cream: true``."""
    section = dict(method_section)
    if section["name"] == "cam":
        return {"name": "cream", **{k: v for k, v in section.items() if k != "name"}}
    if section["name"] != "cream":
        section["cream"] = True
    return section


def run(args: argparse.Namespace) -> int:
    import copy

    import torch
    from torch.utils.data import DataLoader

    from wsol.config import ConfigError, parse_overrides, set_key
    from wsol.engine import distributed as dist_utils
    from wsol.engine.build import build_from_config
    from wsol.engine.checkpoint import load_method, save_checkpoint
    from wsol.engine.data import build_split
    from wsol.engine.evaluate import ShardSampler
    from wsol.methods.cream import fit_embeddings

    out = Path(args.out)
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists; use --force to overwrite it")
    method_opts = [o for o in args.overrides if o.startswith("method.")]
    other = [o for o in args.overrides if not o.startswith("method.")]
    source, info = load_method(args.checkpoint, "cpu", overrides=other)
    if source.maps_need_grad:
        raise ConfigError(f"{args.checkpoint}: CREAM cannot be added to {source.name!r} (its map "
                          "needs gradients); use a cam/has/acol/spg/adl/cutmix checkpoint")
    config = copy.deepcopy(info["config"])
    config["method"] = cream_config(config["method"])
    for key, value in parse_overrides(method_opts):
        set_key(config, key, value, source=f"override {key}={value}")
    cream = build_from_config(config, num_classes=info["num_classes"], pretrained=False)
    # The trained weights; the embeddings start from their seeded init, as after training.
    weights = {k: v for k, v in source.state_dict().items() if k not in _CREAM_BUFFERS}
    missing, unexpected = cream.load_state_dict(weights, strict=False)
    if unexpected or set(missing) - set(_CREAM_BUFFERS):
        raise ConfigError(f"{args.checkpoint}: the weights do not fit {config['method']} "
                          f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    device = dist_utils.init_distributed(args.device or config["device"])
    cream.to(device)
    cream.reduce_fn = dist_utils.all_reduce_sum
    split = args.split or config["data"]["train_split"]
    dataset, _, _ = build_split(config, split, train=False, backbone=cream.backbone)
    loader = DataLoader(dataset, batch_size=config["data"]["eval_batch_size"],
                        sampler=ShardSampler(len(dataset)),
                        num_workers=config["data"]["num_workers"])
    with torch.no_grad():
        fit_embeddings(cream, loader, device, mode=args.mode,
                       progress=not args.no_progress and dist_utils.is_main_process())
    if dist_utils.is_main_process():
        save_checkpoint(out, cream, config=config, class_names=info["class_names"],
                        epoch=info["epoch"], best_metric=info["best_metric"],
                        best_epoch=info["best_epoch"])
        counts = cream.update_count.cpu()
        print(f"fitted CREAM embeddings ({config['method']['name']}) on {len(dataset)} images "
              f"of split {split!r} ({int((counts[0] > 0).sum())}/{counts.shape[1]} classes with "
              f"a foreground); wrote {out}")
    dist_utils.cleanup()
    return 0
