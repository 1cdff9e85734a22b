"""``wsol evaluate``: classification and localization metrics of a model on a split.

Two sources of a model:

- ``--checkpoint FILE``: a trained wsol checkpoint (its config gives the data and settings);
- ``--model efficientnet_lite0`` (no checkpoint): the ImageNet classifier with its pretrained
  head, no training; the split's labels must be ImageNet class indices (e.g. ILSVRC val in the
  wsolevaluation layout); ``method.name=cam|cream`` (``cream`` = training-free CREAM,
  :mod:`wsol.methods.cream_free`).

Prints Top-1/Top-5 Cls, Top-1/Top-5 Loc, GT-known Loc, MaxBoxAcc, MaxBoxAccV2 (and PxAP / pIoU
for mask splits), writes them as JSON, and optionally saves the score maps in the wsolevaluation
layout (``<dir>/<image_id>.npy``). Trailing ``key=value`` overrides apply to the config:
inference options of the method (``method.stage=calibrated``), data paths (``data.root=...``)
or the protocol (``eval.cam_curve_interval=0.01``).

Where results go: ``--output FILE``, else a new file named by what was evaluated,
``<run>/eval/<split>-<method>[-<stage>][-mask]-<hash>.json`` next to the checkpoint's run
(``./eval/<model>-...`` with no checkpoint), ``<hash>`` the first 8 hex digits of the SHA-1 of
the settings (split, eval type, overrides, model source). A second evaluation with other
settings therefore never collides with the training's own results or with another one;
only the same file is refused without ``--force``. The path is printed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

NAME = "evaluate"
HELP = ("evaluate a checkpoint, or the ImageNet classifier (--model), on a split "
        "(Top-1/Top-5 Loc, GT-known, MaxBoxAcc(V2), PxAP)")

SUMMARY_KEYS = ("top1_cls", "top5_cls", "top1_loc", "top5_loc", "gt_known_loc", "MaxBoxAcc",
                "MaxBoxAccV2", "PxAP", "pIoU")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", help="a wsol checkpoint (.pt)")
    source.add_argument("--model", help="no checkpoint: the ImageNet classifier "
                        "(efficientnet_lite0) with its pretrained head, no training")
    parser.add_argument("--split", default="test",
                        help="split under data.metadata (or masks:<split> under "
                             "data.mask_metadata)")
    parser.add_argument("--output", help="results JSON (default: a new file "
                        "<run>/eval/<split>-<method>[-<stage>]-<hash>.json, printed)")
    parser.add_argument("--save-scoremaps", metavar="DIR",
                        help="write each normalized score map as DIR/<image_id>.npy")
    parser.add_argument("--eval-type", choices=("prob", "mask"), default="prob",
                        help="prob: threshold sweep on score maps; mask: threshold-free masks "
                             "(B-CAM)")
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


def settings_hash(settings: dict) -> str:
    """First 8 hex digits of the SHA-1 of ``settings`` as canonical JSON."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


def check_writable(output: Path) -> None:
    """Fail before the evaluation, not after it, when ``output`` cannot be written (its
    directory is created and a probe file is written and removed there)."""
    import tempfile

    from wsol.errors import UserError

    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output.parent, prefix=".wsol-probe-"):
            pass
    except OSError as exc:
        raise UserError(f"--output {output}: cannot write there ({exc.strerror or exc}); "
                        "nothing was evaluated") from None


def default_output(args: argparse.Namespace, method, config: dict) -> tuple[Path, dict]:
    """The default results file of this evaluation and the settings that name it."""
    from wsol.engine.data import split_dir_name

    settings = {"split": args.split, "eval_type": args.eval_type,
                "overrides": sorted(args.overrides),
                "source": (str(Path(args.checkpoint).resolve()) if args.checkpoint
                           else f"pretrained:{config['model']['name']}")}
    parts = [split_dir_name(args.split), method.name]
    stage = getattr(method, "stage", None)
    if isinstance(stage, str):
        parts.append(stage)
    if args.eval_type != "prob":
        parts.append(args.eval_type)
    digest = settings_hash(settings)
    name = "-".join([*parts, digest]) + ".json"
    if args.checkpoint:
        ckpt = Path(args.checkpoint)
        run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
        return run_dir / "eval" / name, {**settings, "hash": digest}
    return Path("eval") / f"{config['model']['name']}-{name}", {**settings, "hash": digest}


def _load(args: argparse.Namespace):
    """``(method, config, info)`` from the checkpoint, or the pretrained ImageNet classifier."""
    from wsol.errors import UserError

    if args.checkpoint:
        from wsol.engine.checkpoint import load_method
        from wsol.methods import cream_free  # noqa: F401  (registers "cream_free")

        method, info = load_method(Path(args.checkpoint), "cpu", overrides=args.overrides)
        return method, info["config"], info
    if not args.model:
        raise UserError("give --checkpoint FILE (a trained model) or --model efficientnet_lite0 "
                        "(the ImageNet classifier, no training)")
    from wsol.api import method_from_config, pretrained_config
    from wsol.engine.data import build_split

    config = pretrained_config(args.model, "cam", args.overrides)
    meta = build_split(config, args.split, train=False, backbone=None, metadata_only=True)
    if meta.num_classes > 1000:
        raise UserError(f"split {args.split!r} has class labels up to {meta.num_classes - 1}, "
                        f"but the ImageNet classifier has 1000 classes: with --model the "
                        "labels must be ImageNet class indices (0..999)")
    method = method_from_config(config)
    info = {"epoch": None, "method": method.name}
    return method, config, info


def run(args: argparse.Namespace) -> int:
    import torch

    from wsol.engine import distributed as dist_utils
    from wsol.engine.train import evaluate_split
    from wsol.utils.io import atomic_write_json

    method, config, info = _load(args)
    output, settings = default_output(args, method, config)
    if args.output:
        output = Path(args.output)
    if output.exists() and not args.force:
        raise FileExistsError(f"{output} exists (the same evaluation was written there before);"
                              " use --force to overwrite or --output elsewhere")
    check_writable(output)
    if args.save_scoremaps and Path(args.save_scoremaps).exists() and any(
            Path(args.save_scoremaps).iterdir()) and not args.force:
        raise FileExistsError(f"{args.save_scoremaps} is not empty; use --force")
    try:
        device = dist_utils.init_distributed(args.device or config["device"])
        method.to(device)
        torch.manual_seed(config["seed"])
        results = evaluate_split(method, config, args.split, device, method.backbone,
                                 progress=not args.no_progress, eval_type=args.eval_type,
                                 scoremap_dir=args.save_scoremaps)
        rank = dist_utils.get_rank()
    finally:
        dist_utils.cleanup()
    stage = getattr(method, "stage", None)
    results.update({
        "checkpoint": str(args.checkpoint) if args.checkpoint else None,
        "pretrained": None if args.checkpoint else f"{config['model']['name']} (ImageNet head)",
        "epoch": info["epoch"], "method": info["method"], "evaluated_method": method.name,
        "stage": stage if isinstance(stage, str) else None,
        "method_settings": {k: v for k, v in config["method"].items() if k != "name"},
        "model": config["model"]["name"], "overrides": list(args.overrides),
        "evaluation": settings})
    if rank == 0:
        output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(output, results)
        print(format_summary(results))
        print(f"wrote {output}")
    return 0
