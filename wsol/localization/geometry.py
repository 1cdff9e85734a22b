"""The one rule for boxes back to original image pixels (sizes are ``(H, W)`` everywhere).

Used by ``wsol localize``, :class:`wsol.Localizer`, the regressor's pseudo boxes and anything
else that reports a box found on a resized image in the original image's pixels. (The
protocol's own resize of GT boxes *to* the evaluation size, ``int(x * S / W)``, is
:func:`wsol.localization.boxes.resize_boxes`: a different direction with its own rule.)
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["pseudo_boxes_from_maps", "scale_boxes"]


def scale_boxes(boxes: Tensor, from_size: tuple[int, int], to_sizes: Tensor) -> Tensor:
    """Boxes in a resized ``from_size = (H, W)`` image back to original pixels.

    The box is read as inclusive pixels ``x0..x1`` (as the protocol's IoU reads it). Input
    pixel ``u`` covers the original interval ``[u r, (u + 1) r)`` with ``r = W0 / W``
    (likewise for rows), so the box covers ``[x0 r, (x1 + 1) r)`` and the original pixels it
    touches are ``floor(x0 r) .. ceil((x1 + 1) r) - 1`` (clipped to the image). A protocol box
    from :func:`localize` ends one input pixel past its foreground (``x + w``), so in original
    pixels it reaches up to ``r`` pixels past the foreground on the right and bottom.

    Args:
        boxes: ``(N, 4)`` ``(x0, y0, x1, y1)``.
        from_size: the ``(H, W)`` the boxes are in.
        to_sizes: ``(N, 2)`` original ``(H0, W0)`` of each image.
    Returns: ``(N, 4)`` int64 boxes in original pixels.
    """
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4), got {tuple(boxes.shape)}")
    to_sizes = torch.as_tensor(to_sizes, device=boxes.device)
    if to_sizes.shape != (boxes.shape[0], 2):
        raise ValueError(f"to_sizes must be ({boxes.shape[0]}, 2), got {tuple(to_sizes.shape)}")
    h, w = from_size
    b = boxes.to(torch.float64)
    sizes = to_sizes.to(torch.float64)
    ry, rx = sizes[:, 0] / h, sizes[:, 1] / w
    x0 = torch.floor(b[:, 0] * rx)
    y0 = torch.floor(b[:, 1] * ry)
    x1 = torch.ceil((b[:, 2] + 1) * rx) - 1
    y1 = torch.ceil((b[:, 3] + 1) * ry) - 1
    hi_x, hi_y = sizes[:, 1] - 1, sizes[:, 0] - 1
    out = torch.stack([x0.clamp(min=0).minimum(hi_x), y0.clamp(min=0).minimum(hi_y),
                       x1.clamp(min=0).minimum(hi_x), y1.clamp(min=0).minimum(hi_y)], dim=1)
    return out.round().long()


def pseudo_boxes_from_maps(maps: Tensor, threshold: float, original_sizes: Tensor) -> Tensor:
    """Pseudo ground-truth boxes for the box regressor (CREAM + regressor, the PSOL recipe), in
    original image pixels.

    Each ``(H, W)`` map (upsampled to the pseudo-box resolution, 448 in the paper, and
    normalized to [0, 1]) gives the wsolevaluation box of its *largest* contour at
    ``threshold`` (:func:`wsol.localization.boxes.boxes_from_maps`, ``(0, 0, 0, 0)`` for a
    blank map), taken to the original ``(H0, W0)`` with the one rule of :func:`scale_boxes`
    (the same as ``wsol localize``).
    """
    from wsol.localization.boxes import boxes_from_maps

    if maps.ndim != 3:
        raise ValueError(f"maps must be (B, H, W), got {tuple(maps.shape)}")
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    sizes = torch.as_tensor(original_sizes).long().cpu()
    if sizes.shape != (maps.shape[0], 2) or (sizes <= 0).any():
        raise ValueError(f"original_sizes must be ({maps.shape[0]}, 2) positive (H, W) pairs, "
                         f"got shape {tuple(sizes.shape)}")
    boxes = torch.from_numpy(boxes_from_maps(maps.detach().float(), threshold))
    return scale_boxes(boxes, tuple(maps.shape[1:]), sizes)
