"""Score map -> boxes, exactly as wsolevaluation's ``compute_bboxes_from_scoremaps``, but fast.

The reference algorithm (method-spec §4, "Boxes from a score map"), for a ``(H, W)`` map ``s``
with values in [0, 1] and each threshold ``t`` of the sweep:

1. ``img = uint8(s * 255)`` (truncation; the product is taken in the map's own float dtype);
2. ``thr = floor(t * max(img))``; foreground ``F_t = img > thr`` (``cv2.threshold``; on uint8
   images OpenCV floors a fractional threshold, so ``> floor`` is also what a fractional
   threshold would give);
3. ``cv2.findContours(F_t, RETR_TREE, CHAIN_APPROX_SIMPLE)``: the outer border of every
   8-connected foreground component and the border of every hole (4-connected background
   component enclosed by foreground);
4. each contour's bounding rectangle ``(x, y, w, h)`` gives the box
   ``(x, y, min(x + w, W - 1), min(y + h, H - 1))`` (wsolevaluation's convention: ``x + w`` is
   one past the last pixel, clipped to the last pixel);
5. v2 (``multi_contour=True``) keeps every box; v1 keeps the contour with the largest
   ``cv2.contourArea`` (the first one on ties, Python's ``max``); no contour -> ``(0, 0, 0, 0)``.

Why it is fast while staying exact:

- ``F_t`` depends on ``t`` only through ``thr``, and ``img > thr`` changes only when ``thr``
  crosses a value present in ``img``: a sweep of 1000 thresholds needs at most 256 distinct
  binarizations, fewer for maps with few grey levels. Each distinct binarization is traced once.
- The binarizations are nested, so the bounding box of ``F_t`` is found for all levels at once
  from running maxima of the row and column maxima; ``findContours`` runs on that crop only.
  Contours are translation invariant (OpenCV treats outside-the-image as background, and every
  pixel outside the crop is background), so the result is the same after adding the offset.
- Bounding rectangles and contour areas are computed for all contours of all levels at once:
  ``boundingRect`` is the min/max of the contour points, ``contourArea`` the shoelace sum, which
  OpenCV evaluates in double precision and is exact for integer pixel coordinates; here it is
  an exact int64 sum, so the v1 choice (including ties) is the reference's.

``tests/test_localization_boxes.py`` checks the fast path against the plain per-threshold
implementation in :mod:`wsol.localization.reference` on random, smooth, blobby and holey maps.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

import cv2
import numpy as np

from wsol.errors import ScoreMapError

if TYPE_CHECKING:
    import torch

#: Accepted map types: a NumPy array or a torch tensor (any device), float32 or float64. This
#: module does not import torch: a tensor can only exist once torch has been imported.
ScoreMap = Union[np.ndarray, "torch.Tensor"]


def is_tensor(value: Any) -> bool:
    """Whether ``value`` is a torch tensor, without importing torch."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)



def check_scoremaps(maps: ScoreMap) -> None:
    """The reference's ``check_scoremap_validity`` for ``(H, W)`` or ``(B, H, W)`` maps: float32 or
    float64, no NaN, values in [0, 1]; raises :class:`ScoreMapError` naming the batch index."""
    # min / max propagate NaN, so two reductions find both problems.
    if is_tensor(maps):
        import torch

        if maps.dtype not in (torch.float32, torch.float64):
            raise ScoreMapError(f"score maps must be float32 or float64, got {maps.dtype}")
        with torch.no_grad():
            flat = maps.detach().reshape(-1, maps.shape[-2] * maps.shape[-1])
            lo, hi = torch.aminmax(flat, dim=1)
            lo, hi = lo.cpu().numpy(), hi.cpu().numpy()
    elif isinstance(maps, np.ndarray):
        if maps.dtype not in (np.float32, np.float64):
            raise ScoreMapError(f"score maps must be float32 or float64, got {maps.dtype}")
        flat = maps.reshape(-1, maps.shape[-2] * maps.shape[-1])
        lo, hi = flat.min(axis=1), flat.max(axis=1)
    else:
        raise TypeError(
            f"score maps must be a numpy.ndarray or torch.Tensor, got {type(maps).__name__}")
    has_nan = np.isnan(lo) | np.isnan(hi)
    out_of_range = ~has_nan & ((lo < 0) | (hi > 1))
    for what, flags in (("NaN", has_nan), ("values outside [0, 1]", out_of_range)):
        bad = np.flatnonzero(flags)
        if bad.size and maps.ndim == 2:
            raise ScoreMapError(f"score map has {what}", index=0)
        if bad.size:
            raise ScoreMapError(f"score map at batch index {int(bad[0])} has {what}"
                                f" ({bad.size} map(s) in this batch)", index=int(bad[0]))


