"""CREAM + regressor end to end (method-spec §2 "CREAM + regressor", the PSOL recipe).

Three steps, each a library function behind a ``wsol regressor`` sub-command:

1. :func:`generate_pseudo_boxes`: a trained WSOL checkpoint (CREAM's fused map in the paper)
   localizes every image of a split for its GT class; maps are upsampled to ``map_size`` (448,
   as PSOL), normalized, and the largest contour at threshold ``t`` gives one box per image
   (:func:`wsol.methods.regressor.pseudo_boxes_from_maps`), in original pixels, written as a
   wsolevaluation metadata split. ``t`` is MaxBoxAcc's best threshold at IoU 50 on the *val*
   split (:func:`threshold_from_results`) [inferred].
2. :func:`train_regressor`: a class-agnostic :class:`~wsol.methods.regressor.BoxRegressor`
   (backbone -> GAP -> MLP -> 4 sigmoid, normalized ``(x, y, w, h)``) trained with
   ``L = 50 * mean((b_hat - b)^2)`` on those boxes, random-resized-crop (scale 0.2-1) + flip that
   move the box with the image, SGD with parameter groups and step decay. Same run-directory
   rules as :func:`wsol.engine.train.train`: never overwritten without ``force``, atomic
   ``last.pt`` / ``best.pt`` (format ``"wsol-regressor"``), ``resume`` restores model,
   optimizer, schedule, RNG and epoch, ``metrics.csv`` and ``config.yaml``.
3. :func:`evaluate_regressor`: class from a classifier checkpoint, box from the regressor, scored
   by :func:`box_localization_metrics` (one box per image, no threshold sweep).

Boxes are inclusive pixel boxes ``(x0, y0, x1, y1)`` in the metadata's convention; normalized
boxes follow :mod:`wsol.methods.regressor` (``x = x0 / W``, ``w = (x1 + 1 - x0) / W``).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

import wsol
from wsol.config import ConfigError, dump_config, load_config
from wsol.data.metadata import Metadata, read_metadata
from wsol.data.transforms import EvalTransform, load_image
from wsol.engine.checkpoint import read_checkpoint_file, training_state
from wsol.engine.train import (
    _epoch_seed,
    _write_csv,
    build_optimizer,
    prepare_run_dir,
    restore_training,
    seed_everything,
)
from wsol.localization import box_iou, postprocess_maps
from wsol.methods import WSOLMethod
from wsol.methods.regressor import (
    BoxRegressor,
    BoxTrainTransform,
    pseudo_boxes_from_maps,
    xywh_to_xyxy,
    xyxy_to_xywh,
)
from wsol.models import create_model
from wsol.utils.device import resolve_device
from wsol.utils.io import (
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    read_json_object,
)

__all__ = [
    "FORMAT",
    "REGRESSOR_DEFAULTS",
    "BoxTargetDataset",
    "RegressorCheckpointError",
    "TwoViewDataset",
    "box_localization_metrics",
    "build_regressor",
    "evaluate_regressor",
    "generate_pseudo_boxes",
    "load_regressor",
    "load_regressor_checkpoint",
    "load_regressor_config",
    "predict_boxes",
    "save_regressor_checkpoint",
    "threshold_from_results",
    "train_regressor",
]

#: ``"format"`` entry of a regressor checkpoint (a classifier checkpoint says "wsol-checkpoint").
FORMAT = "wsol-regressor"

#: Regressor run configuration: every key with its default (type-checked like wsol.config).
REGRESSOR_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "deterministic": False,
    "device": "auto",  # auto | cpu | cuda | cuda:N
    "run_dir": None,
    "model": {
        "name": "efficientnet_lite0",  # any registered backbone; its classifier is not used
        "pretrained": True,  # the recipe: an ImageNet-pretrained backbone (local weights only)
        "freeze_stages": 0,
    },
    "regressor": {
        "hidden": 512,  # MLP width [inferred]; 0 = a single linear layer
        "dropout": 0.0,
        "loss_weight": 50.0,  # PSOL: 50 * MSE
    },
    "data": {
        "root": None,  # image root (image ids are relative to it)
        "metadata": None,  # pseudo-box metadata root (output of `wsol regressor pseudo-boxes`)
        "train_split": "train",
        "val_metadata": None,  # optional split dir with real boxes: val box accuracy per epoch
        "val_root": None,  # image root of val_metadata (default: data.root)
        "image_size": 224,  # regressor input (train crops and eval resize)
        "crop_scale": [0.2, 1.0],  # random-resized-crop area range (PSOL)
        "flip_prob": 0.5,
        "batch_size": 32,
        "eval_batch_size": 32,
        "num_workers": 2,
    },
    "optim": {
        "lr": 1e-3,
        "new_layer_lr_mult": 10.0,  # MLP head (and the backbone's new layers) at lr x this
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 1e-4,
        "epochs": 30,  # [inferred] for CUB
        "lr_decay_every": 10,
        "lr_decay_factor": 0.1,
    },
    "train": {
        "max_steps_per_epoch": None,  # cap for smoke tests
    },
}


class RegressorCheckpointError(ValueError):
    """A file that is not a usable regressor checkpoint; the message names it."""


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------

def load_regressor_config(path: str | os.PathLike | None = None,
                          overrides: Sequence[str] | dict[str, Any] | None = None,
                          base: dict | None = None) -> dict:
    """``REGRESSOR_DEFAULTS <- base <- YAML file <- overrides``, type-checked as in wsol.config.

    ``overrides`` are ``key=value`` strings or a ``{"optim.lr": 0.01}`` mapping; ``base`` is a
    previously resolved config (a run's ``config.yaml`` when resuming).
    """
    if isinstance(overrides, dict):
        overrides = [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    return load_config(path, list(overrides or []), defaults=REGRESSOR_DEFAULTS, base=base)


def build_regressor(config: dict, pretrained: bool | str | None = None) -> BoxRegressor:
    """The :class:`BoxRegressor` of a resolved regressor config (``pretrained=None``: the
    config's ``model.pretrained``; pass ``False`` when a checkpoint overwrites the weights)."""
    model_cfg = config["model"]
    weights = model_cfg.get("pretrained", False) if pretrained is None else pretrained
    reserved = ("name", "pretrained", "freeze_stages")
    kwargs = {k: v for k, v in model_cfg.items() if k not in reserved}
    try:
        backbone = create_model(model_cfg["name"], num_classes=1, pretrained=weights, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"model {model_cfg['name']!r}: {exc}") from None
    if int(model_cfg.get("freeze_stages") or 0):
        backbone.freeze_stages(int(model_cfg["freeze_stages"]))
    reg = config["regressor"]
    return BoxRegressor(backbone, hidden=int(reg["hidden"]), dropout=float(reg["dropout"]),
                        loss_weight=float(reg["loss_weight"]))


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------

def save_regressor_checkpoint(path: str | os.PathLike, model: BoxRegressor, *, config: dict,
                              epoch: int, best_metric: float | None = None,
                              best_epoch: int | None = None,
                              optimizer: torch.optim.Optimizer | None = None,
                              scheduler: Any | None = None, include_rng: bool = False) -> Path:
    """Atomically write ``{"format": "wsol-regressor", "wsol_version", "config", "state_dict",
    "epoch", "best_metric", "best_epoch"}`` (+ ``optimizer``, ``scheduler``, ``rng`` when
    given), the layout of :mod:`wsol.engine.checkpoint` with a different format tag."""
    state: dict[str, Any] = {"format": FORMAT, "wsol_version": wsol.__version__,
                             "config": config, "state_dict": model.state_dict(), "epoch": epoch,
                             "best_metric": best_metric, "best_epoch": best_epoch,
                             **training_state(optimizer, scheduler, include_rng)}
    return atomic_torch_save(path, state)


def load_regressor_checkpoint(path: str | os.PathLike,
                              map_location: str | torch.device = "cpu") -> dict:
    """Read a regressor checkpoint; a classifier checkpoint or any other file is refused."""
    path = Path(path)
    state = read_checkpoint_file(path, map_location, RegressorCheckpointError,
                                 "regressor checkpoint")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else None
        hint = " (a classifier checkpoint: pass it as --classifier)" \
            if found == "wsol-checkpoint" else ""
        raise RegressorCheckpointError(
            f"{path} is not a wsol regressor checkpoint (format {found!r}, expected "
            f"{FORMAT!r}){hint}")
    return state


def load_regressor(path: str | os.PathLike,
                   map_location: str | torch.device = "cpu") -> tuple[BoxRegressor, dict]:
    """Rebuild a checkpoint's regressor (eval mode); returns ``(model, info)`` with ``config``,
    ``epoch`` and ``path``."""
    state = load_regressor_checkpoint(path, map_location)
    config = load_regressor_config(base=state["config"])
    model = build_regressor(config, pretrained=False)
    missing, unexpected = model.load_state_dict(state["state_dict"], strict=False)
    if missing or unexpected:
        raise RegressorCheckpointError(
            f"{path} does not match a {config['model']['name']!r} regressor: missing keys "
            f"{missing[:5]}, unexpected {unexpected[:5]}")
    model.to(map_location).eval()
    return model, {"config": config, "epoch": state.get("epoch"), "path": str(path)}


# --------------------------------------------------------------------------------------------
# Step 1: pseudo boxes
# --------------------------------------------------------------------------------------------

def threshold_from_results(path: str | os.PathLike,
                           test_splits: Sequence[str] = ("test",)) -> tuple[float, dict]:
    """The box threshold ``best_threshold_by_iou["50"]`` of a results.json (``wsol evaluate`` /
    ``wsol evaluate-maps``), with a note of where it came from.

    The threshold must be chosen on the val split: a results file of a split in ``test_splits``
    (or named ``test``) is refused. Returns ``(t, {"split", "multi_contour", "path"})``.
    The threshold is the best one in the evaluator's contour mode (``multi_contour``, v2 by
    default) while a pseudo box is the largest contour (v1): evaluate the val split with
    ``eval.multi_contour=false`` for the v1-optimal threshold.
    """
    path = Path(path)
    results = read_json_object(path, "--threshold-from")
    split = results.get("split")
    if split is not None and (split in test_splits or str(split).split(":")[-1] == "test"):
        raise ValueError(f"--threshold-from: {path} holds results of split {split!r}; the "
                         "pseudo-box threshold must be chosen on the val split, never on test")
    try:
        t = float(results["best_threshold_by_iou"]["50"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"--threshold-from: {path} has no best_threshold_by_iou['50'] (a box "
                         "split's results.json from `wsol evaluate` is needed)") from None
    if not 0.0 <= t < 1.0:
        raise ValueError(f"--threshold-from: {path}: threshold {t} is not in [0, 1)")
    settings = results.get("settings") or {}
    return t, {"split": split, "multi_contour": settings.get("multi_contour"), "path": str(path)}


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


def _best_ious(pred: np.ndarray, gt_boxes: Sequence[np.ndarray]) -> np.ndarray:
    """IoU of each predicted box with its image's best-matching GT box (inclusive pixels)."""
    return np.array([float(box_iou(p[None], np.asarray(g).reshape(-1, 4)).max())
                     for p, g in zip(pred, gt_boxes)], dtype=np.float64)


def generate_pseudo_boxes(method: WSOLMethod, dataset: Dataset, metadata: Metadata, *,
                          threshold: float, map_size: int = 448, normalization: str = "minmax",
                          batch_size: int = 32, num_workers: int = 0,
                          device: torch.device | str = "cpu", progress: bool = False,
                          iou_thresholds: Sequence[int] = (30, 50, 70)) -> tuple[Metadata, dict]:
    """Pseudo GT boxes of every image of ``dataset`` (a :class:`~wsol.data.datasets.WSOLDataset`
    with evaluation transforms over ``metadata``).

    Per batch: ``M = method.localization_maps(method(x), y_gt)`` (the GT class; CREAM's map of
    its configured stage, Eq.12 ``M_hat = Z_hat + N(M_c)`` for ``fused``), bicubic upsampling to
    ``map_size x map_size`` and per-image ``normalization``, then the largest contour at
    ``threshold`` rescaled to the original size with ``int(x * W0 / map_size)``
    (:func:`pseudo_boxes_from_maps`).

    Returns ``(pseudo, report)``: ``pseudo`` is a copy of ``metadata`` (ids, labels, sizes,
    filled in from the files where image_sizes.txt lacks them) whose ``boxes`` are the pseudo
    boxes (one per image); ``report`` counts blank maps (box ``(0, 0, 0, 0)``) and, when
    ``metadata`` has real boxes, the pseudo boxes' accuracy against them (% with best IoU >=
    delta, mean IoU), a diagnostic only.
    """
    from tqdm import tqdm

    device = torch.device(device)
    method.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    grad_ctx = torch.enable_grad if getattr(method, "maps_need_grad", False) else torch.no_grad
    image_root = Path(getattr(dataset, "image_root", "."))
    boxes: dict[str, list[tuple[int, int, int, int]]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    blank = 0
    for batch in tqdm(loader, desc="pseudo boxes", leave=False, disable=not progress):
        ids = list(batch["image_id"])
        images = batch["image"].to(device)
        labels = torch.as_tensor(batch["label"]).to(device)
        with grad_ctx():
            raw = method.localization_maps(method(images), labels)
        maps = postprocess_maps(raw.detach().float(), (map_size, map_size), normalization)
        blank += int((maps.flatten(1).amax(dim=1) <= 0).sum())
        wh = _original_sizes(metadata, image_root, ids)
        found = pseudo_boxes_from_maps(maps, threshold, [(h, w) for w, h in wh])
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
            ious = _best_ious(np.array([boxes[i][0] for i in ids], dtype=np.int64),
                              [metadata.boxes[i] for i in ids])
            report["accuracy"] = {
                "num_images": len(ids),
                "box_acc_by_iou": {str(d): float(100 * np.mean(ious >= d / 100))
                                   for d in iou_thresholds},
                "mean_iou": float(100 * ious.mean()),
            }
    return pseudo, report


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------

class BoxTargetDataset(Dataset):
    """Images of a box split with their first box as the regression target.

    Item: ``{"image": (3, S, S) tensor, "box": (4,) float32 normalized (x, y, w, h),
    "image_id", "index"}``; ``transform(PIL image, normalized box) -> (tensor, box)``
    (:class:`BoxTrainTransform` / :class:`~wsol.methods.regressor.BoxEvalTransform`). The
    metadata box ``(x0, y0, x1, y1)`` becomes ``(x0 / W, y0 / H, (x1 + 1 - x0) / W,
    (y1 + 1 - y0) / H)`` with the decoded image's ``(W, H)``, which must match image_sizes.txt.
    """

    def __init__(self, image_root: str | os.PathLike, metadata: Metadata, transform) -> None:
        self.image_root = Path(image_root)
        if not self.image_root.is_dir():
            raise ValueError(f"image root {self.image_root} is not a directory")
        if metadata.boxes is None:
            where = f" ({metadata.split_dir})" if metadata.split_dir else ""
            raise ValueError(f"metadata{where} has no box localization.txt: nothing to regress")
        no_box = [i for i in metadata.image_ids if not metadata.boxes.get(i)]
        if no_box:
            raise ValueError(f"{metadata.split_dir or 'metadata'}: image {no_box[0]!r} has no box "
                             f"({len(no_box)} image(s) without a box)")
        self.metadata = metadata
        self.image_ids = list(metadata.image_ids)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.image_ids[index]
        img = load_image(self.image_root / image_id)
        expected = self.metadata.image_sizes.get(image_id)
        if expected is not None and tuple(expected) != img.size:
            raise ValueError(f"{self.image_root / image_id}: decoded size {img.size[0]}x"
                             f"{img.size[1]} differs from image_sizes.txt ({expected[0]}x"
                             f"{expected[1]})")
        box = torch.tensor([self.metadata.boxes[image_id][0]])
        target = xyxy_to_xywh(box, (img.size[1], img.size[0]))[0]
        image, target = self.transform(img, target)
        return {"image": image, "box": target, "image_id": image_id, "index": index}


class TwoViewDataset(Dataset):
    """Each image of a split through several transforms (one decode): the classifier and the
    regressor may expect different sizes and input normalizations.

    Item: ``{name: tensor for each transform, "label", "image_id", "index"}``.
    """

    def __init__(self, image_root: str | os.PathLike, metadata: Metadata,
                 transforms: dict[str, Any]) -> None:
        self.image_root = Path(image_root)
        if not self.image_root.is_dir():
            raise ValueError(f"image root {self.image_root} is not a directory")
        self.metadata = metadata
        self.image_ids = list(metadata.image_ids)
        self.transforms = dict(transforms)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.image_ids[index]
        img = load_image(self.image_root / image_id)
        item: dict[str, Any] = {name: tf(img) for name, tf in self.transforms.items()}
        item.update(label=self.metadata.class_labels[image_id], image_id=image_id, index=index)
        return item


# --------------------------------------------------------------------------------------------
# Metrics for one box per image
# --------------------------------------------------------------------------------------------

def box_localization_metrics(pred_boxes: np.ndarray | Tensor, gt_boxes: Sequence[np.ndarray], *,
                             labels: Sequence[int] | np.ndarray | Tensor | None = None,
                             topk: np.ndarray | Tensor | None = None,
                             iou_thresholds: Sequence[int] = (30, 50, 70)) -> dict[str, Any]:
    """Localization metrics of *one predicted box per image* (a regressor's output).

    This is **not** a threshold sweep: there is no score map and no threshold to optimize, so
    the numbers are plain box accuracies, the analogue of MaxBoxAcc / MaxBoxAccV2 for a
    threshold-free box. With ``IoU_n = max_g IoU(pred_n, gt_{n,g})`` (inclusive pixels,
    :func:`wsol.localization.box_iou`) over ``N`` images, all in %:

    - ``box_acc_by_iou[delta] = 100 / N * #{n : IoU_n >= delta / 100}``;
    - ``mean_box_acc``: mean of ``box_acc_by_iou`` over ``iou_thresholds`` (the MaxBoxAccV2
      analogue); ``gt_known_loc = box_acc_by_iou["50"]`` (class ignored);
    - ``top1_loc`` / ``top5_loc`` (per IoU in ``top{1,5}_loc_by_iou``): the box is correct at
      IoU 50 *and* the GT label is the top-1 prediction / among ``topk``; ``top1_cls`` /
      ``top5_cls``: classification accuracy; all ``None`` without ``labels`` and ``topk``;
    - ``mean_iou = 100 * mean_n IoU_n``.

    Args:
        pred_boxes: ``(N, 4)`` int boxes in evaluation geometry (e.g. 224x224).
        gt_boxes: ``N`` arrays ``(K_n, 4)`` of GT boxes in the same geometry.
        labels: ``(N,)`` GT classes. topk: ``(N, k)`` predicted classes, best first.
    """
    pred = np.asarray(pred_boxes.cpu() if isinstance(pred_boxes, Tensor) else pred_boxes)
    if pred.ndim != 2 or pred.shape[1] != 4:
        raise ValueError(f"pred_boxes must be (N, 4), got shape {pred.shape}")
    n = pred.shape[0]
    if n == 0:
        raise ValueError("box_localization_metrics: no images")
    if len(gt_boxes) != n:
        raise ValueError(f"got {len(gt_boxes)} GT box sets for {n} predicted boxes")
    if (labels is None) != (topk is None):
        raise ValueError("labels and topk must be given together (or neither)")
    deltas = [int(d) for d in iou_thresholds]
    cut = {d: d / 100 for d in sorted(set(deltas) | {50})}
    ious = _best_ious(pred.astype(np.int64), gt_boxes)
    correct = {d: ious >= c for d, c in cut.items()}
    by_iou = {str(d): float(100 * correct[d].mean()) for d in deltas}
    out: dict[str, Any] = {
        "num_images": int(n),
        "box_acc_by_iou": by_iou,
        "mean_box_acc": float(np.mean(list(by_iou.values()))),
        "gt_known_loc": float(100 * correct[50].mean()),
        "mean_iou": float(100 * ious.mean()),
        "top1_cls": None, "top5_cls": None, "top1_loc": None, "top5_loc": None,
        "top1_loc_by_iou": None, "top5_loc_by_iou": None,
    }
    if labels is not None:
        lab = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels).reshape(-1)
        ranked = np.asarray(topk.cpu() if isinstance(topk, Tensor) else topk)
        if ranked.ndim == 1:
            ranked = ranked[:, None]
        if lab.shape != (n,) or ranked.ndim != 2 or ranked.shape[0] != n:
            raise ValueError(f"labels must be ({n},) and topk ({n}, k), got {lab.shape} and "
                             f"{ranked.shape}")
        hits = {"top1": ranked[:, 0] == lab, "top5": (ranked[:, :5] == lab[:, None]).any(axis=1)}
        for name, hit in hits.items():
            out[f"{name}_cls"] = float(100 * hit.mean())
            out[f"{name}_loc"] = float(100 * (hit & correct[50]).mean())
            out[f"{name}_loc_by_iou"] = {str(d): float(100 * (hit & correct[d]).mean())
                                         for d in deltas}
    return out


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
# Step 2: training
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


def _val_metrics(model: BoxRegressor, config: dict, device: torch.device) -> dict | None:
    data = config["data"]
    if not data.get("val_metadata"):
        return None
    meta = read_metadata(data["val_metadata"])
    size = int(data["image_size"])
    return evaluate_regressor(model, meta, data.get("val_root") or data["root"], image_size=size,
                              regressor_input_size=size, batch_size=data["eval_batch_size"],
                              num_workers=data["num_workers"], device=device)


def train_regressor(config: dict, *, resume: bool = False, force: bool = False,
                    progress: bool = True, stop_after_epochs: int | None = None) -> dict:
    """Train the class-agnostic box regressor of ``config`` (see :data:`REGRESSOR_DEFAULTS`).

    Per step: ``L = w * mean((b_hat - b)^2)`` (``w = regressor.loss_weight``, 50) between the
    regressor's ``sigmoid`` output and the pseudo box of the augmented crop; SGD (momentum,
    Nesterov, weight decay) with the backbone at ``lr`` and the head at ``lr x
    new_layer_lr_mult``, step decay every ``lr_decay_every`` epochs. Every epoch reseeds from
    ``(seed, epoch)`` and ends with ``last.pt`` (model, optimizer, schedule, RNG); ``best.pt``
    tracks ``val_mean_box_acc`` when ``data.val_metadata`` is set (real boxes), else the last
    epoch. ``stop_after_epochs`` stops after that many epochs of this call (``resume`` continues
    exactly: the weights equal those of an uninterrupted run). Returns a summary dict, also
    written to ``results.json`` when training is finished.
    """
    from tqdm import tqdm

    if not config.get("run_dir"):
        raise ConfigError("run_dir is not set (use --run-dir)")
    run_dir = Path(config["run_dir"])
    ckpt_dir = run_dir / "checkpoints"
    metadata = _train_split(config)
    prepare_run_dir(run_dir, resume, force)
    device = resolve_device(config["device"], "device")
    seed, deterministic = int(config["seed"]), bool(config["deterministic"])
    seed_everything(seed, deterministic)
    model = build_regressor(config).to(device)
    data, optim_cfg = config["data"], config["optim"]
    scale = tuple(float(s) for s in data["crop_scale"])
    if len(scale) != 2:
        raise ConfigError(f"data.crop_scale must be two numbers [min, max], got {scale}")
    backbone = model.backbone
    transform = BoxTrainTransform(size=int(data["image_size"]), scale=scale,
                                  flip_prob=float(data["flip_prob"]), mean=backbone.input_mean,
                                  std=backbone.input_std)
    train_set = BoxTargetDataset(data["root"], metadata, transform)
    optimizer, scheduler = build_optimizer(model, optim_cfg)

    start_epoch, best_metric, best_epoch = 0, None, None
    rows: list[dict] = []
    if resume:
        state = load_regressor_checkpoint(ckpt_dir / "last.pt")
        start_epoch, best_metric, best_epoch, rows = restore_training(
            state, model, optimizer, scheduler, config, ("model", "regressor"), run_dir)
    atomic_write_text(run_dir / "config.yaml", dump_config(config))

    loader = DataLoader(train_set, batch_size=int(data["batch_size"]), shuffle=True,
                        num_workers=int(data["num_workers"]), drop_last=False,
                        pin_memory=device.type == "cuda")
    epochs = int(optim_cfg["epochs"])
    max_steps = config["train"].get("max_steps_per_epoch")
    stop = epochs if stop_after_epochs is None else min(epochs, start_epoch + stop_after_epochs)
    for epoch in range(start_epoch, stop):
        seed_everything(_epoch_seed(seed, epoch, 0), deterministic)
        model.train()
        t0 = time.time()
        lr = optimizer.param_groups[0]["lr"]
        sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss * n, iou sum, n
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", leave=False, disable=not progress)
        for step, batch in enumerate(bar):
            if max_steps is not None and step >= max_steps:
                break
            images = batch["image"].to(device, non_blocking=True)
            target = batch["box"].to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            pred = model(images)
            loss = model.loss(pred, target)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"epoch {epoch + 1}, step {step}: loss is {loss.item()}")
            loss.backward()
            optimizer.step()
            n = target.shape[0]
            sums += torch.stack([loss.detach().double() * n,
                                 _xywh_iou(pred.detach().double(), target.double()).sum(),
                                 torch.tensor(float(n), dtype=torch.float64, device=device)])
            if progress:
                bar.set_postfix(loss=f"{loss.item():.4f}")
        scheduler.step()
        seen = float(sums[2].clamp(min=1))
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr,
                               "train_loss": round(float(sums[0]) / seen, 6),
                               "train_mean_iou": round(100 * float(sums[1]) / seen, 4),
                               "epoch_time_s": round(time.time() - t0, 3)}
        val = _val_metrics(model, config, device)
        improved = True
        if val is not None:
            row.update({"val_mean_box_acc": round(val["mean_box_acc"], 4),
                        "val_gt_known_loc": round(val["gt_known_loc"], 4),
                        "val_mean_iou": round(val["mean_iou"], 4)})
            value = float(val["mean_box_acc"])
            improved = best_metric is None or (math.isfinite(value) and value > best_metric)
            if improved:
                best_metric = value
        if improved:
            best_epoch = epoch + 1
        rows.append(row)
        _write_csv(run_dir / "metrics.csv", rows)
        common: dict[str, Any] = {"config": config, "epoch": epoch + 1,
                                  "best_metric": best_metric, "best_epoch": best_epoch}
        save_regressor_checkpoint(ckpt_dir / "last.pt", model, optimizer=optimizer,
                                  scheduler=scheduler, include_rng=True, **common)
        if improved:
            save_regressor_checkpoint(ckpt_dir / "best.pt", model, **common)
        if progress:
            print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)

    finished = len(rows) >= epochs
    summary: dict[str, Any] = {"run_dir": str(run_dir), "epochs_completed": len(rows),
                               "finished": finished, "best_epoch": best_epoch,
                               "best_metric": best_metric,
                               "select_metric": "val_mean_box_acc" if data.get("val_metadata")
                               else None,
                               "last": rows[-1] if rows else None}
    if finished:
        atomic_write_json(run_dir / "results.json", summary)
    return summary

