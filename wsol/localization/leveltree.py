"""Per-level best IoU of a map's boxes from one component tree per map (method-spec §4).

:func:`wsol.localization.boxes.level_contours` traces ``img > L`` once per distinct level:
up to 256 ``cv2.findContours`` scans of the map. The boxes the protocol needs are determined by
the connected components alone, so all levels can be had from two union-find passes over the
pixels (the compiled helper ``_leveltree``):

- **outer contours** (RETR_TREE): one per 8-connected component of ``img > L``; its bounding
  rectangle is the component's bounding box ``[x0, x1] x [y0, y1]`` (every extreme pixel is a
  border pixel), so its box is ``(x0, y0, min(x1 + 1, W - 1), min(y1 + 1, H - 1))``. Adding
  the pixels in decreasing value builds the components of every level (a max-tree).
- **hole contours**: one per 4-connected component of ``img <= L`` that does not touch the
  image border; its contour runs through the foreground pixels 4-adjacent to the hole, so its
  rectangle is the hole's bounding box grown by one pixel on each side:
  ``(x0 - 1, y0 - 1, min(x1 + 2, W - 1), min(y1 + 2, H - 1))``. Adding the pixels in
  increasing value builds the holes of every level (a min-tree of the background).

v2 (all contours): ``IoU_v2(L) = max(max over components, max over holes)``.

v1 (largest ``contourArea``, first on ties) needs contour areas, which components do not give
exactly. But the largest contour is always the outer contour of some component: a hole's
polygon lies inside its component's outer polygon, and a component inside a hole inside that
hole's polygon, and the enclosing contour comes first in findContours' order, so it wins ties.
And each component's outer contour area ``A`` is bounded: ``I <= A <= (x1 - x0)(y1 - y0)``,
with ``I`` its interior pixels (3x3 neighbourhood inside the component, off the image edge;
strictly inside the polygon, Pick's theorem) and the right side the rectangle of the polygon's
vertices; at a level with no hole at all, every component is simply connected, its polygon lies
in the union of its pixels' unit squares and ``A <= |component|`` too. A component whose upper
bound is below the largest lower bound cannot be the largest.
Hence when the best IoUs of the remaining candidates fall on the same side of every IoU cut,
the v1 box passes exactly those cuts, whichever candidate it is. Only the remaining levels
are traced with OpenCV, exactly as before.

A level whose foreground is empty has the box ``(0, 0, 0, 0)`` in both modes. IoUs are those of
wsolevaluation's ``calculate_multiple_iou`` in float64 (computed the same way, so bit-equal).

The evaluator calls :func:`threshold_best_ious`: the per-threshold levels come from a
``(256, T)`` table indexed by the map's maximum (:func:`threshold_table`), the distinct
binarizations are found in C from the grey values present (as
:func:`wsol.localization.boxes.distinct_levels` does), and a whole chunk of maps is one call.

Without the compiled helper (an install where the C compiler was missing), :func:`available`
is False and callers trace every level with OpenCV; both give identical counts
(``tests/test_leveltree.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from wsol.localization.boxes import level_contours, threshold_levels

try:
    from wsol.localization import _leveltree
except ImportError:  # built as an optional extension
    _leveltree = None


#: The longest map side the compiled helper takes (its boxes are 16-bit); longer maps are
#: traced with OpenCV (:func:`fits`).
MAX_SIDE = 65535


def fits(shape: Sequence[int]) -> bool:
    """Whether maps of ``shape`` (..., H, W) are within the compiled helper's :data:`MAX_SIDE`."""
    return max(int(shape[-2]), int(shape[-1])) <= MAX_SIDE


def available() -> bool:
    """Whether the compiled component-tree helper is installed."""
    return _leveltree is not None


