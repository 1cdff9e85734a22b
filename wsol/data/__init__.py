"""Data: wsolevaluation metadata, datasets, transforms, preparation and a synthetic dataset."""

from wsol.data.datasets import ImageCheckReport, WSOLDataset, check_images
from wsol.data.metadata import (
    MaskAnnotation,
    Metadata,
    MetadataError,
    check_labels,
    check_split_labels,
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
    MAX_IMAGE_PIXELS,
    build_transform,
    load_image,
    max_image_pixels,
    to_tensor,
)

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "MAX_IMAGE_PIXELS", "EvalTransform", "ImageCheckReport",
    "ImageLoadError",
    "MaskAnnotation", "Metadata", "MetadataError", "Normalize", "TrainTransform", "WSOLDataset",
    "build_transform", "check_images", "check_labels", "check_split_labels", "load_image",
    "max_image_pixels", "read_metadata", "to_tensor", "write_metadata",
]
