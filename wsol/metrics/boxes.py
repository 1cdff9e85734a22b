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

Levels that cannot count are not traced: every box of ``img > L`` lies inside the foreground's
bounding box ``Q_L``, and ``IoU(B, G) = |B & G| / |B | G| <= |Q_L & G| / |G|``; when that bound
is below the smallest IoU threshold (> 0) for every GT box, the image is wrong at ``L`` in both
modes whatever the contours are (a level with an empty foreground is always evaluated: its box is
``(0, 0, 0, 0)``). The bound is evaluated in float64 like the IoU, and division rounding is
monotone, so the skipped levels are exactly ones the reference counts as wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from wsol.localization import leveltree
from wsol.localization.boxes import (
    LevelContours,
    ScoreMap,
    as_thresholds,
    distinct_levels,
    is_tensor,
    level_bounds,
    level_contours,
    quantize_maps,
)
from wsol.metrics.counts import CountAccumulator, MetricError, percent
from wsol.metrics.histograms import bin_edges, score_bins

if TYPE_CHECKING:
    import torch

V1, V2 = 0, 1  # contour-mode index of the count tensors: largest contour, all contours


class BoxAccumulator(CountAccumulator):
    """Counts of correct boxes per (contour mode, IoU threshold, score threshold).

    Args:
        thresholds: the score-map threshold sweep, e.g. ``np.arange(0, 1, 0.001)``.
        iou_thresholds: IoU thresholds ``delta`` in percent.
        multi_contour: report v2 (all contours) if True, v1 (largest contour) if False.
        score_histograms: also histogram the map scores inside / outside the GT boxes
            (bins as for PxAP: edges ``thresholds + [1, 2, 3]``), for the fg/bg activation plots.
        num_threads: threads that trace the maps (None: ``min(4, os.cpu_count())``; 1: in the
            caller's thread). With more than one, :meth:`update` returns once the batch is
            checked and quantized, and the counts are complete after :meth:`sync` (which
            :meth:`compute`, :meth:`to_tensor` and the other readers call). Same counts for any
            value.
        component_tree: count from one component tree per map (the compiled helper of
            :mod:`wsol.localization.leveltree`) instead of tracing every level with OpenCV; None
            (default) uses it when it is built. Same counts either way. Maps longer than
            ``leveltree.MAX_SIDE`` pixels a side are traced with OpenCV.

    Count tensors (int64): ``num_images ()``, ``num_correct (2, D, T)``, ``num_classified (2,)``
    (images with top-1 / top-5 information), ``top1_correct`` and ``top5_correct (2, D, T)``,
    and with ``score_histograms`` ``fg_hist``/``bg_hist (T + 2,)``. Index 0 of the leading axis is
    v1, index 1 is v2.
    """

    def __init__(self, thresholds: Sequence[float] | np.ndarray,
                 iou_thresholds: Sequence[int] = (30, 50, 70), multi_contour: bool = True,
                 score_histograms: bool = False, num_threads: int | None = None,
                 component_tree: bool | None = None) -> None:
        super().__init__(num_threads)
        if component_tree and not leveltree.available():
            raise ValueError("component_tree=True, but wsol.localization._leveltree is not built"
                             " (reinstall wsol where a C compiler is available)")
        self.component_tree = leveltree.available() if component_tree is None else component_tree
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
        # Levels per threshold for each possible map maximum: the component tree's input.
        self._table = (leveltree.threshold_table(self.thresholds) if self.component_tree
                       else None)

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
        gts = [np.asarray(g, dtype=np.int64).reshape(-1, 4) for g in gt_boxes]
        for n, gt in enumerate(gts):
            if len(gt) == 0:
                raise ValueError(f"batch index {n}: an image needs at least one GT box")
        images = quantize_maps(scoremaps)  # checks the maps; a private uint8 copy on the CPU
        counts = self._counts  # not the attributes: reading those waits for pending work
        counts["num_images"] += batch
        for i, f in enumerate(flags):
            if f is not None:
                counts["num_classified"][i] += batch
        # Chunks of images per task: enough tasks to keep every thread busy, few enough that
        # the per-task overhead stays negligible next to ~1-5 ms of tracing per image.
        step = max(1, -(-batch // (2 * self.num_threads)))
        for lo in range(0, batch, step):
            part = slice(lo, lo + step)
            self._submit(_count_images, images[part], gts[part],
                         [None if f is None else f[part] for f in flags],
                         self.thresholds, self._iou_cut, self._table)
        if self.score_histograms:
            self._update_histograms(scoremaps, gts)

    def _update_histograms(self, scoremaps: ScoreMap, gts: Sequence[np.ndarray]) -> None:
        """fg/bg score histograms (inside / outside the union of the GT boxes). CPU maps are
        binned in the pool, from a private float copy, like the box counting; maps on another
        device are binned there, now."""
        if is_tensor(scoremaps) and scoremaps.device.type != "cpu":
            self._absorb(_histogram_task(scoremaps, gts, self.thresholds))
            return
        maps = scoremaps.detach().numpy() if is_tensor(scoremaps) else np.asarray(scoremaps)
        self._submit(_histogram_task, np.array(maps, copy=True), gts, self.thresholds)

    def compute(self) -> dict[str, Any]:
        """Box metrics in %, keyed as described in the module docstring."""
        self.sync()
        n = int(self.num_images)
        if n == 0:
            raise MetricError("BoxAccumulator.compute: no images were accumulated")
        mode = V2 if self.multi_contour else V1
        keys = [str(d) for d in self.iou_thresholds]
        curves = {m: percent(self.num_correct[m], n) for m in (V1, V2)}
        by_iou = {k: float(curves[mode][i].max()) for i, k in enumerate(keys)}
        out: dict[str, Any] = {
            "num_images": n,
            # reported rounded (np.arange gives 0.34600000000000003); counting used the exact grid
            "thresholds": [round(float(t), 10) for t in self.thresholds],
            "MaxBoxAcc": (float(curves[V1][self.iou_thresholds.index(50)].max())
                          if 50 in self.iou_thresholds else None),
            "MaxBoxAccV2": float(np.mean([curves[V2][i].max() for i in range(len(keys))])),
            "max_box_acc_by_iou": by_iou,
            "best_threshold_by_iou": {k: round(float(self.thresholds[int(curves[mode][i].argmax())]),
                                               10)
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
            out["score_histograms"] = {"bin_edges": [round(float(e), 10)
                                                     for e in bin_edges(self.thresholds)],
                                       "inside_gt_boxes": self.fg_hist.tolist(),
                                       "outside_gt_boxes": self.bg_hist.tolist()}
        return out


def image_best_iou(img: np.ndarray, gt: np.ndarray, thresholds: np.ndarray,
                   min_cut: float = 0.0) -> np.ndarray:
    """``(2, T)`` float64: the reference's best IoU with ``gt (G, 4)`` at every threshold, for
    the largest contour (row 0, v1) and all contours (row 1, v2), of the uint8 map ``img``.

    Levels whose bound ``max_G |Q_L & G| / |G|`` is below ``min_cut`` (> 0) are not traced and
    get 0.0 (see the module docstring); ``min_cut = 0`` traces every level.
    """
    levels, index = distinct_levels(img, thresholds)
    best = np.zeros((2, len(levels)))
    traced = np.ones(len(levels), dtype=bool)
    if min_cut > 0:
        q = level_bounds(img, levels)  # inclusive boxes; x1 = -1 when empty
        empty = q[:, 2] < q[:, 0]
        # The boxes' right/bottom edge is clipped to W - 1 / H - 1, never beyond Q + 1.
        height, width = img.shape
        q[:, 2] = np.minimum(q[:, 2] + 1, width - 1)
        q[:, 3] = np.minimum(q[:, 3] + 1, height - 1)
        iw = (np.minimum(q[:, None, 2], gt[None, :, 2])
              - np.maximum(q[:, None, 0], gt[None, :, 0]) + 1)
        ih = (np.minimum(q[:, None, 3], gt[None, :, 3])
              - np.maximum(q[:, None, 1], gt[None, :, 1]) + 1)
        area = (gt[:, 2] - gt[:, 0] + 1) * (gt[:, 3] - gt[:, 1] + 1)
        bound = (np.maximum(iw, 0) * np.maximum(ih, 0) / area[None]).max(axis=1)
        traced = empty | (bound >= min_cut)
    if traced.any():
        table: LevelContours = level_contours(img, levels[traced])
        best[:, traced] = table.best_iou(gt)
    return best[:, index]


def union_masks(gts: Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Bool ``(B, H, W)``: the union of each image's inclusive ``(x0, y0, x1, y1)`` boxes
    (``(K, 4)`` int arrays), clipped to ``size``."""
    h, w = int(size[0]), int(size[1])
    masks = np.zeros((len(gts), h, w), dtype=bool)
    for n, boxes in enumerate(gts):
        for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.int64).reshape(-1, 4).tolist():
            xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x1, w - 1), min(y1, h - 1)
            if xa <= xb and ya <= yb:
                masks[n, ya:yb + 1, xa:xb + 1] = True
    return masks


def _histogram_task(maps: ScoreMap, gts: Sequence[np.ndarray],
                    thresholds: np.ndarray) -> dict[str, np.ndarray]:
    """fg/bg histograms of a batch (the box mask is built here too, in the pool)."""
    fg, bg = score_bins(maps, thresholds, union_masks(gts, tuple(maps.shape[1:])))
    return {"fg_hist": fg, "bg_hist": bg}


def _count_images(images: np.ndarray, gts: Sequence[np.ndarray],
                  flags: Sequence[np.ndarray | None], thresholds: np.ndarray,
                  iou_cut: np.ndarray, table: np.ndarray | None) -> dict[str, np.ndarray]:
    """Partial counts of a chunk of images (runs in the pool): ``num_correct``,
    ``top1_correct``, ``top5_correct``, each ``(2, D, T)`` int64."""
    if table is not None and leveltree.fits(images.shape):  # one component tree per map: the
        # same counts (see leveltree's doc)
        best = leveltree.threshold_best_ious(images, table, gts, iou_cut)
        correct = best[:, :, None, :] >= iou_cut[None, None]
    else:
        min_cut = float(iou_cut.min())
        correct = np.zeros((len(images), 2, len(iou_cut), len(thresholds)), dtype=bool)
        for n, (img, gt) in enumerate(zip(images, gts)):
            correct[n] = image_best_iou(img, gt, thresholds, min_cut)[:, None, :] >= iou_cut[None]
    out = {"num_correct": correct.sum(axis=0, dtype=np.int64)}
    for name, f in zip(("top1_correct", "top5_correct"), flags):
        if f is not None:
            out[name] = correct[f].sum(axis=0, dtype=np.int64)
    return out


def _as_flags(flags: Any, batch: int, name: str) -> np.ndarray | None:
    if flags is None:
        return None
    if is_tensor(flags):
        flags = flags.detach().cpu().numpy()
    arr = np.asarray(flags).astype(bool).reshape(-1)
    if arr.shape != (batch,):
        raise ValueError(f"{name}: expected {batch} flags, got shape {np.asarray(flags).shape}")
    return arr
