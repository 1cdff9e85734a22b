"""``wsol regressor {pseudo-boxes,train,evaluate}``: CREAM + regressor (the PSOL recipe).

::

    # 1. pseudo boxes for the train split from a CREAM checkpoint (threshold chosen on val)
    wsol evaluate --checkpoint cream/checkpoints/best.pt --split val --output val.json
    wsol regressor pseudo-boxes --checkpoint cream/checkpoints/best.pt --out pseudo \\
        --threshold-from val.json [method.stage=fused]
    # 2. a class-agnostic box regressor on them
    wsol regressor train --run-dir reg --metadata pseudo --image-root CUB_200_2011/images \\
        [--val-metadata metadata/CUB/val]
    # 3. class from the classifier, box from the regressor
    wsol regressor evaluate --regressor reg/checkpoints/best.pt \\
        --classifier cream/checkpoints/best.pt --split test

See :mod:`wsol.engine.regressor` for what each step computes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from wsol.errors import UserError

NAME = "regressor"
HELP = "CREAM + regressor: pseudo boxes from a checkpoint, train a box regressor, evaluate it"

SUMMARY_KEYS = ("top1_cls", "top5_cls", "top1_loc", "top5_loc", "gt_known_loc", "mean_box_acc",
                "mean_iou")


def _bool_or_path(text: str) -> bool | str:
    low = text.strip().lower()
    if low in ("true", "yes", "1"):
        return True
    if low in ("false", "no", "0"):
        return False
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="regressor_command", metavar="SUBCOMMAND", required=True)

    p = sub.add_parser("pseudo-boxes", help="pseudo GT boxes of a split from a WSOL checkpoint",
                       description="Localize every image of a split with the checkpoint's method "
                       "(GT class), upsample the maps to --map-size, and write the largest-contour "
                       "box at the threshold as a wsolevaluation metadata split OUT/<split>/.")
    p.add_argument("--checkpoint", required=True, help="trained WSOL checkpoint (CREAM)")
    p.add_argument("--out", required=True, help="metadata root to write (OUT/<split>/)")
    p.add_argument("--split", default=None, help="split to label (default: data.train_split)")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--threshold", type=float, help="box threshold t in [0, 1)")
    group.add_argument("--threshold-from", metavar="RESULTS.json",
                       help="use best_threshold_by_iou['50'] of a val-split results.json")
    p.add_argument("--map-size", type=int, default=448,
                   help="maps are upsampled to this square size before boxing (448, as PSOL)")
    p.add_argument("--batch-size", type=int, default=None, help="default: data.eval_batch_size")
    p.add_argument("--device", default=None, help="cpu | cuda | auto (default: config)")
    p.add_argument("--force", action="store_true", help="overwrite an existing OUT/<split>/")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="applied to the checkpoint's config (method.stage=fused, data.root=...)")
    p.set_defaults(_regressor=_run_pseudo_boxes)

    p = sub.add_parser("train", help="train a class-agnostic box regressor on pseudo boxes",
                       description="Train BoxRegressor (backbone + MLP -> 4 sigmoid, 50 x MSE, "
                       "random-resized-crop 0.2-1 + flip) on a pseudo-box metadata root.")
    p.add_argument("--config", help="YAML file with regressor config keys (optional)")
    p.add_argument("--run-dir", required=True, help="output directory")
    p.add_argument("--metadata", help="pseudo-box metadata root (holds <train split>/)")
    p.add_argument("--image-root", help="directory the image ids are relative to")
    p.add_argument("--val-metadata", help="split dir with real boxes: val box accuracy per epoch "
                   "and best.pt selection (e.g. metadata/CUB/val)")
    p.add_argument("--model", help="backbone name (default efficientnet_lite0)")
    p.add_argument("--pretrained", type=_bool_or_path,
                   help="true | false | checkpoint path (default true)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--image-size", type=int, help="regressor input size (default 224)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu | cuda | auto")
    p.add_argument("--resume", action="store_true",
                   help="continue --run-dir from checkpoints/last.pt (its config.yaml is the base)")
    p.add_argument("--force", action="store_true", help="overwrite an existing run directory")
    p.add_argument("--stop-after-epochs", type=int, default=None, metavar="N",
                   help="stop cleanly after N epochs of this invocation (resume later)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="other config keys, e.g. optim.lr_decay_every=10 regressor.hidden=256")
    p.set_defaults(_regressor=_run_train)

    p = sub.add_parser("evaluate", help="class from a classifier, box from a regressor",
                       description="Top-1/Top-5 Loc, GT-known Loc and box accuracy at IoU 30/50/70 "
                       "of one regressed box per image (no threshold sweep).")
    p.add_argument("--regressor", required=True, help="regressor checkpoint (.pt)")
    p.add_argument("--classifier", required=True, help="WSOL classifier checkpoint (.pt)")
    p.add_argument("--split", default="test", help="split under the classifier's data.metadata")
    p.add_argument("--output", help="results JSON (default: <regressor run>/eval/<split>/"
                   "results.json)")
    p.add_argument("--batch-size", type=int, default=None, help="default: data.eval_batch_size")
    p.add_argument("--device", default=None, help="cpu | cuda | auto (default: config)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --output")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="applied to the classifier's config (data.root=..., data.metadata=...)")
    p.set_defaults(_regressor=_run_evaluate)


def run(args: argparse.Namespace) -> int:
    return int(args._regressor(args) or 0)


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _run_dir_of(checkpoint: Path) -> Path:
    parent = checkpoint.parent
    return parent.parent if parent.name == "checkpoints" else parent


# --------------------------------------------------------------------------------------------
#: What `wsol regressor pseudo-boxes` writes into a split directory (all --force may remove).
PSEUDO_FILES = ("image_ids.txt", "class_labels.txt", "image_sizes.txt", "localization.txt",
                "pseudo_boxes.json")


def _run_pseudo_boxes(args: argparse.Namespace) -> int:
    from wsol.data.metadata import read_metadata, write_metadata
    from wsol.engine.checkpoint import load_method
    from wsol.engine.data import build_split, split_dir_name
    from wsol.engine.regressor import generate_pseudo_boxes
    from wsol.metrics.results import threshold_from_file
    from wsol.utils.io import atomic_write_json

    if args.map_size < 1:
        raise UserError(f"--map-size must be positive, got {args.map_size}")
    method, info = load_method(args.checkpoint, "cpu", overrides=args.overrides)
    config = info["config"]
    split = args.split or config["data"]["train_split"]
    split_out = Path(args.out) / split_dir_name(split)
    if split_out.exists() and any(split_out.iterdir()):
        if not args.force:
            raise FileExistsError(f"{split_out} exists and is not empty; use --force to "
                                  "overwrite it")
        foreign = sorted(p.name for p in split_out.iterdir() if p.name not in PSEUDO_FILES)
        if foreign:
            raise FileExistsError(f"--force: {split_out} holds files wsol did not write "
                                  f"({', '.join(foreign[:3])}); refusing to delete anything")
    if args.threshold is not None:
        if not 0.0 <= args.threshold < 1.0:
            raise UserError(f"--threshold must be in [0, 1), got {args.threshold}")
        threshold, source = float(args.threshold), {"given": True}
    else:
        refuse = tuple(config["data"].get("test_splits") or ()) + ("test",)
        threshold, source = threshold_from_file(args.threshold_from, "50", refuse)
        if source["split"] is None:
            print(f"note: {args.threshold_from} does not say which split it was computed on; "
                  "make sure it is the val split")
    device = _device(args.device or config["device"])
    method.to(device)
    dataset, metadata, _ = build_split(config, split, train=False, backbone=method.backbone)
    pseudo, report = generate_pseudo_boxes(
        method, dataset, metadata, threshold=threshold, map_size=args.map_size,
        normalization=config["eval"]["normalization"],
        batch_size=args.batch_size or config["data"]["eval_batch_size"],
        num_workers=config["data"]["num_workers"],
        progress=not args.no_progress, iou_thresholds=config["eval"]["iou_thresholds"])
    for name in PSEUDO_FILES:
        (split_out / name).unlink(missing_ok=True)
    write_metadata(pseudo, split_out)
    read_metadata(split_out)  # what the regressor will read back must validate
    report.update({"checkpoint": str(args.checkpoint), "method": info["method"],
                   "stage": config["method"].get("stage"), "model": config["model"]["name"],
                   "split": split, "input_size": config["data"]["image_size"],
                   "threshold_source": source, "overrides": list(args.overrides)})
    atomic_write_json(split_out / "pseudo_boxes.json", report)
    print(f"wrote {report['num_images']} pseudo boxes of split {split!r} to {split_out} "
          f"(threshold {threshold:g}, maps at {args.map_size}x{args.map_size}, "
          f"{report['blank_maps']} blank map(s))")
    acc = report["accuracy"]
    if acc is not None:
        cells = ", ".join(f"IoU>={d}: {v:.2f}%" for d, v in acc["box_acc_by_iou"].items())
        print(f"pseudo boxes vs the split's real boxes ({acc['num_images']} images): {cells}; "
              f"mean IoU {acc['mean_iou']:.2f}%")
    return 0


# --------------------------------------------------------------------------------------------
def _run_train(args: argparse.Namespace) -> int:
    import json

    import yaml

    from wsol.config import parse_overrides
    from wsol.engine.regressor import load_regressor_config, train_regressor

    if args.resume and args.force:
        raise UserError("--resume and --force exclude each other")
    run_dir = Path(args.run_dir)
    base = None
    if args.resume and (run_dir / "config.yaml").is_file():
        base = yaml.safe_load((run_dir / "config.yaml").read_text())  # resume its own config
    flags: dict[str, Any] = {"run_dir": str(run_dir)}
    for dest, key in (("metadata", "data.metadata"), ("image_root", "data.root"),
                      ("val_metadata", "data.val_metadata"), ("model", "model.name"),
                      ("pretrained", "model.pretrained"), ("epochs", "optim.epochs"),
                      ("lr", "optim.lr"), ("batch_size", "data.batch_size"),
                      ("image_size", "data.image_size"), ("seed", "seed"), ("device", "device")):
        value = getattr(args, dest)
        if value is not None:
            flags[key] = value
    config = load_regressor_config(args.config, {**flags, **dict(parse_overrides(args.overrides))},
                                   base=base)
    summary = train_regressor(config, resume=args.resume, force=args.force,
                              progress=not args.no_progress,
                              stop_after_epochs=args.stop_after_epochs)
    print(json.dumps(summary, indent=2))
    return 0


# --------------------------------------------------------------------------------------------
def format_summary(results: dict) -> str:
    rows = [(k, results[k]) for k in SUMMARY_KEYS if results.get(k) is not None]
    rows += [(f"BoxAcc@{iou}", v) for iou, v in results["box_acc_by_iou"].items()]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v:7.2f}" for k, v in rows)


def _run_evaluate(args: argparse.Namespace) -> int:
    from wsol.engine.checkpoint import load_method
    from wsol.engine.data import build_split, split_dir_name
    from wsol.engine.regressor import evaluate_regressor, load_regressor
    from wsol.utils.io import atomic_write_json

    reg_path = Path(args.regressor)
    output = Path(args.output) if args.output else (
        _run_dir_of(reg_path) / "eval" / split_dir_name(args.split) / "results.json")
    if output.exists() and not args.force:
        raise FileExistsError(f"{output} exists; use --force to overwrite or --output elsewhere")
    regressor, reg_info = load_regressor(reg_path, "cpu")
    classifier, cls_info = load_method(args.classifier, "cpu", overrides=args.overrides)
    config = cls_info["config"]
    device = _device(args.device or config["device"])
    metadata = build_split(config, args.split, train=False, backbone=None, metadata_only=True)
    if not config["data"].get("root"):
        raise UserError("the classifier's config has no data.root (pass data.root=...)")
    size = int(config["data"]["image_size"])
    results = evaluate_regressor(
        regressor.to(device), metadata, config["data"]["root"], classifier=classifier.to(device),
        image_size=size, regressor_input_size=int(reg_info["config"]["data"]["image_size"]),
        classifier_input_size=size, iou_thresholds=config["eval"]["iou_thresholds"],
        batch_size=args.batch_size or config["data"]["eval_batch_size"],
        num_workers=config["data"]["num_workers"], device=device, progress=not args.no_progress)
    results.update({"split": args.split, "regressor": str(reg_path),
                    "regressor_epoch": reg_info["epoch"],
                    "regressor_model": reg_info["config"]["model"]["name"],
                    "classifier": str(args.classifier), "classifier_epoch": cls_info["epoch"],
                    "method": cls_info["method"], "model": config["model"]["name"],
                    "overrides": list(args.overrides)})
    atomic_write_json(output, results)
    print(format_summary(results))
    print(f"wrote {output}")
    return 0
