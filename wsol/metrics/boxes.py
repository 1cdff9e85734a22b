"""Box localization accuracy over a threshold sweep (method-spec §4, wsolevaluation's
``BoxEvaluator``), accumulated as counts.

For every image ``n`` and threshold ``t`` the boxes of the score map (see
:mod:`wsol.localization.boxes`) are compared with the image's GT boxes:
``IoU_n(t) = max over predicted boxes and GT boxes of IoU``. Then, with ``N`` images and IoU
threshold ``delta`` (in %):

- ``BoxAcc(delta, t) = 100 * #{n : IoU_n(t) >= delta / 100} / N``;
- ``MaxBoxAcc_delta = max_t BoxAcc(delta, t)`` (one threshold shared by the split);
- ``MaxBoxAcc`` = ``MaxBoxAcc_50`` with the largest contour (v1);
  ``MaxBoxAccV2`` = mean over ``delta`` (30, 50, 70) of ``MaxBoxAcc_delta`` with all contours (v2);
- ``Top-1 Loc(delta) = max_t 100 * #{n : IoU_n(t) >= delta/100 and top-1 class correct} / N``,
  ``Top-5 Loc`` likewise with the GT class among the top 5 (counted per threshold like BoxAcc,
  then maximized over ``t``); ``GT-known Loc = MaxBoxAcc_50`` in the accumulator's contour mode.

Both contour modes are counted in one pass (they share every traced contour); ``multi_contour``
selects the one reported as the curves, ``max_box_acc_by_iou``, Top-k Loc and GT-known Loc.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from wsol.localization.boxes import (
    ScoreMap,
    as_thresholds,
    distinct_levels,
    level_contours,
    quantize_maps,
)
from wsol.metrics.counts import CountAccumulator, MetricError, percent
from wsol.metrics.histograms import bin_edges, score_bins

V1, V2 = 0, 1  # contour-mode index of the count tensors: largest contour, all contours


class BoxAccumulator(CountAccumulator):
    """Counts of correct boxes per (contour mode, IoU threshold, score threshold).

    Args:
        thresholds: the score-map threshold sweep, e.g. ``np.arange(0, 1, 0.001)``.
        iou_thresholds: IoU thresholds ``delta`` in percent.
        multi_contour: report v2 (all contours) if True, v1 (largest contour) if False.
        score_histograms: also histogram the map scores inside / outside the GT boxes
            (bins as for PxAP: edges ``thresholds + [1, 2, 3]``), for the fg/bg activation plots.

    Count tensors (int64): ``num_images ()``, ``num_correct (2, D, T)``, ``num_classified (2,)``
    (images with top-1 / top-5 information), ``top1_correct`` and ``top5_correct (2, D, T)``,
    and with ``score_histograms`` ``fg_hist``/``bg_hist (T + 2,)``. Index 0 of the leading axis is
    v1, index 1 is v2.
    """

    def __init__(self, thresholds: Sequence[float] | np.ndarray,
                 iou_thresholds: Sequence[int] = (30, 50, 70), multi_contour: bool = True,
                 score_histograms: bool = False) -> None:
        super().__init__()
        self.thresholds = as_thresholds(thresholds)
        deltas = [int(d) for d in iou_thresholds]
        if not deltas or any(not 0 <= d <= 100 for d in deltas) or len(set(deltas)) != len(deltas):
            raise ValueError(
                f"iou_thresholds must be distinct integers in [0, 100], got {iou_thresholds}")
        self.iou_thresholds = tuple(deltas)
        self.multi_contour = bool(multi_contour)
        self.score_histograms = bool(score_histograms)
        n_t, n_d = len(self.thresholds), len(deltas)
        self.num_images = self._add_counts("num_images")
        self.num_correct = self._add_counts("num_correct", 2, n_d, n_t)
        self.num_classified = self._add_counts("num_classified", 2)
        self.top1_correct = self._add_counts("top1_correct", 2, n_d, n_t)
        self.top5_correct = self._add_counts("top5_correct", 2, n_d, n_t)
        if self.score_histograms:
            self.fg_hist = self._add_counts("fg_hist", n_t + 2)
            self.bg_hist = self._add_counts("bg_hist", n_t + 2)
        self._iou_cut = np.asarray(deltas, dtype=np.int64)[:, None] / 100  # as the reference: d/100

    def settings(self) -> dict[str, Any]:
        return {"thresholds": self.thresholds.tolist(), "iou_thresholds": list(self.iou_thresholds),
                "multi_contour": self.multi_contour, "score_histograms": self.score_histograms}

    def update(self, scoremaps: ScoreMap, gt_boxes: Sequence[np.ndarray],
               top1_correct: Sequence[bool] | np.ndarray | torch.Tensor | None = None,
               top5_correct: Sequence[bool] | np.ndarray | torch.Tensor | None = None) -> None:
        """Add a batch.

        Args:
            scoremaps: ``(B, H, W)`` float32/float64 tensor or array, values in [0, 1] (the
                normalized maps at evaluation resolution).
            gt_boxes: ``B`` int arrays ``(K, 4)`` of ``(x0, y0, x1, y1)`` in the maps' geometry.
            top1_correct, top5_correct: optional ``(B,)`` booleans (predicted class ranking
                correct), for Top-1 / Top-5 Loc.
        """
        if scoremaps.ndim != 3:
            raise ValueError(f"scoremaps must be (B, H, W), got shape {tuple(scoremaps.shape)}")
        batch = scoremaps.shape[0]
        if len(gt_boxes) != batch:
            raise ValueError(f"got {len(gt_boxes)} GT box sets for a batch of {batch} maps")
        flags = [_as_flags(f, batch, name) for f, name in
                 ((top1_correct, "top1_correct"), (top5_correct, "top5_correct"))]
        images = quantize_maps(scoremaps)
        correct = np.zeros((batch, 2, len(self.iou_thresholds), len(self.thresholds)), dtype=bool)
        for n in range(batch):
            gt = np.asarray(gt_boxes[n], dtype=np.int64).reshape(-1, 4)
            if len(gt) == 0:
                raise ValueError(f"batch index {n}: an image needs at least one GT box")
            levels, index = distinct_levels(images[n], self.thresholds)
            v1, v2 = level_contours(images[n], levels).best_iou(gt)
            best = np.stack([v1, v2])[:, index]  # (2, T)
            correct[n] = best[:, None, :] >= self._iou_cut[None]
        self.num_images += batch
        self.num_correct += torch.from_numpy(correct.sum(axis=0))
        for i, (f, counts) in enumerate(zip(flags, (self.top1_correct, self.top5_correct))):
            if f is not None:
                self.num_classified[i] += batch
                counts += torch.from_numpy(correct[f].sum(axis=0))
        if self.score_histograms:
            self._update_histograms(scoremaps, gt_boxes)

    def _update_histograms(self, scoremaps: ScoreMap, gt_boxes: Sequence[np.ndarray]) -> None:
        batch, height, width = scoremaps.shape
        inside = np.zeros((batch, height, width), dtype=bool)
        for n, boxes in enumerate(gt_boxes):
            for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.int64).reshape(-1, 4).tolist():
                inside[n, y0:y1 + 1, x0:x1 + 1] = True
        fg, bg = score_bins(scoremaps, self.thresholds, inside)
        self.fg_hist += fg
        self.bg_hist += bg

    def compute(self) -> dict[str, Any]:
        """Box metrics in %, keyed as described in the module docstring."""
        n = int(self.num_images)
        if n == 0:
            raise MetricError("BoxAccumulator.compute: no images were accumulated")
        mode = V2 if self.multi_contour else V1
        keys = [str(d) for d in self.iou_thresholds]
        curves = {m: percent(self.num_correct[m], n) for m in (V1, V2)}
        by_iou = {k: float(curves[mode][i].max()) for i, k in enumerate(keys)}
        out: dict[str, Any] = {
            "num_images": n,
            "thresholds": self.thresholds.tolist(),
            "MaxBoxAcc": (float(curves[V1][self.iou_thresholds.index(50)].max())
                          if 50 in self.iou_thresholds else None),
            "MaxBoxAccV2": float(np.mean([curves[V2][i].max() for i in range(len(keys))])),
            "max_box_acc_by_iou": by_iou,
            "best_threshold_by_iou": {k: float(self.thresholds[int(curves[mode][i].argmax())])
                                      for i, k in enumerate(keys)},
            "box_acc_curves": {k: curves[mode][i].tolist() for i, k in enumerate(keys)},
            "gt_known_loc": by_iou.get("50"),
        }
        for i, name in enumerate(("top1", "top5")):
            counts = self.top1_correct if i == 0 else self.top5_correct
            n_cls = int(self.num_classified[i])
            if n_cls == 0:
                out[f"{name}_loc_by_iou"] = None
                out[f"{name}_loc"] = None
                continue
            if n_cls != n:
                raise MetricError(f"{name} class information was given for {n_cls} of {n} images")
            loc = {k: float(percent(counts[mode][j], n).max()) for j, k in enumerate(keys)}
            out[f"{name}_loc_by_iou"] = loc
            out[f"{name}_loc"] = loc.get("50")
        if self.score_histograms:
            out["score_histograms"] = {"bin_edges": bin_edges(self.thresholds).tolist(),
                                       "inside_gt_boxes": self.fg_hist.tolist(),
                                       "outside_gt_boxes": self.bg_hist.tolist()}
        return out


def _as_flags(flags: Any, batch: int, name: str) -> np.ndarray | None:
    if flags is None:
        return None
    if isinstance(flags, torch.Tensor):
        flags = flags.detach().cpu().numpy()
    arr = np.asarray(flags).astype(bool).reshape(-1)
    if arr.shape != (batch,):
        raise ValueError(f"{name}: expected {batch} flags, got shape {np.asarray(flags).shape}")
    return arr
