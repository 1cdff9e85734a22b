"""Score maps -> normalized maps -> boxes and masks (wsolevaluation protocol, method-spec §1, §4).

The one maps pipeline is :func:`compute_maps` (images -> normalized maps on the device);
:func:`localize` adds boxes; :func:`scale_boxes` takes boxes to original pixels.
Post-processing raw method maps ``(B, h, w)`` directly::

    from wsol.localization import postprocess_maps, boxes_from_map
    maps = postprocess_maps(raw, size=(224, 224), normalization="minmax")   # on device
    boxes_per_threshold = boxes_from_map(maps[0], np.arange(0, 1, 0.01), multi_contour=True)
"""

# Loaded on first access, so that importing a submodule (e.g. the torch-free evaluator
# behind `wsol evaluate-maps`) does not import every sibling and torch with it.
from __future__ import annotations

from wsol.utils.lazy import lazy_exports

_LAZY = {
    "DEFAULT_THRESHOLD": "wsol.localization.pipeline",
    "LocalizationResult": "wsol.localization.pipeline",
    "MapBatch": "wsol.localization.pipeline",
    "NORMALIZATIONS": "wsol.localization.normalize",
    "ScoreMapError": "wsol.localization.boxes",
    "box_iou": "wsol.localization.boxes",
    "boxes_from_map": "wsol.localization.boxes",
    "boxes_from_maps": "wsol.localization.boxes",
    "cam_thresholds": "wsol.localization.boxes",
    "check_scoremaps": "wsol.localization.boxes",
    "compute_maps": "wsol.localization.pipeline",
    "localize": "wsol.localization.pipeline",
    "masks_from_map": "wsol.localization.masks",
    "normalize_maps": "wsol.localization.normalize",
    "postprocess_maps": "wsol.localization.normalize",
    "quantize_maps": "wsol.localization.boxes",
    "resize_boxes": "wsol.localization.boxes",
    "scale_boxes": "wsol.localization.geometry",
    "start_localize": "wsol.localization.pipeline",
    "start_maps": "wsol.localization.pipeline",
    "upsample_maps": "wsol.localization.normalize",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
