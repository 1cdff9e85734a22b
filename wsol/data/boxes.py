"""Datasets of box-regression splits: images with their box target, and several views of one
image (the classifier and the regressor may want different sizes and normalizations).

Boxes follow :mod:`wsol.methods.regressor`'s conventions: pixel boxes ``(x0, y0, x1, y1)``
inclusive, normalized boxes ``(x, y, w, h)`` with ``x = x0 / W`` and ``w = (x1 + 1 - x0) / W``.
"""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from wsol.data.datasets import seeded, split_key
from wsol.data.metadata import Metadata
from wsol.data.transforms import load_image
from wsol.errors import MetadataError

__all__ = ["BoxTargetDataset", "TwoViewDataset", "xywh_to_xyxy", "xyxy_to_xywh"]


def _sizes(sizes: Tensor | Sequence[int], n: int, device: torch.device) -> Tensor:
    """``(n, 2)`` float64 ``(H, W)`` from one ``(H, W)`` pair or one pair per box."""
    s = torch.as_tensor(sizes, dtype=torch.float64, device=device)
    if s.shape == (2,):
        s = s.expand(n, 2)
    if s.shape != (n, 2):
        raise ValueError(f"sizes must be (H, W) or ({n}, 2), got shape {tuple(s.shape)}")
    if (s <= 0).any():
        raise ValueError("sizes must be positive")
    return s


def xyxy_to_xywh(boxes: Tensor, sizes: Tensor | Sequence[int]) -> Tensor:
    """Inclusive pixel boxes ``(N, 4)`` -> normalized ``(x, y, w, h)``:
    ``x = x0 / W``, ``y = y0 / H``, ``w = (x1 + 1 - x0) / W``, ``h = (y1 + 1 - y0) / H``.

    ``sizes``: ``(H, W)`` of the image(s), one pair or ``(N, 2)``. Returns float32.
    """
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4), got {tuple(boxes.shape)}")
    b = boxes.to(torch.float64)
    if ((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])).any():
        raise ValueError("boxes must satisfy x1 >= x0 and y1 >= y0")
    s = _sizes(sizes, b.shape[0], b.device)
    h, w = s[:, 0], s[:, 1]
    out = torch.stack([b[:, 0] / w, b[:, 1] / h, (b[:, 2] + 1 - b[:, 0]) / w,
                       (b[:, 3] + 1 - b[:, 1]) / h], dim=1)
    return out.float()


def xywh_to_xyxy(boxes: Tensor, sizes: Tensor | Sequence[int]) -> Tensor:
    """Normalized ``(x, y, w, h)`` ``(N, 4)`` -> inclusive int64 pixel boxes.

    The continuous extent ``[x W, (x + w) W)`` is rounded to the nearest pixel edges:
    ``x0 = round(x W)``, ``x1 = round((x + w) W) - 1``, then clipped to the image with
    ``x1 >= x0`` (a degenerate prediction gives a one-pixel box). Exact inverse of
    :func:`xyxy_to_xywh` on pixel boxes.
    """
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4), got {tuple(boxes.shape)}")
    b = boxes.to(torch.float64)
    s = _sizes(sizes, b.shape[0], b.device)
    h, w = s[:, 0], s[:, 1]
    x0 = torch.round(b[:, 0] * w).clamp(min=0).minimum(w - 1)
    y0 = torch.round(b[:, 1] * h).clamp(min=0).minimum(h - 1)
    x1 = (torch.round((b[:, 0] + b[:, 2]) * w) - 1).minimum(w - 1).maximum(x0)
    y1 = (torch.round((b[:, 1] + b[:, 3]) * h) - 1).minimum(h - 1).maximum(y0)
    return torch.stack([x0, y0, x1, y1], dim=1).long()


class BoxTargetDataset(Dataset):
    """Images of a box split with their first box as the regression target.

    Item: ``{"image": (3, S, S) tensor, "box": (4,) float32 normalized (x, y, w, h),
    "image_id", "index"}``; ``transform(PIL image, normalized box) -> (tensor, box)``
    (:class:`BoxTrainTransform` / :class:`~wsol.methods.regressor.BoxEvalTransform`). The
    metadata box ``(x0, y0, x1, y1)`` becomes ``(x0 / W, y0 / H, (x1 + 1 - x0) / W,
    (y1 + 1 - y0) / H)`` with the decoded image's ``(W, H)``, which must match image_sizes.txt.
    """

    def __init__(self, image_root: str | os.PathLike, metadata: Metadata, transform) -> None:
        self.image_root = Path(image_root)
        if not self.image_root.is_dir():
            raise MetadataError(f"image root {self.image_root} is not a directory")
        if metadata.boxes is None:
            where = f" ({metadata.split_dir})" if metadata.split_dir else ""
            raise MetadataError(f"metadata{where} has no box localization.txt: nothing to regress")
        no_box = [i for i in metadata.image_ids if not metadata.boxes.get(i)]
        if no_box:
            raise MetadataError(f"{metadata.split_dir or 'metadata'}: image {no_box[0]!r} has no box "
                             f"({len(no_box)} image(s) without a box)")
        self.metadata = metadata
        self.image_ids = list(metadata.image_ids)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = split_key(key)
        image_id = self.image_ids[index]
        img = load_image(self.image_root / image_id)
        expected = self.metadata.image_sizes.get(image_id)
        if expected is not None and tuple(expected) != img.size:
            raise MetadataError(f"{self.image_root / image_id}: decoded size {img.size[0]}x"
                             f"{img.size[1]} differs from image_sizes.txt ({expected[0]}x"
                             f"{expected[1]})")
        box = torch.tensor([self.metadata.boxes[image_id][0]])
        target = xyxy_to_xywh(box, (img.size[1], img.size[0]))[0]
        image, target = seeded(seed, self.transform, img, target)
        return {"image": image, "box": target, "image_id": image_id, "index": index}


class TwoViewDataset(Dataset):
    """Each image of a split through several transforms (one decode): the classifier and the
    regressor may expect different sizes and input normalizations.

    Item: ``{name: tensor for each transform, "label", "image_id", "index"}``.
    """

    def __init__(self, image_root: str | os.PathLike, metadata: Metadata,
                 transforms: dict[str, Any]) -> None:
        self.image_root = Path(image_root)
        if not self.image_root.is_dir():
            raise MetadataError(f"image root {self.image_root} is not a directory")
        self.metadata = metadata
        self.image_ids = list(metadata.image_ids)
        self.transforms = dict(transforms)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.image_ids[index]
        img = load_image(self.image_root / image_id)
        item: dict[str, Any] = {name: tf(img) for name, tf in self.transforms.items()}
        item.update(label=self.metadata.class_labels[image_id], image_id=image_id, index=index)
        return item
