"""Data: wsolevaluation metadata, datasets, transforms, preparation and a synthetic dataset."""

# Loaded on first access, so that importing a submodule (e.g. the torch-free evaluator
# behind `wsol evaluate-maps`) does not import every sibling and torch with it.
from __future__ import annotations

from wsol.utils.lazy import lazy_exports

_LAZY = {
    "EvalTransform": "wsol.data.transforms",
    "IMAGENET_MEAN": "wsol.data.transforms",
    "IMAGENET_STD": "wsol.data.transforms",
    "ImageCheckReport": "wsol.data.datasets",
    "ImageLoadError": "wsol.data.transforms",
    "MAX_IMAGE_PIXELS": "wsol.data.transforms",
    "MaskAnnotation": "wsol.data.metadata",
    "Metadata": "wsol.data.metadata",
    "MetadataError": "wsol.data.metadata",
    "Normalize": "wsol.data.transforms",
    "TrainTransform": "wsol.data.transforms",
    "WSOLDataset": "wsol.data.datasets",
    "build_transform": "wsol.data.transforms",
    "check_images": "wsol.data.datasets",
    "check_labels": "wsol.data.metadata",
    "check_split_labels": "wsol.data.metadata",
    "load_image": "wsol.data.transforms",
    "max_image_pixels": "wsol.data.transforms",
    "read_metadata": "wsol.data.metadata",
    "to_tensor": "wsol.data.transforms",
    "write_metadata": "wsol.data.metadata",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