def quantize_maps(maps: ScoreMap) -> np.ndarray:
    """``uint8(maps * 255)`` with truncation (as the reference) for ``(H, W)`` or ``(B, H, W)``.

    The product is formed in the map's float dtype (float32 stays float32, as NumPy would),
    on the map's device for tensors; only the uint8 result is moved to the CPU. Invalid maps
    raise :class:`ScoreMapError` (see :func:`check_scoremaps`).
    """
    check_scoremaps(maps)
    if is_tensor(maps):
        import torch

        with torch.no_grad():
            return (maps.detach() * 255).to(torch.uint8).cpu().numpy()
    return (maps * 255).astype(np.uint8)


def threshold_levels(thresholds: np.ndarray, max_value: int) -> np.ndarray:
    """``floor(t * max_value)`` for every threshold ``t`` (the reference's ``int(t * max(img))``),
    computed in float64 exactly as the reference does."""
    return (np.asarray(thresholds, dtype=np.float64) * max_value).astype(np.int64)


def as_thresholds(thresholds: np.ndarray | list[float]) -> np.ndarray:
    """Validate a threshold sweep: a 1-d float array of values >= 0."""
    t = np.asarray(thresholds, dtype=np.float64)
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"thresholds must be a non-empty 1-d sequence, got shape {t.shape}")
    if not np.isfinite(t).all() or (t < 0).any():
        raise ValueError("thresholds must be finite and >= 0")
    return t


def cam_thresholds(interval: float) -> np.ndarray:
    """wsolevaluation's sweep ``np.arange(0, 1, interval)``."""
    if not 0 < interval < 1:
        raise ValueError(f"cam curve interval must be in (0, 1), got {interval}")
    return np.arange(0, 1, interval)


