"""Score-map post-processing: bicubic upsampling and per-image normalization (method-spec §1).

Every function takes a batch ``(B, H, W)`` or a single map ``(H, W)``, as a torch tensor (on
any device; the result stays there) or a NumPy array, and returns the same kind and shape.
Normalization is per image:

- ``minmax`` (wsolevaluation's ``normalize_scoremap``, the default):
  ``s' = (s - min s) / (max s - min s)``; a map with a NaN anywhere or with ``max == min``
  becomes all zeros.
- ``max``: ``s' = max(0, s) / max_x max(0, s)``.
- ``pas`` (percentile as standard): ``s <- s - min s``; ``p = sort(s)[floor(0.9 N)]``;
  ``s' = min(1, s / p)`` (``percentile`` keyword, default 0.9). When ``p == 0``,
  ``s' = 1[s > 0]`` (the limit of ``min(1, s / p)``).
- ``ivr`` (GenDisc/IVR): ``q = sort(s)[floor(p N)]`` (``percentile`` keyword, default 0.45);
  ``s <- max(0, s - q)``; ``s' = s / max s``.

For ``max``, ``pas`` and ``ivr`` a map with a NaN, or whose denominator is 0, becomes zeros too.
``sort(s)[k]`` is the (k+1)-th smallest of the ``N = H W`` scores, ``k`` clipped to ``N - 1``.

Example::

    >>> maps = postprocess_maps(method.localization_maps(out, classes), size=(224, 224))
    >>> maps.shape, float(maps.min()), float(maps.max())
    (torch.Size([B, 224, 224]), 0.0, 1.0)
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from wsol.utils.maps import minmax_per_image

Maps = TypeVar("Maps", torch.Tensor, np.ndarray)

NORMALIZATIONS = ("minmax", "max", "pas", "ivr")
_DEFAULT_PERCENTILE = {"pas": 0.9, "ivr": 0.45}


def _as_batch(maps: torch.Tensor, name: str) -> tuple[torch.Tensor, bool]:
    if maps.ndim == 2:
        return maps.unsqueeze(0), True
    if maps.ndim != 3:
        raise ValueError(
            f"{name}: expected maps of shape (B, H, W) or (H, W), got {tuple(maps.shape)}")
    return maps, False


def normalize_maps(maps: Maps, method: str = "minmax", *, percentile: float | None = None) -> Maps:
    """Normalize each map to [0, 1] with ``method`` (see the module docstring for the equations).

    Args:
        maps: ``(B, H, W)`` or ``(H, W)`` tensor or array; integer input is cast to float.
        method: one of ``minmax``, ``max``, ``pas``, ``ivr``.
        percentile: the percentile of ``pas`` (0.9) or ``ivr`` (0.45); not used otherwise.
    """
    if method not in NORMALIZATIONS:
        raise ValueError(f"normalize_maps: method must be one of {NORMALIZATIONS}, got {method!r}")
    if percentile is not None and method not in _DEFAULT_PERCENTILE:
        raise ValueError(f"normalize_maps: percentile only applies to pas and ivr, not {method!r}")
    if percentile is not None and not 0.0 <= percentile <= 1.0:
        raise ValueError(f"normalize_maps: percentile must be in [0, 1], got {percentile}")
    if isinstance(maps, np.ndarray):
        floating = np.issubdtype(maps.dtype, np.floating)
        x = torch.from_numpy(maps if floating else maps.astype(np.float64))
        return normalize_maps(x, method, percentile=percentile).numpy()
    if not isinstance(maps, torch.Tensor):
        raise TypeError("normalize_maps: expected a torch.Tensor or numpy.ndarray,"
                        f" got {type(maps).__name__}")
    x, single = _as_batch(maps, "normalize_maps")
    if not x.is_floating_point():
        x = x.float()
    flat = x.reshape(x.shape[0], -1)
    bad = torch.isnan(flat).any(dim=1)
    if method == "minmax":
        out = minmax_per_image(flat)
    elif method == "max":
        pos = flat.clamp_min(0)
        hi = pos.amax(dim=1, keepdim=True)
        out = pos / hi
        bad |= (hi <= 0).squeeze(1)
    elif method == "pas":
        shifted = flat - flat.amin(dim=1, keepdim=True)
        p = _kth_smallest(shifted, _DEFAULT_PERCENTILE["pas"] if percentile is None else percentile)
        out = torch.where(p > 0, torch.clamp(shifted / p, max=1.0), (shifted > 0).to(flat.dtype))
    else:  # ivr
        q = _kth_smallest(flat, _DEFAULT_PERCENTILE["ivr"] if percentile is None else percentile)
        shifted = (flat - q).clamp_min(0)
        hi = shifted.amax(dim=1, keepdim=True)
        out = shifted / hi
        bad |= (hi <= 0).squeeze(1)
    out = torch.where(bad.unsqueeze(1), torch.zeros_like(out), out).reshape(x.shape)
    return out[0] if single else out


def _kth_smallest(flat: torch.Tensor, fraction: float) -> torch.Tensor:
    """``sort(s)[floor(fraction * N)]`` per row, as a ``(B, 1)`` column."""
    n = flat.shape[1]
    k = min(int(fraction * n), n - 1)
    # NaN rows are zeroed by the caller; keep kthvalue away from them.
    safe = torch.nan_to_num(flat, nan=0.0)
    return torch.kthvalue(safe, k + 1, dim=1, keepdim=True).values


def upsample_maps(maps: Maps, size: int | tuple[int, int] = (224, 224)) -> Maps:
    """Bicubic upsampling of ``(B, h, w)`` maps to ``size = (H, W)``.

    ``torch.nn.functional.interpolate(mode="bicubic", align_corners=False)``: the cubic
    convolution kernel with a = -0.75 and half-pixel centres, the same as cv2's
    ``INTER_CUBIC`` used by wsolevaluation (measured difference below 1e-6 for unit-variance
    maps; not bit-identical).
    """
    if isinstance(maps, np.ndarray):
        return upsample_maps(torch.from_numpy(maps), size).numpy()
    if not isinstance(maps, torch.Tensor):
        raise TypeError("upsample_maps: expected a torch.Tensor or numpy.ndarray,"
                        f" got {type(maps).__name__}")
    size = (size, size) if isinstance(size, int) else tuple(size)
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"upsample_maps: size must be (H, W) with positive entries, got {size}")
    x, single = _as_batch(maps, "upsample_maps")
    if not x.is_floating_point():
        x = x.float()
    if tuple(x.shape[-2:]) != size:
        x = F.interpolate(x.unsqueeze(1), size=size, mode="bicubic", align_corners=False).squeeze(1)
    return x[0] if single else x


def postprocess_maps(raw: Maps, size: int | tuple[int, int] = (224, 224),
                     normalization: str = "minmax", *, percentile: float | None = None) -> Maps:
    """Raw method maps ``(B, h, w)`` -> bicubic upsample to ``size`` -> per-image normalization."""
    return normalize_maps(upsample_maps(raw, size), normalization, percentile=percentile)
