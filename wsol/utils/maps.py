"""The one per-image min-max normalization every layer of wsol uses (method-spec §1).

``minmax_per_image(M) = (M - min M) / (max M - min M)`` over all but the batch dimension. As
in wsolevaluation's ``normalize_scoremap``, an image whose map holds a NaN anywhere or is
constant (``max == min``, or a non-finite span) becomes all zeros. It lives at the bottom of
the package so that the methods (CREAM's Eq.3 mask and Eq.12 fusion, B-CAM's masks) and the
localization pipeline share it without importing upwards.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["minmax_per_image"]


def minmax_per_image(maps: Tensor) -> Tensor:
    """Per-image min-max of a batch-first tensor ``(B, ...)``; float result of the same shape."""
    if maps.ndim < 2:
        raise ValueError(f"maps must be batch-first with >= 2 dims, got shape {tuple(maps.shape)}")
    flat = maps.reshape(maps.shape[0], -1)
    if not flat.is_floating_point():
        flat = flat.float()
    lo = flat.amin(dim=1, keepdim=True)
    hi = flat.amax(dim=1, keepdim=True)
    span = hi - lo
    bad = torch.isnan(flat).any(dim=1, keepdim=True) | ~(span > 0) | ~torch.isfinite(span)
    out = (flat - lo) / torch.where(bad, torch.ones_like(span), span)
    return out.masked_fill(bad, 0.0).reshape(maps.shape)
