"""CREAM + regressor end to end (method-spec §2 "CREAM + regressor", the PSOL recipe).

Three steps, each a library function behind a ``wsol regressor`` sub-command:

1. :func:`generate_pseudo_boxes`: a trained WSOL checkpoint (CREAM's fused map in the paper)
   localizes every image of a split for its GT class; maps are upsampled to ``map_size`` (448,
   as PSOL), normalized, and the largest contour at threshold ``t`` gives one box per image
   (:func:`wsol.localization.geometry.pseudo_boxes_from_maps`), in original pixels, written as
   a wsolevaluation metadata split. ``t`` is MaxBoxAcc's best threshold at IoU 50 on the *val*
   split (:func:`wsol.metrics.results.threshold_from_file`) [inferred].
2. :func:`train_regressor`: a class-agnostic :class:`~wsol.methods.regressor.BoxRegressor`
   (backbone -> GAP -> MLP -> 4 sigmoid, normalized ``(x, y, w, h)``) trained with
   ``L = 50 * mean((b_hat - b)^2)`` on those boxes, random-resized-crop (scale 0.2-1) + flip that
   move the box with the image, SGD with parameter groups and step decay: the regressor task of
   the one training loop (:func:`wsol.engine.loop.fit`), so run directories, checkpoints
   (``kind: "regressor"``), resume, seeding, locks and ``metrics.csv`` are the classifier's.
3. :func:`evaluate_regressor`: class from a classifier checkpoint, box from the regressor, scored
   by :func:`box_localization_metrics` (one box per image, no threshold sweep).

Boxes are inclusive pixel boxes ``(x0, y0, x1, y1)`` in the metadata's convention; normalized
boxes follow :mod:`wsol.methods.regressor` (``x = x0 / W``, ``w = (x1 + 1 - x0) / W``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from wsol.config import dump_config, load_config, model_kwargs
from wsol.data.boxes import BoxTargetDataset, TwoViewDataset
from wsol.data.metadata import Metadata, read_metadata
from wsol.data.transforms import EvalTransform
from wsol.engine.checkpoint import load_checkpoint, load_state_checked
from wsol.engine.loop import (StepOutput, Task, finished_results, fit, resolve_train_precision,
                              seed_everything)
from wsol.engine.rundir import RunDir
from wsol.errors import ConfigError
from wsol.localization.geometry import pseudo_boxes_from_maps
from wsol.localization.pipeline import compute_maps
from wsol.methods import WSOLMethod
from wsol.methods.regressor import BoxRegressor, BoxTrainTransform, xywh_to_xyxy
from wsol.metrics.single_box import best_ious, box_localization_metrics
from wsol.models import create_model
from wsol.utils.device import resolve_device
from wsol.utils.io import atomic_write_json, atomic_write_text

__all__ = [
    "REGRESSOR_BASE",
    "RegressorTask",
    "build_regressor",
    "evaluate_regressor",
    "generate_pseudo_boxes",
    "load_regressor",
    "load_regressor_config",
    "predict_boxes",
    "train_regressor",
]

#: What a regressor run changes in :data:`wsol.config.DEFAULTS` (the one schema; the
#: ``regressor`` section and ``data.val_metadata`` / ``val_root`` / ``crop_scale`` /
#: ``flip_prob`` are documented there).
REGRESSOR_BASE: dict[str, Any] = {
    "model": {"name": "efficientnet_lite0", "pretrained": True},
    "method": {"name": "regressor"},
    "data": {"train_split": "train", "val_split": None, "test_splits": []},
    "optim": {"epochs": 30, "lr_decay_every": 10},
    "train": {"select_metric": "mean_box_acc"},
}


# --------------------------------------------------------------------------------------------
# Config, model, checkpoints
# --------------------------------------------------------------------------------------------

def load_regressor_config(path: str | os.PathLike | None = None,
                          overrides: Sequence[str] | dict[str, Any] | None = None,
                          base: dict | None = None) -> dict:
    """``DEFAULTS <- REGRESSOR_BASE <- base <- YAML file <- overrides`` (the one schema).

    ``overrides`` are ``key=value`` strings or a ``{"optim.lr": 0.01}`` mapping; ``base`` is a
    previously resolved config (a run's ``config.yaml`` when resuming).
    """
    import json

    if isinstance(overrides, dict):
        overrides = [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    config = load_config(None, [], base=REGRESSOR_BASE)
    if base is not None:
        config = load_config(None, [], base={**config, **base})
    return load_config(path, list(overrides or []), base=config)


def build_regressor(config: dict, pretrained: bool | str | None = None) -> BoxRegressor:
    """The :class:`BoxRegressor` of a resolved regressor config (``pretrained=None``: the
    config's ``model.pretrained``; pass ``False`` when a checkpoint overwrites the weights)."""
    model_cfg = config["model"]
    weights = model_cfg.get("pretrained", False) if pretrained is None else pretrained
    try:
        backbone = create_model(model_cfg["name"], num_classes=1, pretrained=weights,
                                **model_kwargs(config))
    except TypeError as exc:
        raise ConfigError(f"model {model_cfg['name']!r}: {exc}") from None
    if int(model_cfg.get("freeze_stages") or 0):
        backbone.freeze_stages(int(model_cfg["freeze_stages"]))
    reg = config["regressor"]
    return BoxRegressor(backbone, hidden=int(reg["hidden"]), dropout=float(reg["dropout"]),
                        loss_weight=float(reg["loss_weight"]))


def load_regressor(path: str | os.PathLike,
                   map_location: str | torch.device = "cpu") -> tuple[BoxRegressor, dict]:
    """Rebuild a checkpoint's regressor (eval mode); returns ``(model, info)`` with ``config``,
    ``epoch`` and ``path``. A classifier checkpoint (or any other file) is refused."""
    state = load_checkpoint(path, map_location, kind="regressor")
    config = load_regressor_config(base=state["config"])
    model = build_regressor(config, pretrained=False)
    load_state_checked(model, state["state_dict"], path,
                       f"a {config['model']['name']!r} regressor")
    model.to(map_location).eval()
    return model, {"config": config, "epoch": state.get("epoch"), "path": str(path)}


# --------------------------------------------------------------------------------------------
# Step 1: pseudo boxes
# --------------------------------------------------------------------------------------------

def _original_sizes(metadata: Metadata, image_root: Path,
                    image_ids: Sequence[str]) -> list[tuple[int, int]]:
    """``(W, H)`` of each image: from image_sizes.txt, else read from the file's header."""
    out = []
    for image_id in image_ids:
        size = metadata.image_sizes.get(image_id)
        if size is None:
            path = image_root / image_id
            if not path.is_file():
                raise FileNotFoundError(f"image {path} does not exist")
            with Image.open(path) as img:
                size = img.size
        out.append((int(size[0]), int(size[1])))
    return out


def generate_pseudo_boxes(method: WSOLMethod, dataset: Dataset, metadata: Metadata, *,
                          threshold: float, map_size: int = 448, normalization: str = "minmax",
                          batch_size: int = 32, num_workers: int = 0,
                          progress: bool = False,
                          iou_thresholds: Sequence[int] = (30, 50, 70)) -> tuple[Metadata, dict]:
    """Pseudo GT boxes of every image of ``dataset`` (a :class:`~wsol.data.datasets.WSOLDataset`
    with evaluation transforms over ``metadata``).

    Per batch: ``M = method.localization_maps(method(x), y_gt)`` (the GT class; CREAM's map of
    its configured stage, Eq.12 ``M_hat = Z_hat + N(M_c)`` for ``fused``), bicubic upsampling to
    ``map_size x map_size`` and per-image ``normalization`` (the one maps pipeline,
    :func:`wsol.localization.compute_maps`, on the method's device), then the largest contour at
    ``threshold`` taken to original pixels with the one rule of ``wsol localize``
    (:func:`wsol.localization.geometry.pseudo_boxes_from_maps`).

    Returns ``(pseudo, report)``: ``pseudo`` is a copy of ``metadata`` (ids, labels, sizes,
    filled in from the files where image_sizes.txt lacks them) whose ``boxes`` are the pseudo
    boxes (one per image); ``report`` counts blank maps (box ``(0, 0, 0, 0)``) and, when
    ``metadata`` has real boxes, the pseudo boxes' accuracy against them (% with best IoU >=
    delta, mean IoU), a diagnostic only.
    """
    from tqdm import tqdm

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    image_root = Path(getattr(dataset, "image_root", "."))
    boxes: dict[str, list[tuple[int, int, int, int]]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    blank = 0
    for batch in tqdm(loader, desc="pseudo boxes", leave=False, disable=not progress):
        ids = list(batch["image_id"])
        labels = torch.as_tensor(batch["label"])
        maps = compute_maps(method, batch["image"], labels, (map_size, map_size),
                            normalization).maps
        blank += int((maps.flatten(1).amax(dim=1) <= 0).sum())
        wh = _original_sizes(metadata, image_root, ids)
        found = pseudo_boxes_from_maps(maps, threshold, torch.tensor([(h, w) for w, h in wh]))
        for image_id, box, size in zip(ids, found.tolist(), wh):
            boxes[image_id] = [tuple(int(v) for v in box)]
            sizes[image_id] = size
    missing = [i for i in metadata.image_ids if i not in boxes]
    if missing:
        raise ValueError(f"the dataset did not yield image {missing[0]!r} of the metadata")
    pseudo = Metadata(image_ids=list(metadata.image_ids), class_labels=dict(metadata.class_labels),
                      image_sizes={i: sizes[i] for i in metadata.image_ids}, boxes=boxes)
    report: dict[str, Any] = {"num_images": len(boxes), "blank_maps": blank,
                              "threshold": float(threshold), "map_size": int(map_size),
                              "normalization": normalization, "accuracy": None}
    if metadata.boxes is not None:
        ids = [i for i in metadata.image_ids if metadata.boxes.get(i)]
        if ids:
            ious = best_ious(np.array([boxes[i][0] for i in ids], dtype=np.int64),
                              [metadata.boxes[i] for i in ids])
            report["accuracy"] = {
                "num_images": len(ids),
                "box_acc_by_iou": {str(d): float(100 * np.mean(ious >= d / 100))
                                   for d in iou_thresholds},
                "mean_iou": float(100 * ious.mean()),
            }
    return pseudo, report


# --------------------------------------------------------------------------------------------
# Step 3: evaluation
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def predict_boxes(regressor: BoxRegressor, images: Tensor, size: int) -> Tensor:
    """``(B, 4)`` inclusive boxes in ``size x size`` pixels: the regressor's normalized
    ``(x, y, w, h)`` -> ``x0 = round(x S)``, ``x1 = round((x + w) S) - 1`` (clipped;
    :func:`~wsol.methods.regressor.xywh_to_xyxy`)."""
    return xywh_to_xyxy(regressor(images), (size, size))


def evaluate_regressor(regressor: BoxRegressor, metadata: Metadata, image_root: str | os.PathLike,
                       *, classifier: WSOLMethod | None = None, image_size: int = 224,
                       regressor_input_size: int = 224, classifier_input_size: int = 224,
                       iou_thresholds: Sequence[int] = (30, 50, 70), batch_size: int = 32,
                       num_workers: int = 0, device: torch.device | str = "cpu",
                       progress: bool = False) -> dict[str, Any]:
    """Class from ``classifier`` (top-1 / top-5 of its logits), box from ``regressor``, scored
    in the protocol's geometry: GT boxes ``int(x * S / W)`` (``S = image_size``), the
    predicted normalized box mapped to ``S x S`` pixels (:func:`predict_boxes`), then
    :func:`box_localization_metrics`. Without ``classifier`` only the class-agnostic metrics
    (GT-known Loc, box accuracies) are reported."""
    from tqdm import tqdm

    from wsol.metrics.evaluator import gt_boxes_in_eval_geometry

    device = torch.device(device)
    gt = gt_boxes_in_eval_geometry(metadata, image_size)
    no_box = [i for i in metadata.image_ids if i not in gt]
    if no_box:
        raise ValueError(f"image {no_box[0]!r} has no GT box in localization.txt")
    rb = regressor.backbone
    transforms = {"reg": EvalTransform(mean=rb.input_mean, std=rb.input_std,
                                       size=regressor_input_size)}
    if classifier is not None:
        cb = classifier.backbone
        transforms["cls"] = EvalTransform(mean=cb.input_mean, std=cb.input_std,
                                          size=classifier_input_size)
        was_training_cls = classifier.training
        classifier.eval()
    was_training = regressor.training
    regressor.eval()
    loader = DataLoader(TwoViewDataset(image_root, metadata, transforms), batch_size=batch_size,
                        shuffle=False, num_workers=num_workers)
    preds, ranked, labels, ids = [], [], [], []
    with torch.no_grad():
        for batch in tqdm(loader, desc="eval", leave=False, disable=not progress):
            preds.append(predict_boxes(regressor, batch["reg"].to(device), image_size).cpu())
            if classifier is not None:
                logits = classifier(batch["cls"].to(device))["logits"].float()
                ranked.append(logits.topk(min(5, logits.shape[1]), dim=1).indices.cpu())
            labels.append(torch.as_tensor(batch["label"]))
            ids.extend(batch["image_id"])
    regressor.train(was_training)
    kwargs: dict[str, Any] = {}
    if classifier is not None:
        classifier.train(was_training_cls)
        kwargs = {"labels": torch.cat(labels), "topk": torch.cat(ranked)}
    results = box_localization_metrics(torch.cat(preds), [gt[i] for i in ids],
                                       iou_thresholds=iou_thresholds, **kwargs)
    results["settings"] = {"image_size": int(image_size), "iou_thresholds": list(iou_thresholds),
                           "regressor_input_size": int(regressor_input_size),
                           "classifier_input_size": int(classifier_input_size),
                           "metric": "one regressed box per image (no threshold sweep)"}
    return results


# --------------------------------------------------------------------------------------------
# Step 2: training (the regressor task of the one loop)
# --------------------------------------------------------------------------------------------

def _xywh_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of continuous normalized ``(x, y, w, h)`` boxes, row by row (training diagnostic)."""
    iw = (torch.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2])
          - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    ih = (torch.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3])
          - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    inter = iw * ih
    union = a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter
    return inter / union.clamp(min=1e-12)


def _train_split(config: dict) -> Metadata:
    data = config["data"]
    for key in ("root", "metadata"):
        if not data.get(key):
            raise ConfigError(f"data.{key} is not set (--image-root / --metadata)")
    split_dir = Path(data["metadata"]) / data["train_split"]
    if not split_dir.is_dir():
        raise ConfigError(f"data.metadata: split directory {split_dir} does not exist (the "
                          "output of `wsol regressor pseudo-boxes --out`)")
    return read_metadata(split_dir)


class RegressorTask(Task):
    """``L = w * mean((b_hat - b)^2)`` (``w = regressor.loss_weight``, 50) between the
    regressor's sigmoid output and the pseudo box of the augmented crop; ``best.pt`` tracks
    ``val_mean_box_acc`` when ``data.val_metadata`` (real boxes) is set, else the last epoch."""

    kind = "regressor"
    stat_names = ("mean_iou",)

    def __init__(self, config: dict, device: torch.device, metadata: Metadata) -> None:
        self.config = config
        self.model = build_regressor(config).to(device)
        data = config["data"]
        scale = tuple(float(s) for s in data["crop_scale"])
        if len(scale) != 2:
            raise ConfigError(f"data.crop_scale must be two numbers [min, max], got {scale}")
        backbone = self.model.backbone
        transform = BoxTrainTransform(size=int(data["image_size"]), scale=scale,
                                      flip_prob=float(data["flip_prob"]),
                                      mean=backbone.input_mean, std=backbone.input_std)
        self.train_set = BoxTargetDataset(data["root"], metadata, transform)
        self.select_metric = "mean_box_acc" if data.get("val_metadata") else None

    def train_step(self, model: nn.Module, batch: dict, device: torch.device) -> StepOutput:
        images = batch["image"].to(device, non_blocking=True)
        target = batch["box"].to(device, non_blocking=True)
        pred = model(images)
        loss = self.model.loss(pred, target)
        iou = 100 * _xywh_iou(pred.detach().double(), target.double()).sum()
        return StepOutput(loss=loss, outputs=pred, n=int(target.shape[0]), stats=iou.view(1))

    def validate(self, device: torch.device) -> dict | None:
        data = self.config["data"]
        if not data.get("val_metadata"):
            return None
        meta = read_metadata(data["val_metadata"])
        size = int(data["image_size"])
        val = evaluate_regressor(self.model, meta, data.get("val_root") or data["root"],
                                 image_size=size, regressor_input_size=size,
                                 batch_size=data["eval_batch_size"],
                                 num_workers=data["num_workers"], device=device)
        return {k: val[k] for k in ("mean_box_acc", "gt_known_loc", "mean_iou")}

    def final_evaluation(self, run_dir: Path, device: torch.device, progress: bool) -> dict:
        return {}


def train_regressor(config: dict, *, resume: bool = False, force: bool = False,
                    progress: bool = True, stop_after_epochs: int | None = None) -> dict:
    """Train the class-agnostic box regressor of ``config`` with :func:`wsol.engine.loop.fit`.

    Returns a summary dict (``epochs_completed``, ``finished``, ``best_epoch``,
    ``best_metric``, ``select_metric``, the last epoch's row), also written to
    ``results.json`` once training is finished. A finished run is not trained again.
    """
    if not config.get("run_dir"):
        raise ConfigError("run_dir is not set (use --run-dir)")
    metadata = _train_split(config)
    device = resolve_device(config["device"], "device")
    run = RunDir(config["run_dir"], kind="regressor")
    if resume and (done := finished_results(run.path)) is not None:
        return {**done, "already_finished": True}
    run.open(resume=resume, force=force)
    try:
        seed_everything(int(config["seed"]), bool(config["deterministic"]))
        resolve_train_precision(config, device)  # train.amp=auto -> what ran, saved below
        task = RegressorTask(config, device, metadata)
        atomic_write_text(run.path / "config.yaml", dump_config(config))
        summary = fit(task, config, run=run, device=device, resume=resume, progress=progress,
                      stop_after_epochs=stop_after_epochs)
        history = (load_checkpoint(run.path / "checkpoints" / "last.pt", kind="regressor")
                   .get("history") or [])
        out: dict[str, Any] = {"run_dir": str(run.path), **{k: v for k, v in summary.items()
                                                           if k != "final"},
                               "last": history[-1] if history else None}
        if summary["finished"]:
            atomic_write_json(run.path / "results.json", out)
        return out
    finally:
        run.release()
