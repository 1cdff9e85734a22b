"""Hide-and-Seek (Singh & Lee, ICCV 2017) as in wsolevaluation (method-spec §6).

Training only, on the input batch before the forward (:meth:`HaS.prepare_batch`): the image is
cut into a grid of ``grid_size x grid_size`` **pixel** patches (the last row/column of patches
is clipped at the border) and every patch of every image is hidden, i.e. set to 0 in the
normalized input (the dataset mean), independently with probability ``drop_rate``. The network,
loss (cross-entropy) and map (Eq.1 CAM on F) are CAM's; evaluation is a plain forward.

Defaults are wsolevaluation's ``config.py``: ``has_grid_size=4``, ``has_drop_rate=0.5``. The
reference loops over patches with Python's ``random``; here one Bernoulli draw per patch from
torch's global RNG (seeded per epoch by the engine), vectorized over the batch. The reference
clips the patches' column end with the image height (no effect on the square crops used).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from wsol.methods.cam import CAM
from wsol.methods.registry import register_method
from wsol.models.base import WSOLBackbone


def hide_patches(images: Tensor, grid_size: int, drop_rate: float,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Zero each ``grid_size``-pixel patch of each image with probability ``drop_rate``.

    Returns ``(hidden images, keep mask)``; the mask is ``(B, 1, H, W)`` float (1 = visible).
    ``grid_size = 0`` hides nothing.
    """
    bsz, _, height, width = images.shape
    if grid_size == 0 or drop_rate == 0:
        return images, images.new_ones(bsz, 1, height, width)
    rows, cols = math.ceil(height / grid_size), math.ceil(width / grid_size)
    draws = torch.rand(bsz, 1, rows, cols, generator=generator, device=images.device)
    keep = (draws > drop_rate).to(images.dtype)          # hidden with probability drop_rate
    keep = keep.repeat_interleave(grid_size, dim=2).repeat_interleave(grid_size, dim=3)
    keep = keep[:, :, :height, :width]
    return images * keep, keep


@register_method
class HaS(CAM):
    """CAM trained on images with randomly hidden patches.

    Args:
        backbone: any CAM backbone.
        grid_size: patch side in pixels (wsolevaluation default 4; 0 disables hiding).
        drop_rate: probability of hiding each patch (default 0.5).
    """

    name = "has"

    def __init__(self, backbone: WSOLBackbone, grid_size: int = 4, drop_rate: float = 0.5) -> None:
        super().__init__(backbone)
        if isinstance(grid_size, bool) or int(grid_size) != grid_size or grid_size < 0:
            raise ValueError(f"has: grid_size must be an integer >= 0 (pixels), got {grid_size!r}")
        if not 0.0 <= drop_rate <= 1.0:
            raise ValueError(f"has: drop_rate must be in [0, 1], got {drop_rate}")
        self.grid_size = int(grid_size)
        self.drop_rate = float(drop_rate)

    def prepare_batch(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Training: hide patches (see the module docstring); eval mode: unchanged."""
        if not self.training:
            return images, labels
        hidden, _ = hide_patches(images, self.grid_size, self.drop_rate)
        return hidden, labels

    def extra_repr(self) -> str:
        return f"method={self.name}, grid_size={self.grid_size}, drop_rate={self.drop_rate}"