def component_ious(imgs: np.ndarray, levels: Sequence[np.ndarray],
                   gts: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
    """Per map ``n`` of the uint8 ``(B, H, W)`` ``imgs`` (or one ``(H, W)`` map), per level ``L``
    of its strictly ascending ``levels[n]``, with GT boxes ``gts[n] (G, 4)``: best IoUs of the
    boxes of ``img > L``, concatenated over the maps (``np.split`` at the cumulative level counts
    separates them).

    Returns ``(fg_max, fg_min, fg_count, hole_max, v1_max, v1_min)``: max / min over the
    8-connected components, their number, the max over the holes (-1 when none), and max / min
    over the components that can hold the largest contour. An empty foreground has
    ``fg_max = v1_max = -1`` and ``fg_min = v1_min = 2``.
    """
    if _leveltree is None:
        raise RuntimeError("wsol.localization._leveltree is not built (see available())")
    imgs = np.ascontiguousarray(imgs, dtype=np.uint8)
    if imgs.ndim == 2:
        imgs, levels, gts = imgs[None], [levels], [gts]
    if imgs.ndim != 3:
        raise ValueError(f"component_ious: expected (B, H, W) or (H, W) maps, got {imgs.shape}")
    batch, height, width = imgs.shape
    if len(levels) != batch or len(gts) != batch:
        raise ValueError(f"component_ious: {batch} maps, {len(levels)} level sets and"
                         f" {len(gts)} GT box sets")
    levels = [np.asarray(lv, dtype=np.int64).reshape(-1) for lv in levels]  # ascending: checked in C
    gts = [np.asarray(g, dtype=np.int64).reshape(-1, 4) for g in gts]
    for n, g in enumerate(gts):
        if len(g) == 0:
            raise ValueError(f"component_ious: map {n} has no GT box")
    level_off = np.concatenate([[0], np.cumsum([len(lv) for lv in levels])]).astype(np.int64)
    gt_off = np.concatenate([[0], np.cumsum([len(g) for g in gts])]).astype(np.int64)
    flat_levels = np.ascontiguousarray(np.concatenate(levels) if batch else np.zeros(0, np.int64))
    flat_gt = np.ascontiguousarray(np.concatenate(gts) if batch else np.zeros((0, 4), np.int64))
    out = np.empty((5, int(level_off[-1])))
    count = np.empty(int(level_off[-1]), dtype=np.int64)
    _leveltree.level_ious(imgs, batch, height, width, flat_levels, level_off, flat_gt, gt_off,
                          out, count)
    return out[0], out[1], count, out[2], out[3], out[4]


def threshold_table(thresholds: np.ndarray) -> np.ndarray:
    """``(256, T)`` int64: row ``m`` holds the level ``min(floor(t * m), 255)`` of every threshold
    ``t`` for a map whose maximum is ``m`` (the reference's ``int(t * max(img))``, computed as
    :func:`wsol.localization.boxes.distinct_levels` does)."""
    t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    return np.ascontiguousarray(np.stack([np.minimum(threshold_levels(t, m), 255)
                                          for m in range(256)]))


def threshold_best_ious(imgs: np.ndarray, table: np.ndarray, gts: Sequence[np.ndarray],
                        iou_cut: np.ndarray) -> np.ndarray:
    """``(B, 2, T)`` float64 for the uint8 maps ``imgs (B, H, W)``, thresholds given by their
    :func:`threshold_table`, GT boxes ``gts[n] (G, 4)``: per threshold the v1 (row 0) and v2
    (row 1) best IoUs, passing exactly the cuts ``iou_cut`` the reference's pass. v2 is the
    reference's value; v1 is the reference's value where OpenCV had to be asked (the v1
    candidates disagree on a cut), and otherwise a candidate's IoU on the same side of every cut.
    """
    if _leveltree is None:
        raise RuntimeError("wsol.localization._leveltree is not built (see available())")
    imgs = np.ascontiguousarray(imgs, dtype=np.uint8)
    if imgs.ndim != 3:
        raise ValueError(f"threshold_best_ious: expected (B, H, W) maps, got {imgs.shape}")
    batch, height, width = imgs.shape
    table = np.ascontiguousarray(table, dtype=np.int64)
    if table.ndim != 2 or table.shape[0] != 256:
        raise ValueError(f"threshold_best_ious: expected a (256, T) table, got {table.shape}")
    n_thr = table.shape[1]
    gts = [np.asarray(g, dtype=np.int64).reshape(-1, 4) for g in gts]
    if len(gts) != batch or any(len(g) == 0 for g in gts):
        raise ValueError("threshold_best_ious: every map needs at least one GT box")
    gt_off = np.concatenate([[0], np.cumsum([len(g) for g in gts])]).astype(np.int64)
    flat_gt = np.ascontiguousarray(np.concatenate(gts) if batch else np.zeros((0, 4), np.int64))
    raw = np.empty((batch, 3, n_thr))
    _leveltree.threshold_ious(imgs, batch, height, width, table, n_thr, flat_gt, gt_off, raw)
    cuts = np.asarray(iou_cut, dtype=np.float64).reshape(-1)
    out = np.empty((batch, 2, n_thr))
    out[:, 1] = raw[:, 0]
    out[:, 0] = raw[:, 1]
    undecided = ((raw[:, 2, :, None] >= cuts) != (raw[:, 1, :, None] >= cuts)).any(axis=-1)
    for n in np.flatnonzero(undecided.any(axis=1)):
        which = undecided[n]
        thr = table[int(imgs[n].max())][which]
        levels, index = np.unique(thr, return_inverse=True)
        out[n, 0, which] = level_contours(imgs[n], levels).best_iou(gts[n])[0][index.reshape(-1)]
    return out
