"""Localization metrics of one predicted box per image (a box regressor's output).

Not a threshold sweep: there is no score map and no threshold to optimize, so the numbers are
plain box accuracies, the analogue of MaxBoxAcc / MaxBoxAccV2 for a threshold-free box.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import Tensor

from wsol.localization import box_iou

__all__ = ["best_ious", "box_localization_metrics"]


def best_ious(pred: np.ndarray, gt_boxes: Sequence[np.ndarray]) -> np.ndarray:
    """IoU of each predicted box with its image's best-matching GT box (inclusive pixels)."""
    return np.array([float(box_iou(p[None], np.asarray(g).reshape(-1, 4)).max())
                     for p, g in zip(pred, gt_boxes)], dtype=np.float64)


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
    ious = best_ious(pred.astype(np.int64), gt_boxes)
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