@dataclass(frozen=True)
class LevelContours:
    """Every contour of the binarizations ``img > L`` for a sorted set of levels ``L``.

    Attributes:
        boxes: ``(K, 4)`` int64 boxes ``(x0, y0, x1, y1)`` in the reference convention, all
            contours of all levels, level by level in findContours order.
        area2: ``(K,)`` int64, twice ``cv2.contourArea`` of each contour.
        counts: ``(L,)`` number of contours per level (0 for an empty foreground).
    """

    boxes: np.ndarray
    area2: np.ndarray
    counts: np.ndarray

    def select(self, multi_contour: bool) -> tuple[np.ndarray, np.ndarray]:
        """The reference's boxes per level: ``(boxes (K', 4), starts (L,))``, level ``i`` owning
        rows ``starts[i]:starts[i+1]``. v1 keeps one box per level (the first of largest area);
        a level without contours gets the box ``(0, 0, 0, 0)``."""
        empty = self.counts == 0
        if multi_contour:
            boxes, counts = self.boxes, self.counts
        else:
            boxes = self.boxes[self.largest()]
            counts = (~empty).astype(np.int64)
        if empty.any():
            # Insert one (0, 0, 0, 0) row for every empty level.
            pos = _starts(counts)[empty]
            boxes = np.insert(boxes, pos, 0, axis=0)
            counts = np.where(empty, 1, counts)
        return boxes, _starts(counts)

    def best_iou(self, gt_boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per level, the best IoU with ``gt_boxes (G, 4)`` of the v1 box and of all v2 boxes
        (wsolevaluation's ``max(multiple_iou.max(1)[level boxes])``): ``(v1 (L,), v2 (L,))``."""
        empty = self.counts == 0
        v1 = np.empty(len(self.counts))
        v2 = np.empty(len(self.counts))
        if empty.any():
            v1[empty] = v2[empty] = box_iou(np.zeros((1, 4), np.int64), gt_boxes).max()
        if len(self.area2):
            per_box = box_iou(self.boxes, gt_boxes).max(axis=1)
            starts = _starts(self.counts[~empty])
            v2[~empty] = np.maximum.reduceat(per_box, starts)
            v1[~empty] = per_box[self.largest()]
        return v1, v2

    def largest(self) -> np.ndarray:
        """For each level with contours, the row of its first contour of largest area (v1, as
        Python's ``max(contours, key=cv2.contourArea)`` picks it)."""
        return _first_largest(self.area2, self.counts)


def _first_largest(area2: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per level with contours: the row of its first contour of largest area."""
    if not len(area2):
        return np.zeros(0, dtype=np.int64)
    nonempty = counts > 0
    level = np.repeat(np.arange(len(counts)), counts)
    best = np.maximum.reduceat(area2, _starts(counts[nonempty]))
    cand = np.flatnonzero(area2 == best[np.cumsum(nonempty)[level] - 1])
    _, first = np.unique(level[cand], return_index=True)
    return cand[first]


def _starts(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(len(counts), dtype=np.int64)
    np.cumsum(counts[:-1], out=out[1:])
    return out


def level_bounds(img: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """``(L, 4)`` int64: per level ``L``, the bounding box ``(x0, y0, x1, y1)`` (inclusive pixel
    coordinates) of ``img > L``, with ``x1 = y1 = -1`` where that foreground is empty. Found for
    all levels at once from running maxima of the row and column maxima (non-decreasing, so
    ``searchsorted`` applies)."""
    height, width = img.shape
    row_max, col_max = img.max(axis=1), img.max(axis=0)
    out = np.empty((len(levels), 4), dtype=np.int64)
    out[:, 1] = np.searchsorted(np.maximum.accumulate(row_max), levels, side="right")
    out[:, 3] = height - 1 - np.searchsorted(np.maximum.accumulate(row_max[::-1]), levels,
                                             side="right")
    out[:, 0] = np.searchsorted(np.maximum.accumulate(col_max), levels, side="right")
    out[:, 2] = width - 1 - np.searchsorted(np.maximum.accumulate(col_max[::-1]), levels,
                                            side="right")
    return out


def level_contours(img: np.ndarray, levels: np.ndarray) -> LevelContours:
    """Trace ``img > L`` for each level ``L`` (ascending, ints) of a uint8 ``(H, W)`` image.

    Every level runs ``cv2.findContours`` (RETR_TREE, CHAIN_APPROX_SIMPLE) on the bounding box
    of its foreground only (a view; OpenCV does not modify its input). One binary image is kept
    and updated in place from level to level: going up from ``L`` to ``L'`` clears exactly the
    pixels with ``L < img <= L'`` (found once, from one stable sort of the pixels), so all
    binarizations together cost ``O(H W)`` writes instead of one comparison pass per level.
    """
    height, width = img.shape
    img = np.ascontiguousarray(img)
    levels = np.asarray(levels, dtype=np.int64)
    n_levels = len(levels)
    if n_levels and np.any(np.diff(levels) < 0):
        raise ValueError("level_contours: levels must be ascending")
    bounds = level_bounds(img, levels)
    x0, y0 = bounds[:, 0], bounds[:, 1]
    flat = img.reshape(-1)
    order = np.argsort(flat, kind="stable")  # a radix sort for uint8
    # upto[i] = number of pixels <= levels[i]: order[upto[i-1]:upto[i]] switch off at level i.
    cum = np.concatenate([[0], np.cumsum(np.bincount(flat, minlength=256))])
    upto = cum[np.clip(levels, -1, 255) + 1].tolist()
    binary = np.ones(height * width, dtype=np.uint8)
    view = binary.reshape(height, width)
    contours: list[np.ndarray] = []
    counts = np.zeros(n_levels, dtype=np.int64)
    find, tree, simple = cv2.findContours, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE
    done = 0
    for i, (off, (c0, r0, c1, r1)) in enumerate(zip(upto, bounds.tolist())):
        if r1 < r0:
            break  # empty foreground here and at every higher level
        if off > done:
            binary[order[done:off]] = 0
            done = off
        found = find(view[r0:r1 + 1, c0:c1 + 1], tree, simple)[-2]
        counts[i] = len(found)
        contours += found
    if not contours:
        return LevelContours(np.zeros((0, 4), np.int64), np.zeros(0, np.int64), counts)
    lengths = np.fromiter(map(len, contours), dtype=np.int64, count=len(contours))
    pts = np.concatenate(contours).reshape(-1, 2).astype(np.int64)
    starts = _starts(lengths)
    ends = starts + lengths - 1  # last point of each contour
    xs, ys = pts[:, 0], pts[:, 1]
    # Shoelace, twice the area: sum over the cyclic edges (p_i -> p_i+1) of x_i y_i+1 - x_i+1 y_i.
    # cross[i] is the edge from point i to point i + 1 of the concatenation; the edge leaving a
    # contour's last point is replaced by the one closing it (last -> first).
    cross = np.zeros(len(xs), dtype=np.int64)
    cross[:-1] = xs[:-1] * ys[1:] - xs[1:] * ys[:-1]
    closing = xs[ends] * ys[starts] - xs[starts] * ys[ends]
    area2 = np.abs(np.add.reduceat(cross, starts) - cross[ends] + closing)
    level_of = np.repeat(np.arange(n_levels), counts)
    ox, oy = x0[level_of], y0[level_of]
    boxes = np.stack([
        np.minimum.reduceat(xs, starts) + ox,
        np.minimum.reduceat(ys, starts) + oy,
        np.minimum(np.maximum.reduceat(xs, starts) + ox + 1, width - 1),
        np.minimum(np.maximum.reduceat(ys, starts) + oy + 1, height - 1),
    ], axis=1)
    return LevelContours(boxes, area2, counts)


def distinct_levels(img: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct binarizations a threshold sweep produces on the uint8 image ``img``.

    Returns ``(levels, index)``: ascending levels ``L`` with pairwise different ``img > L``, and
    for every threshold ``t`` the position in ``levels`` of a level giving the same foreground
    as ``floor(t * max(img))``.
    """
    thr = np.minimum(threshold_levels(thresholds, int(img.max())), 255)
    present = np.bincount(img.ravel(), minlength=256) > 0
    # Two levels binarize alike iff the same number of present grey values lies at or below them.
    key = np.cumsum(present)[thr]
    _, first, index = np.unique(key, return_index=True, return_inverse=True)
    return thr[first], index.reshape(-1)


def boxes_from_map(scoremap: ScoreMap, thresholds: np.ndarray | list[float],
                   multi_contour: bool = True) -> list[np.ndarray]:
    """Boxes of one ``(H, W)`` score map at each threshold, identical to wsolevaluation's
    ``compute_bboxes_from_scoremaps``.

    Args:
        scoremap: ``(H, W)`` float32/float64 array or tensor with values in [0, 1].
        thresholds: the sweep, e.g. ``np.arange(0, 1, 0.01)``.
        multi_contour: True for MaxBoxAccV2's boxes (every contour, hole borders included),
            False for MaxBoxAcc's (the largest contour only).

    Returns:
        one int64 array ``(K, 4)`` of ``(x0, y0, x1, y1)`` per threshold (``K >= 1``).
    """
    if scoremap.ndim != 2:
        raise ScoreMapError(
            f"boxes_from_map expects one (H, W) map, got shape {tuple(scoremap.shape)}")
    img = quantize_maps(scoremap)
    levels, index = distinct_levels(img, as_thresholds(thresholds))
    boxes, starts = level_contours(img, levels).select(multi_contour)
    per_level = np.split(boxes, starts[1:])
    return [per_level[i] for i in index]


def boxes_from_maps(scoremaps: ScoreMap, threshold: float) -> np.ndarray:
    """The largest-contour (v1) box of each ``(B, H, W)`` map at one threshold: ``(B, 4)`` int64,
    ``(0, 0, 0, 0)`` for an empty foreground (same rule as :func:`boxes_from_map`)."""
    if scoremaps.ndim != 3:
        raise ScoreMapError(
            f"boxes_from_maps expects (B, H, W) maps, got shape {tuple(scoremaps.shape)}")
    t = as_thresholds([threshold])
    out = np.zeros((scoremaps.shape[0], 4), dtype=np.int64)
    for n, img in enumerate(quantize_maps(scoremaps)):
        out[n] = level_contours(img, threshold_levels(t, int(img.max()))).select(False)[0][0]
    return out


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``boxes_a (Na, 4)`` with every box in ``boxes_b (Nb, 4)``: ``(Na, Nb)``.

    Inclusive pixel boxes ``(x0, y0, x1, y1)`` (wsolevaluation's ``calculate_multiple_iou``):
    ``area = (x1 - x0 + 1) (y1 - y0 + 1)``, ``IoU = |A ∩ B| / (|A| + |B| - |A ∩ B|)``, and 1 where
    that denominator is not positive. Raises ``ValueError`` for negative coordinates or
    ``x1 < x0`` / ``y1 < y0``.
    """
    a = _check_boxes(boxes_a, "boxes_a")
    b = _check_boxes(boxes_b, "boxes_b")
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    a, b = a[:, None, :], b[None, :, :]  # (Na, 1, 4) against (1, Nb, 4)
    inter_w = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1
    inter_h = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1
    inter = np.maximum(0, inter_w) * np.maximum(0, inter_h)
    union = area_a[:, None] + area_b[None, :] - inter
    degenerate = union <= 0
    iou = inter / np.where(degenerate, 1, union)
    iou[degenerate] = 1.0
    return iou


def _check_boxes(boxes: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(boxes)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{name}: expected boxes of shape (N, 4), got {np.asarray(boxes).shape}")
    arr = arr.astype(np.int64)
    if (arr < 0).any():
        raise ValueError(f"{name}: box coordinates must be non-negative")
    if (arr[:, 2] < arr[:, 0]).any() or (arr[:, 3] < arr[:, 1]).any():
        raise ValueError(f"{name}: boxes must satisfy x0 <= x1 and y0 <= y1 (x0y0x1y1 convention)")
    return arr


def resize_boxes(boxes: np.ndarray, from_size: tuple[int, int],
                 to_size: tuple[int, int]) -> np.ndarray:
    """Rescale ``(x0, y0, x1, y1)`` boxes from an image of ``from_size = (W, H)`` to ``to_size``:
    ``int(x * W' / W)`` per coordinate (wsolevaluation's ``resize_bbox``; float64, truncation).

    ``boxes`` is ``(4,)`` or ``(N, 4)``; the result has the same shape, int64.
    """
    arr = np.asarray(boxes)
    checked = _check_boxes(arr, "resize_boxes").astype(np.float64)
    (w, h), (new_w, new_h) = map(float, from_size), map(float, to_size)
    if min(w, h, new_w, new_h) <= 0:
        raise ValueError(f"resize_boxes: sizes must be positive, got {from_size} -> {to_size}")
    scale = np.array([new_w, new_h, new_w, new_h])
    out = (checked * scale / np.array([w, h, w, h])).astype(np.int64)
    return out.reshape(arr.shape)
