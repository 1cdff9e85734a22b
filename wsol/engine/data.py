"""Datasets of a run, from the ``data`` section of a resolved config.

A split name is a sub-directory of ``data.metadata`` (``train``, ``val``, ``test``); the prefix
``masks:`` (``masks:test``) reads the split from ``data.mask_metadata`` instead (for datasets that
have both a box and a mask version of a split, like the synthetic one). Mask paths are relative
to ``data.mask_root``; a split whose localization is masks gives PxAP / pIoU.
"""

from __future__ import annotations

import os
from pathlib import Path

from wsol.config import ConfigError
from wsol.data.datasets import WSOLDataset
from wsol.data.metadata import Metadata, read_metadata
from wsol.data.transforms import build_transform
from wsol.models.base import WSOLBackbone

MASK_PREFIX = "masks:"


def split_dir_name(split: str) -> str:
    """A file-system friendly name for a split (``masks:test`` -> ``masks-test``)."""
    return split.replace(":", "-")


def _metadata_for(config: dict, split: str) -> tuple[Metadata, str | None]:
    data = config["data"]
    if split.startswith(MASK_PREFIX):
        root, name, mask_root = data.get("mask_metadata"), split[len(MASK_PREFIX):], data.get("mask_root")
        if not root:
            raise ConfigError(f"split {split!r} needs data.mask_metadata")
        if not mask_root:
            raise ConfigError(f"split {split!r} needs data.mask_root")
    else:
        root, name, mask_root = data.get("metadata"), split, data.get("mask_root")
        if not root:
            raise ConfigError("data.metadata is not set (the metadata root with split dirs)")
    split_path = Path(root) / name
    if not split_path.is_dir():
        raise ConfigError(f"split {split!r}: metadata directory {split_path} does not exist")
    return read_metadata(split_path, mask_root=mask_root), mask_root


def build_split(config: dict, split: str, *, train: bool, backbone: WSOLBackbone | None,
                metadata_only: bool = False, metadata: Metadata | None = None):
    """``(dataset, metadata, mask_root)`` of a split, or its metadata alone.

    The transform normalizes with the backbone's ``input_mean``/``input_std``. ``metadata``
    reuses a split already read (``metadata_only=True`` first, to size the classifier).
    """
    if metadata is None:
        metadata, mask_root = _metadata_for(config, split)
    else:
        mask_root = config["data"].get("mask_root")
    if metadata_only:
        return metadata
    data = config["data"]
    if not data.get("root"):
        raise ConfigError("data.root is not set (the image root)")
    mean = backbone.input_mean if backbone is not None else (0.485, 0.456, 0.406)
    std = backbone.input_std if backbone is not None else (0.229, 0.224, 0.225)
    size = data["crop_size"] if train else data["image_size"]
    transform = build_transform(train, mean=mean, std=std, resize_size=data["resize_size"],
                                crop_size=size)
    dataset = WSOLDataset(data["root"], metadata, transform)
    return dataset, metadata, mask_root


def read_class_names(path: str | os.PathLike | None) -> list[str] | None:
    """One class name per line, or ``None`` when no file is configured."""
    if not path:
        return None
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"data.class_names: {path} does not exist")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]
