"""Data: wsolevaluation metadata, datasets, transforms, preparation and a synthetic dataset."""

from wsol.data.datasets import ImageCheckReport, WSOLDataset, check_images
from wsol.data.metadata import (
    MaskAnnotation,
    Metadata,
    MetadataError,
    read_metadata,
    write_metadata,
)
from wsol.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    ImageLoadError,
    Normalize,
    TrainTransform,
    build_transform,
    load_image,
    to_tensor,
)

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "EvalTransform", "ImageCheckReport", "ImageLoadError",
    "MaskAnnotation", "Metadata", "MetadataError", "Normalize", "TrainTransform", "WSOLDataset",
    "build_transform", "check_images", "load_image", "read_metadata", "to_tensor",
    "write_metadata",
]
