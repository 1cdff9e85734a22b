"""``wsol evaluate --checkpoint FILE --split test``: classification and localization metrics.

Prints Top-1/Top-5 Cls, Top-1/Top-5 Loc, GT-known Loc, MaxBoxAcc, MaxBoxAccV2 (and PxAP / pIoU
for mask splits), writes them as JSON, and optionally saves the score maps in the wsolevaluation
layout (``<dir>/<image_id>.npy``). Trailing ``key=value`` overrides apply to the checkpoint's
config: inference options of the method (``method.stage=calibrated``), data paths
(``data.root=...``) or the protocol (``eval.cam_curve_interval=0.01``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "evaluate"
HELP = "evaluate a checkpoint on a split (Top-1/Top-5 Loc, GT-known, MaxBoxAcc(V2), PxAP)"

SUMMARY_KEYS = ("top1_cls", "top5_cls", "top1_loc", "top5_loc", "gt_known_loc", "MaxBoxAcc",
                "MaxBoxAccV2", "PxAP", "pIoU")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a wsol checkpoint (.pt)")
    parser.add_argument("--split", default="test",
                        help="split under data.metadata (or masks:<split> under data.mask_metadata)")
    parser.add_argument("--output", help="results JSON (default: <run>/eval/<split>/results.json "
                        "next to the checkpoint's run directory)")
    parser.add_argument("--save-scoremaps", metavar="DIR",
                        help="write each normalized score map as DIR/<image_id>.npy")
    parser.add_argument("--eval-type", choices=("prob", "mask"), default="prob",
                        help="prob: threshold sweep on score maps; mask: threshold-free masks (B-CAM)")
    parser.add_argument("--device", default=None, help="cpu | cuda | auto (default: config)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --output")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("overrides", nargs="*", metavar="key=value")


def format_summary(results: dict) -> str:
    rows = [(k, results[k]) for k in SUMMARY_KEYS if results.get(k) is not None]
    if results.get("max_box_acc_by_iou"):
        rows += [(f"MaxBoxAcc@{iou}", v) for iou, v in results["max_box_acc_by_iou"].items()
                 if v is not None]
    width = max(len(k) for k, _ in rows) if rows else 0
    return "\n".join(f"{k:<{width}}  {v:7.2f}" for k, v in rows)


def run(args: argparse.Namespace) -> int:
    import torch

    from wsol.engine import distributed as dist_utils
    from wsol.engine.checkpoint import load_method
    from wsol.engine.data import split_dir_name
    from wsol.engine.train import evaluate_split
    from wsol.utils.io import atomic_write_json

    ckpt = Path(args.checkpoint)
    if args.output:
        output = Path(args.output)
    else:
        run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
        output = run_dir / "eval" / split_dir_name(args.split) / (
            "results.json" if args.eval_type == "prob" else "results_mask.json")
    if output.exists() and not args.force:
        raise FileExistsError(f"{output} exists; use --force to overwrite or --output elsewhere")
    if args.save_scoremaps and Path(args.save_scoremaps).exists() and any(
            Path(args.save_scoremaps).iterdir()) and not args.force:
        raise FileExistsError(f"{args.save_scoremaps} is not empty; use --force")
    try:
        method, info = load_method(ckpt, "cpu", overrides=args.overrides)
        config = info["config"]
        device = dist_utils.init_distributed(args.device or config["device"])
        method.to(device)
        torch.manual_seed(config["seed"])
        results = evaluate_split(method, config, args.split, device, method.backbone,
                                 progress=not args.no_progress, eval_type=args.eval_type,
                                 scoremap_dir=args.save_scoremaps)
        rank = dist_utils.get_rank()
    finally:
        dist_utils.cleanup()
    results.update({"checkpoint": str(ckpt), "epoch": info["epoch"], "method": info["method"],
                    "model": config["model"]["name"], "overrides": list(args.overrides)})
    if rank == 0:
        atomic_write_json(output, results)
        print(format_summary(results))
        print(f"wrote {output}")
    return 0
