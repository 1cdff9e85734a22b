"""A map-style dataset over one wsolevaluation split, and an image-root checker.

Items follow the contract in ``docs/DESIGN.md``::

    {"image": (3, H, W) float tensor (normalized by the transform),
     "label": int (0-based class), "image_id": str (path relative to image_root),
     "index": int (position in the split, = position in image_ids.txt)}

Ground-truth boxes / masks are not part of the items (they live at original resolution and
vary in number); evaluation code reads them from ``dataset.metadata`` by ``image_id`` or
``index``.

Example::

    ds = WSOLDataset("CUB_200_2011/images", "metadata/CUB/test",
                     transform=EvalTransform(mean=m.input_mean, std=m.input_std))
    loader = torch.utils.data.DataLoader(ds, batch_size=32, num_workers=4)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from wsol.data.metadata import Metadata, read_metadata
from wsol.data.transforms import ImageLoadError, load_image, to_tensor


def split_key(key: int | tuple[int, int]) -> tuple[int, int | None]:
    """A dataset key is an index or an ``(index, seed)`` pair (seeded augmentation)."""
    if isinstance(key, tuple):
        return int(key[0]), int(key[1])
    return key, None


def seeded(seed: int | None, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` with torch's RNG seeded by ``seed`` inside and restored afterwards (plain
    call when ``seed`` is None): a sample's augmentation depends on its seed alone."""
    if seed is None:
        return fn(*args)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return fn(*args)


class WSOLDataset(Dataset):
    """Images of one split, in the order of its ``image_ids.txt``.

    Args:
        image_root: directory the image ids are relative to.
        metadata: a :class:`Metadata` or the path of a split directory (read with
            :func:`read_metadata`).
        transform: ``PIL.Image -> (3, H, W) tensor`` (e.g. :class:`~wsol.data.transforms.
            TrainTransform`); ``None`` gives the un-resized image in [0, 1] (no normalization).
        num_classes: number of classes of the task; defaults to ``metadata.num_classes``
            (max label + 1), which undercounts when a split lacks the last classes.
    """

    def __init__(self, image_root: str | os.PathLike, metadata: Metadata | str | os.PathLike,
                 transform: Callable[[Image.Image], Tensor] | None = None,
                 num_classes: int | None = None) -> None:
        self.image_root = Path(image_root)
        if not self.image_root.is_dir():
            raise ValueError(f"image_root {self.image_root} is not a directory")
        self.metadata = metadata if isinstance(metadata, Metadata) else read_metadata(metadata)
        self.transform = transform
        if num_classes is None:
            num_classes = self.metadata.num_classes
        elif num_classes < self.metadata.num_classes:
            raise ValueError(f"num_classes={num_classes} but the metadata has label "
                             f"{self.metadata.num_classes - 1}")
        self.num_classes = num_classes
        self.image_ids = list(self.metadata.image_ids)

    def __len__(self) -> int:
        return len(self.image_ids)

    def image_path(self, index: int) -> Path:
        return self.image_root / self.image_ids[index]

    def label(self, index: int) -> int:
        return self.metadata.class_labels[self.image_ids[index]]

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """Item ``index``; a key ``(index, seed)`` (from the training loop's
        :class:`~wsol.engine.loop.SeededSampler`) draws the transform's randomness from
        ``seed`` alone, leaving the process's RNG untouched, so augmentation does not depend on
        which worker loads the sample or on what ran before."""
        index, seed = split_key(key)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a split of {len(self)} images")
        index = index % len(self)
        image_id = self.image_ids[index]
        img = load_image(self.image_root / image_id)
        image = to_tensor(img) if self.transform is None else seeded(seed, self.transform, img)
        return {"image": image, "label": self.metadata.class_labels[image_id],
                "image_id": image_id, "index": index}

    def __repr__(self) -> str:
        return (f"WSOLDataset({len(self)} images, {self.num_classes} classes, "
                f"root={str(self.image_root)!r}, transform={self.transform!r})")


@dataclass
class ImageCheckReport:
    """Result of :func:`check_images`.

    ``missing``: image ids whose file does not exist. ``corrupt``: ``(image_id, reason)`` for
    files that could not be decoded. ``size_mismatch``: ``(image_id, (W, H) in the metadata,
    (W, H) decoded)``. The last two are only filled when decoding.
    """

    checked: int = 0
    missing: list[str] = field(default_factory=list)
    corrupt: list[tuple[str, str]] = field(default_factory=list)
    size_mismatch: list[tuple[str, tuple[int, int], tuple[int, int]]] = field(
        default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.corrupt or self.size_mismatch)

    def summary(self, first: int = 5) -> str:
        """One line per problem kind, with the first ``first`` examples."""
        if self.ok:
            return f"all {self.checked} images present"
        parts = []
        for name, items in (("missing", self.missing),
                            ("corrupt", [f"{i} ({why})" for i, why in self.corrupt]),
                            ("size mismatch", [f"{i} (metadata {a[0]}x{a[1]}, file {b[0]}x{b[1]})"
                                               for i, a, b in self.size_mismatch])):
            if items:
                more = f", ... (+{len(items) - first} more)" if len(items) > first else ""
                parts.append(f"{len(items)} of {self.checked} {name}: "
                             f"{', '.join(items[:first])}{more}")
        return "; ".join(parts)


def check_images(image_root: str | os.PathLike, metadata: Metadata | str | os.PathLike,
                 decode: bool = True,
                 image_ids: Iterable[str] | None = None) -> ImageCheckReport:
    """Check that every image of ``metadata`` exists under ``image_root``.

    With ``decode=True`` each file is also fully decoded (slow for large splits: a truncated
    or corrupt file is reported in ``corrupt``) and its size compared with the metadata's
    ``image_sizes`` when present. ``image_ids`` restricts the check to a subset.
    """
    root = Path(image_root)
    meta = metadata if isinstance(metadata, Metadata) else read_metadata(metadata)
    report = ImageCheckReport()
    for image_id in (meta.image_ids if image_ids is None else image_ids):
        report.checked += 1
        path = root / image_id
        if not path.is_file():
            report.missing.append(image_id)
            continue
        if not decode:
            continue
        try:
            img = load_image(path)
        except ImageLoadError as exc:
            report.corrupt.append((image_id, str(exc).removeprefix(f"{path}: ")))
            continue
        expected = meta.image_sizes.get(image_id)
        if expected is not None and tuple(expected) != img.size:
            report.size_mismatch.append((image_id, tuple(expected), img.size))
    return report
