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

v1 (largest ``contourArea``, first on ties) needs contour areas, which components do not give.
But the largest contour is always the outer contour of some component: a hole's polygon lies
inside its component's outer polygon, and a component inside a hole inside that hole's
polygon, and the enclosing contour comes first in findContours' order, so it wins ties. Hence
when every component's best IoU falls on the same side of every IoU cut (``min`` and ``max``
over the components pass the same cuts), the v1 box passes exactly those cuts, whichever
component it is. Only the remaining levels (a few percent on real CAMs: several components
that disagree) are traced with OpenCV, exactly as before.

A level whose foreground is empty has the box ``(0, 0, 0, 0)`` in both modes. IoUs are those of
wsolevaluation's ``calculate_multiple_iou`` in float64 (computed the same way, so bit-equal).

Without the compiled helper (an install where the C compiler was missing), :func:`available`
is False and callers trace every level with OpenCV; both give identical counts
(``tests/test_leveltree.py``).
"""

from __future__ import annotations

import numpy as np

from wsol.localization.boxes import box_iou, level_contours

try:
    from wsol.localization import _leveltree
except ImportError:  # built as an optional extension
    _leveltree = None


def available() -> bool:
    """Whether the compiled component-tree helper is installed."""
    return _leveltree is not None


def component_ious(img: np.ndarray, levels: np.ndarray,
                   gt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per level ``L`` of ascending ``levels`` of the uint8 ``(H, W)`` map ``img``, with GT boxes
    ``gt (G, 4)``: ``(fg_max, fg_min, fg_count, hole_max)`` = max / min over the 8-connected
    components of ``img > L`` of their box's best IoU, their number, and the max over the holes
    (-1 when there is none; fg_max is -1 and fg_min 2 when the foreground is empty)."""
    if _leveltree is None:
        raise RuntimeError("wsol.localization._leveltree is not built (see available())")
    img = np.ascontiguousarray(img, dtype=np.uint8)
    if img.ndim != 2:
        raise ValueError(f"component_ious: expected one (H, W) map, got shape {img.shape}")
    levels = np.ascontiguousarray(levels, dtype=np.int64)
    if levels.ndim != 1 or (len(levels) and np.any(np.diff(levels) <= 0)):
        raise ValueError("component_ious: levels must be strictly ascending")
    gt = np.ascontiguousarray(np.asarray(gt, dtype=np.int64).reshape(-1, 4))
    n = len(levels)
    fg_max, fg_min, hole_max = np.empty(n), np.empty(n), np.empty(n)
    fg_count = np.empty(n, dtype=np.int64)
    _leveltree.level_ious(img, img.shape[0], img.shape[1], levels, gt, fg_max, fg_min,
                          fg_count, hole_max)
    return fg_max, fg_min, fg_count, hole_max


def level_best_ious(img: np.ndarray, levels: np.ndarray, gt: np.ndarray,
                    iou_cut: np.ndarray) -> np.ndarray:
    """``(2, L)`` float64 IoUs per level, v1 (row 0) and v2 (row 1), that pass exactly the same
    cuts of ``iou_cut`` (fractions) as the reference's best IoUs: v2 is the reference's value;
    v1 is the reference's value where OpenCV had to be asked, and otherwise an IoU on the same
    side of every cut."""
    gt = np.asarray(gt, dtype=np.int64).reshape(-1, 4)
    cuts = np.asarray(iou_cut, dtype=np.float64).reshape(-1)
    fg_max, fg_min, fg_count, hole_max = component_ious(img, levels, gt)
    empty = fg_count == 0
    out = np.empty((2, len(levels)))
    out[1] = np.maximum(fg_max, hole_max)
    out[0] = fg_max
    if empty.any():
        out[:, empty] = box_iou(np.zeros((1, 4), np.int64), gt).max()
    undecided = ~empty & ((fg_min[:, None] >= cuts) != (fg_max[:, None] >= cuts)).any(axis=1)
    if undecided.any():
        out[0, undecided] = level_contours(img, np.asarray(levels)[undecided]).best_iou(gt)[0]
    return out
