"""``inside_gt_share``: does a score map put more mass inside the GT boxes than outside?

A threshold-free sanity check of a localization map's *polarity*, independent of the box
extraction: a map that lights up the background can still reach a fair MaxBoxAcc on
large-object data (the whole-image box is often "correct"), but it fails this check.

For image ``n`` with map ``M_n`` (``H x W``) and GT boxes ``b_{n,1..K}`` (inclusive pixel
coordinates ``(x0, y0, x1, y1)`` in the map's geometry, e.g. the 224 x 224 evaluation geometry of
:func:`wsol.metrics.evaluator.gt_boxes_in_eval_geometry`), let ``U_n`` be the union of the
boxes' pixels and ``O_n`` its complement. Then::

    inside_n  = mean_{p in U_n} M_n(p),     outside_n = mean_{p in O_n} M_n(p)
    defined_n = |U_n| > 0 and |O_n| > 0
    inside_gt_share = #{n : defined_n and inside_n > outside_n} / #{n : defined_n}

An image whose boxes cover the whole map (``O_n`` empty) or no pixel of it (every box outside the
map after clipping) has no inside/outside contrast: it is *undefined* and excluded from both
counts. Ties (``inside_n == outside_n``, e.g. a constant map) count as *not* inside. The share is
``nan`` when no image is defined. The means are over raw map values, so the check does not
depend on the normalization as long as it is monotone per image (min-max, max, ...).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from wsol.errors import MetricError
from wsol.metrics.boxes import union_masks

__all__ = ["InsideGT", "box_union_masks", "inside_gt_share", "inside_outside_means"]

BoxesLike = Sequence[Sequence[int]] | np.ndarray | Tensor


@dataclass(frozen=True)
class InsideGT:
    """Per-image inside / outside means and the share (module docstring).

    ``inside``, ``outside``: float ``(B,)`` (``nan`` where undefined); ``defined``: bool ``(B,)``;
    ``share``: the fraction of defined images with ``inside > outside`` (``nan`` if none);
    ``num_defined``, ``num_inside``: the counts behind it.
    """

    inside: Tensor
    outside: Tensor
    defined: Tensor
    share: float
    num_defined: int
    num_inside: int


def _as_box_array(boxes: BoxesLike, index: int) -> np.ndarray:
    arr = (boxes.detach().cpu().numpy() if isinstance(boxes, Tensor)
           else np.asarray(boxes, dtype=np.float64))
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.int64)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise MetricError(f"boxes[{index}]: expected (K, 4) boxes (x0, y0, x1, y1), got shape "
                          f"{tuple(arr.shape)}")
    if not np.isfinite(arr).all():
        raise MetricError(f"boxes[{index}]: non-finite coordinates")
    if (arr[:, 2] < arr[:, 0]).any() or (arr[:, 3] < arr[:, 1]).any():
        raise MetricError(f"boxes[{index}]: a box has x1 < x0 or y1 < y0: {arr.tolist()}")
    return arr.astype(np.int64)


def box_union_masks(boxes: Sequence[BoxesLike], size: tuple[int, int],
                    device: torch.device | str | None = None) -> Tensor:
    """Bool ``(B, H, W)``: the union of each image's inclusive boxes, clipped to ``size``."""
    arrays = [_as_box_array(image_boxes, n) for n, image_boxes in enumerate(boxes)]
    return torch.from_numpy(union_masks(arrays, size)).to(device)


def inside_outside_means(maps: Tensor, boxes: Sequence[BoxesLike]) -> tuple[Tensor, Tensor,
                                                                             Tensor]:
    """``(inside, outside, defined)`` per image for maps ``(B, H, W)`` (module docstring)."""
    if not isinstance(maps, Tensor) or maps.ndim != 3:
        raise MetricError(f"maps: expected a (B, H, W) tensor, got "
                          f"{tuple(maps.shape) if isinstance(maps, Tensor) else type(maps)}")
    if len(boxes) != maps.shape[0]:
        raise MetricError(f"boxes: expected one entry per map ({maps.shape[0]}), got {len(boxes)}")
    m = maps.float()
    if not torch.isfinite(m).all():
        raise MetricError("maps: non-finite values")
    union = box_union_masks(boxes, (m.shape[1], m.shape[2]), device=m.device).float()
    n_in = union.sum(dim=(1, 2))
    n_out = union[0].numel() - n_in
    defined = (n_in > 0) & (n_out > 0)
    s_in = (m * union).sum(dim=(1, 2))
    s_out = m.sum(dim=(1, 2)) - s_in
    nan = torch.full_like(s_in, math.nan)
    inside = torch.where(defined, s_in / n_in.clamp_min(1), nan)
    outside = torch.where(defined, s_out / n_out.clamp_min(1), nan)
    return inside, outside, defined


def inside_gt_share(maps: Tensor, boxes: Sequence[BoxesLike]) -> InsideGT:
    """Share of images (with defined contrast) whose mean map value inside the union of their GT
    boxes exceeds the mean outside it (module docstring).

    Example::

        res = inside_gt_share(maps, [[(10, 20, 100, 150)], [(0, 0, 50, 60), (70, 5, 90, 40)]])
        res.share  # e.g. 1.0
    """
    inside, outside, defined = inside_outside_means(maps, boxes)
    hits = defined & (inside > outside)
    num_defined, num_inside = int(defined.sum()), int(hits.sum())
    share = num_inside / num_defined if num_defined else math.nan
    return InsideGT(inside=inside, outside=outside, defined=defined, share=share,
                    num_defined=num_defined, num_inside=num_inside)
