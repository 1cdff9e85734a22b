"""Pixel-level localization: PxAP, pIoU and the PR curve (method-spec §4, wsolevaluation's
``MaskEvaluator``), accumulated as two score histograms.

Over the whole split, ``H_fg[i]`` / ``H_bg[i]`` count the scores of GT-foreground / background
pixels (ignored pixels excluded) in bin ``i`` (edges ``thresholds + [1, 2, 3]``). Reading the bins
from the top, at the ``k``-th threshold from above:
``TP_k = sum_{i >= n-1-k} H_fg[i]``, ``FP_k`` likewise from ``H_bg``, ``FN_k = P - TP_k``
(``P = sum H_fg``); ``precision_k = TP_k / (TP_k + FP_k)``, ``recall_k = TP_k / P``;

- ``PxAP = 100 * sum_{k >= 1, TP_k + FP_k > 0} precision_k (recall_k - recall_{k-1})``;
- ``pIoU = 100 * max_k TP_k / (TP_k + FP_k + FN_k)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from wsol.localization.boxes import ScoreMap, as_thresholds, check_scoremaps, is_tensor
from wsol.metrics.counts import CountAccumulator, MetricError
from wsol.metrics.histograms import bin_edges, score_bins

IGNORE = 255


class MaskAccumulator(CountAccumulator):
    """Foreground / background score histograms ``fg_hist``, ``bg_hist (T + 2,)`` and
    ``num_images ()``, int64.

    Args:
        thresholds: the sweep, e.g. ``np.arange(0, 1, 0.001)``.
        num_threads: threads that bin CPU maps (None: ``min(4, os.cpu_count())``; 1: in the
            caller's thread). Maps on another device are binned there, synchronously. With more
            than one, :meth:`update` copies the batch and returns; :meth:`compute` and the other
            readers wait for the pending work (:meth:`sync`). Same counts for any value.
    """

    def __init__(self, thresholds: Sequence[float] | np.ndarray,
                 num_threads: int | None = None) -> None:
        super().__init__(num_threads)
        self.thresholds = as_thresholds(thresholds)
        self.num_images = self._add_counts("num_images")
        self.fg_hist = self._add_counts("fg_hist", len(self.thresholds) + 2)
        self.bg_hist = self._add_counts("bg_hist", len(self.thresholds) + 2)

    def settings(self) -> dict[str, Any]:
        return {"thresholds": self.thresholds.tolist()}

    def update(self, scoremaps: ScoreMap, gt_masks: ScoreMap) -> None:
        """Add a batch: ``scoremaps (B, H, W)`` in [0, 1] and ``gt_masks (B, H, W)`` uint8 with
        0 = background, 1 = foreground, 255 = ignored (tensor or array)."""
        if scoremaps.ndim != 3 or tuple(gt_masks.shape) != tuple(scoremaps.shape):
            raise ValueError(f"scoremaps (B, H, W) and gt_masks must have the same shape, got"
                             f" {tuple(scoremaps.shape)} and {tuple(gt_masks.shape)}")
        check_scoremaps(scoremaps)
        masks = gt_masks if is_tensor(gt_masks) else np.asarray(gt_masks)
        if is_tensor(scoremaps):
            import torch

            masks = torch.as_tensor(masks, device=scoremaps.device)
        valid = (masks == 0) | (masks == 1) | (masks == IGNORE)
        if not bool(valid.all()):
            raise ValueError("gt_masks must hold only 0 (background), 1 (foreground), 255 (ignore)")
        self._counts["num_images"] += scoremaps.shape[0]
        if is_tensor(scoremaps) and scoremaps.device.type != "cpu":
            self._absorb(_bin_masks(scoremaps, masks, self.thresholds))
            return
        if is_tensor(scoremaps):
            scoremaps = scoremaps.detach().numpy()
        if is_tensor(masks):
            masks = masks.cpu().numpy()
        # Private copies: the caller may reuse its buffers once update returns.
        self._submit(_bin_masks, np.array(scoremaps), np.array(masks), self.thresholds)

    def compute(self) -> dict[str, Any]:
        """``PxAP``, ``pIoU`` (both in %), ``pr_curve`` and ``num_images``.

        ``pr_curve`` lists ``threshold``, ``precision``, ``recall`` from the highest threshold
        down (precision is None where nothing is predicted positive).
        """
        self.sync()
        if int(self.num_images) == 0:
            raise MetricError("MaskAccumulator.compute: no images were accumulated")
        fg = np.asarray(self.fg_hist, dtype=np.float64)
        bg = np.asarray(self.bg_hist, dtype=np.float64)
        tp = fg[::-1].cumsum()
        fn = fg.sum() - tp
        fp = bg[::-1].cumsum()
        if ((tp + fn) <= 0).all():
            raise MetricError("PxAP: no positive ground truth pixel in the evaluated images")
        if ((tp + fp) <= 0).all():
            raise MetricError("PxAP: no positive prediction in the evaluated images")
        predicted = (tp + fp) != 0
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = tp / (tp + fp)
            recall = tp / (tp + fn)
            iou = tp / (tp + fp + fn)
        pxap = (precision[1:] * np.diff(recall))[predicted[1:]].sum() * 100
        return {
            "num_images": int(self.num_images),
            "PxAP": float(pxap),
            "pIoU": float(np.nanmax(iou) * 100),
            "pr_curve": {
                "threshold": bin_edges(self.thresholds)[-2::-1].tolist(),
                "precision": [None if not p else float(v) for p, v in zip(predicted, precision)],
                "recall": recall.tolist(),
            },
        }


def _bin_masks(scoremaps: ScoreMap, masks: ScoreMap,
               thresholds: np.ndarray) -> dict[str, Any]:
    """Partial counts of one batch: the fg / bg score histograms."""
    fg, bg = score_bins(scoremaps, thresholds, masks == 1, masks == 0)
    return {"fg_hist": fg, "bg_hist": bg}


def load_gt_mask(mask_root: str | os.PathLike, mask_paths: Sequence[str],
                 ignore_path: str | None, size: int = 224) -> np.ndarray:
    """The GT mask of one image in evaluation geometry (wsolevaluation's ``get_mask``).

    Each instance PNG is read as grayscale with cv2, resized to ``size x size`` with
    ``INTER_NEAREST`` and thresholded ``> 0.5``; the union is the foreground. The ignore PNG
    (if any) is resized likewise; ignored = ignore region minus foreground.

    Returns:
        ``(size, size)`` uint8: 0 background, 1 foreground, 255 ignored.
    """
    root = Path(mask_root)
    foreground = np.zeros((size, size), dtype=bool)
    for rel in mask_paths:
        foreground |= _read_binary(root / rel, size)
    out = foreground.astype(np.uint8)
    if ignore_path:
        out[_read_binary(root / ignore_path, size) & ~foreground] = IGNORE
    return out


def _read_binary(path: Path, size: int) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise FileNotFoundError(f"cannot read mask image {path}")
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_NEAREST) > 0.5
