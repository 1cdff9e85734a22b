"""A plain, slow restatement of the wsolevaluation reference algorithms (method-spec §4).

Written for checking, not for use: one ``cv2.threshold`` + ``cv2.findContours`` per threshold,
per-contour ``cv2.boundingRect`` / ``cv2.contourArea``, ``np.histogram`` for the mask
histograms. The tests compare the fast paths of :mod:`wsol.localization.boxes` and
:mod:`wsol.metrics` against these on maps the fixtures do not contain, and
``benchmarks/bench_evaluator.py`` times them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import cv2
import numpy as np


def reference_boxes(scoremap: np.ndarray, thresholds: Iterable[float],
                    multi_contour: bool) -> list[np.ndarray]:
    """Boxes per threshold, step by step as ``compute_bboxes_from_scoremaps`` does."""
    if np.isnan(scoremap).any() or scoremap.min() < 0 or scoremap.max() > 1:
        raise ValueError("score map has NaN or values outside [0, 1]")
    height, width = scoremap.shape
    image = np.expand_dims((scoremap * 255).astype(np.uint8), 2)
    out = []
    for t in thresholds:
        _, binary = cv2.threshold(image, int(t * np.max(image)), 255, cv2.THRESH_BINARY)
        contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
        if len(contours) == 0:
            out.append(np.asarray([[0, 0, 0, 0]]))
            continue
        if not multi_contour:
            contours = [max(contours, key=cv2.contourArea)]
        boxes = []
        for contour in contours:
            x, y, w, h = cv2.boundingRect(contour)
            boxes.append([x, y, min(x + w, width - 1), min(y + h, height - 1)])
        out.append(np.asarray(boxes))
    return out


def reference_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """``calculate_multiple_iou``, one pair at a time."""
    ious = np.zeros((len(boxes_a), len(boxes_b)))
    for i, (ax0, ay0, ax1, ay1) in enumerate(np.asarray(boxes_a).tolist()):
        for j, (bx0, by0, bx1, by1) in enumerate(np.asarray(boxes_b).tolist()):
            inter = (max(0, min(ax1, bx1) - max(ax0, bx0) + 1)
                     * max(0, min(ay1, by1) - max(ay0, by0) + 1))
            union = (ax1 - ax0 + 1) * (ay1 - ay0 + 1) + (bx1 - bx0 + 1) * (by1 - by0 + 1) - inter
            ious[i, j] = 1.0 if union <= 0 else inter / union
    return ious


def reference_num_correct(scoremaps: Sequence[np.ndarray], gt_boxes: Sequence[np.ndarray],
                          thresholds: Sequence[float], iou_thresholds: Sequence[int],
                          multi_contour: bool) -> dict[int, np.ndarray]:
    """``BoxEvaluator.accumulate`` over a split: images correct per IoU threshold and threshold."""
    num_correct = {d: np.zeros(len(thresholds), dtype=np.int64) for d in iou_thresholds}
    for scoremap, gt in zip(scoremaps, gt_boxes):
        best = np.asarray([reference_iou(boxes, gt).max()
                           for boxes in reference_boxes(scoremap, thresholds, multi_contour)])
        for d in iou_thresholds:
            num_correct[d][best >= d / 100] += 1
    return num_correct


def reference_histograms(scoremaps: Sequence[np.ndarray], gt_masks: Sequence[np.ndarray],
                         thresholds: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """``MaskEvaluator.accumulate``: histograms of foreground (mask 1) and background (mask 0)
    scores over the bin edges ``thresholds + [1, 2, 3]``."""
    edges = np.append(np.asarray(thresholds, dtype=np.float64), [1.0, 2.0, 3.0])
    fg = np.zeros(len(edges) - 1)
    bg = np.zeros(len(edges) - 1)
    for scoremap, mask in zip(scoremaps, gt_masks):
        fg += np.histogram(scoremap[mask == 1], bins=edges)[0]
        bg += np.histogram(scoremap[mask == 0], bins=edges)[0]
    return fg, bg


def reference_pxap(fg_hist: np.ndarray, bg_hist: np.ndarray) -> float:
    """``MaskEvaluator.compute``: area under the pixel precision-recall curve, in %."""
    tp = fg_hist[::-1].cumsum()
    fn = fg_hist.sum() - tp
    fp = bg_hist[::-1].cumsum()
    nonzero = (tp + fp) != 0
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tp / (tp + fp)
        recall = tp / (tp + fn)
    return float((precision[1:] * np.diff(recall))[nonzero[1:]].sum() * 100)
