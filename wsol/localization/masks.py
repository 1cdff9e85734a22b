"""Score map -> binary masks at each threshold."""

from __future__ import annotations

import numpy as np
import torch

from wsol.localization.boxes import (
    ScoreMap,
    as_thresholds,
    check_scoremaps,
    quantize_maps,
    threshold_levels,
)


def masks_from_map(scoremap: ScoreMap, thresholds: np.ndarray | list[float],
                   quantized: bool = False) -> np.ndarray | torch.Tensor:
    """Binary masks ``(T, H, W)`` (bool) of an ``(H, W)`` map in [0, 1], one per threshold ``t``.

    - ``quantized=False`` (PxAP's convention, :mod:`wsol.metrics.masks`): ``s >= t``, with the
      score promoted to float64; the mask at ``t`` holds exactly the pixels PxAP counts as
      predicted positive at that threshold. Tensors stay on their device.
    - ``quantized=True`` (the box protocol's foreground, :mod:`wsol.localization.boxes`):
      ``uint8(255 s) > floor(t * max uint8(255 s))``; returns a NumPy array.
    """
    if scoremap.ndim != 2:
        raise ValueError(
            f"masks_from_map expects one (H, W) map, got shape {tuple(scoremap.shape)}")
    t = as_thresholds(thresholds)
    if quantized:
        img = quantize_maps(scoremap)
        levels = threshold_levels(t, int(img.max()))
        return img[None] > levels[:, None, None]
    check_scoremaps(scoremap)
    if isinstance(scoremap, torch.Tensor):
        edges = torch.from_numpy(t).to(scoremap.device)
        return scoremap.detach().to(torch.float64)[None] >= edges[:, None, None]
    return np.asarray(scoremap, dtype=np.float64)[None] >= t[:, None, None]
