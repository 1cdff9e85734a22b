"""Overlays: a score map blended over its image in the jet colormap, boxes and a text label.

Images are ``(H, W, 3)`` uint8 RGB numpy arrays, maps ``(h, w)`` float arrays in [0, 1] (a map
of another size is resized to the image bilinearly). The blend is

    out = (1 - alpha) * image + alpha * jet(map)

with ``jet`` OpenCV's jet colormap on ``round(255 * map)`` (0 -> dark blue, 1 -> dark red), the
usual CAM visualization. Boxes are ``(x0, y0, x1, y1)`` with inclusive pixel coordinates, as in
the wsolevaluation metadata.

Example::

    vis = render_overlay(image, score_map, boxes=[pred_box], label="albatross 0.93",
                         gt_boxes=gt_list)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import cv2
import numpy as np

#: Colors (RGB): predicted boxes green, ground-truth boxes red (as in the CAM/CREAM figures).
PRED_COLOR: tuple[int, int, int] = (0, 255, 0)
GT_COLOR: tuple[int, int, int] = (255, 0, 0)


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
            or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"image must be an (H, W, 3) uint8 RGB array, got shape {shape} {dtype}")
    return image


def _check_map(score_map: np.ndarray) -> np.ndarray:
    score_map = np.asarray(score_map, dtype=np.float32)
    if score_map.ndim != 2 or score_map.size == 0:
        raise ValueError(f"score map must be a non-empty (H, W) array, got shape {score_map.shape}")
    if not np.isfinite(score_map).all():
        raise ValueError("score map contains NaN or infinite values")
    return score_map


def _thickness(image: np.ndarray) -> int:
    return max(1, round(min(image.shape[:2]) / 160))


def colorize_map(score_map: np.ndarray) -> np.ndarray:
    """``(H, W)`` scores in [0, 1] (clipped) -> ``(H, W, 3)`` uint8 RGB in the jet colormap."""
    score_map = _check_map(score_map)
    levels = np.rint(np.clip(score_map, 0.0, 1.0) * 255.0).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def overlay_map(image: np.ndarray, score_map: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``(1 - alpha) * image + alpha * jet(map)``; the map is resized to the image (bilinear)."""
    image = _check_image(image)
    score_map = _check_map(score_map)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    h, w = image.shape[:2]
    if score_map.shape != (h, w):
        score_map = cv2.resize(score_map, (w, h), interpolation=cv2.INTER_LINEAR)
    heat = colorize_map(score_map)
    return cv2.addWeighted(image, 1.0 - alpha, heat, alpha, 0.0)


def _box_ints(box: Sequence[float]) -> tuple[int, int, int, int]:
    values = [float(v) for v in box]
    if len(values) != 4:
        raise ValueError(f"a box needs 4 values (x0, y0, x1, y1), got {list(box)!r}")
    x0, y0, x1, y1 = (round(v) for v in values)
    if x1 < x0 or y1 < y0:
        raise ValueError(f"box {tuple(values)} has x1 < x0 or y1 < y0")
    return x0, y0, x1, y1


def draw_box(image: np.ndarray, box: Sequence[float], color: tuple[int, int, int] = PRED_COLOR,
             thickness: int | None = None) -> np.ndarray:
    """Draw the inclusive box ``(x0, y0, x1, y1)`` on ``image`` in place; returns ``image``."""
    _check_image(image)
    x0, y0, x1, y1 = _box_ints(box)
    cv2.rectangle(image, (x0, y0), (x1, y1), color, thickness or _thickness(image))
    return image


def draw_label(image: np.ndarray, text: str, anchor: tuple[int, int] = (0, 0),
               color: tuple[int, int, int] = PRED_COLOR) -> np.ndarray:
    """Write ``text`` in black on a ``color`` background just above the point ``anchor`` (a
    box's top-left corner), or just below it when there is no room above; the label is kept
    inside the image. In place, returns ``image``.

    OpenCV's Hershey font is ASCII only: other characters are written as ``?``.
    """
    _check_image(image)
    text = text.encode("ascii", "replace").decode("ascii")
    h, w = image.shape[:2]
    scale = float(np.clip(min(h, w) / 500.0, 0.35, 1.5))
    thick = max(1, round(scale * 1.5))
    (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    pad = max(1, round(3 * scale))
    box_w, box_h = tw + 2 * pad, th + baseline + 2 * pad
    x = int(np.clip(anchor[0], 0, max(0, w - box_w)))
    y = anchor[1] - box_h if anchor[1] - box_h >= 0 else anchor[1]
    y = int(np.clip(y, 0, max(0, h - box_h)))
    cv2.rectangle(image, (x, y), (x + box_w - 1, y + box_h - 1), color, -1)
    cv2.putText(image, text, (x + pad, y + pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0),
                thick, cv2.LINE_AA)
    return image


def render_overlay(image: np.ndarray, score_map: np.ndarray | None = None, *,
                   boxes: Iterable[Sequence[float]] = (),
                   gt_boxes: Iterable[Sequence[float]] = (), label: str | None = None,
                   alpha: float = 0.5) -> np.ndarray:
    """A new image: the map blended over ``image`` (skipped when ``score_map`` is None), GT boxes
    in red, predicted boxes in green, and ``label`` at the first predicted box's top-left corner
    (the image's top-left corner without a box)."""
    image = _check_image(image)
    out = overlay_map(image, score_map, alpha) if score_map is not None else image.copy()
    for box in gt_boxes:
        draw_box(out, box, GT_COLOR)
    anchor = (0, 0)
    for k, box in enumerate(boxes):
        draw_box(out, box, PRED_COLOR)
        if k == 0:
            anchor = _box_ints(box)[:2]
    if label:
        draw_label(out, label, anchor, PRED_COLOR)
    return out
