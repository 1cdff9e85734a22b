"""Score maps -> normalized maps -> boxes and masks (wsolevaluation protocol, method-spec §1, §4).

The one maps pipeline is :func:`compute_maps` (images -> normalized maps on the device);
:func:`localize` adds boxes; :func:`scale_boxes` takes boxes to original pixels.
Post-processing raw method maps ``(B, h, w)`` directly::

    from wsol.localization import postprocess_maps, boxes_from_map
    maps = postprocess_maps(raw, size=(224, 224), normalization="minmax")   # on device
    boxes_per_threshold = boxes_from_map(maps[0], np.arange(0, 1, 0.01), multi_contour=True)
"""

from wsol.localization.boxes import (
    ScoreMapError,
    box_iou,
    boxes_from_map,
    boxes_from_maps,
    cam_thresholds,
    check_scoremaps,
    quantize_maps,
    resize_boxes,
)
from wsol.localization.geometry import scale_boxes
from wsol.localization.masks import masks_from_map
from wsol.localization.normalize import (
    NORMALIZATIONS,
    normalize_maps,
    postprocess_maps,
    upsample_maps,
)
from wsol.localization.pipeline import (
    DEFAULT_THRESHOLD,
    LocalizationResult,
    MapBatch,
    compute_maps,
    localize,
)

__all__ = [
    "DEFAULT_THRESHOLD",
    "LocalizationResult",
    "MapBatch",
    "compute_maps",
    "localize",
    "scale_boxes",
    "NORMALIZATIONS",
    "ScoreMapError",
    "box_iou",
    "boxes_from_map",
    "boxes_from_maps",
    "cam_thresholds",
    "check_scoremaps",
    "masks_from_map",
    "normalize_maps",
    "postprocess_maps",
    "quantize_maps",
    "resize_boxes",
    "upsample_maps",
]
