"""Overlays: a score map blended over its image, boxes and a text label.

Images are ``(H, W, 3)`` uint8 RGB numpy arrays, maps ``(h, w)`` float arrays in [0, 1] (a map
of another size is resized to the image bilinearly). The blend is, per pixel ``i``,

    out_i = (1 - a_i) * image_i + a_i * C(m_i),   a_i = alpha * m_i   (weighting="map")
                                                  a_i = alpha         (weighting="uniform")

with ``C`` a colormap on ``round(255 * m)``: by default OpenCV's *turbo* (a perceptually
smoother jet: dark blue -> green -> yellow -> dark red). Weighting by the map keeps the image
visible where the map is low, so the object and the activation are both readable; ``uniform``
with ``colormap="jet"`` is the classic CAM figure. Boxes are ``(x0, y0, x1, y1)`` with
inclusive pixel coordinates, as in the wsolevaluation metadata. Labels are drawn with a
TrueType font (DejaVu Sans, shipped with matplotlib: accents and non-Latin names survive) whose
size follows the image, ``max(11, 0.045 min(H, W))`` pixels, shrunk to fit the image's width.

Example::

    vis = render_overlay(image, score_map, boxes=[pred_box], label="albatross 0.93",
                         gt_boxes=gt_list)
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from pathlib import Path

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


#: Colormaps by name (OpenCV's); ``turbo`` is the default.
COLORMAPS: dict[str, int] = {"turbo": cv2.COLORMAP_TURBO, "jet": cv2.COLORMAP_JET,
                             "inferno": cv2.COLORMAP_INFERNO, "viridis": cv2.COLORMAP_VIRIDIS,
                             "magma": cv2.COLORMAP_MAGMA}
WEIGHTINGS = ("map", "uniform")


def colorize_map(score_map: np.ndarray, colormap: str = "turbo") -> np.ndarray:
    """``(H, W)`` scores in [0, 1] (clipped) -> ``(H, W, 3)`` uint8 RGB in ``colormap``
    (a name of :data:`COLORMAPS`)."""
    score_map = _check_map(score_map)
    if colormap not in COLORMAPS:
        raise ValueError(f"colormap must be one of {sorted(COLORMAPS)}, got {colormap!r}")
    levels = np.rint(np.clip(score_map, 0.0, 1.0) * 255.0).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(levels, COLORMAPS[colormap]), cv2.COLOR_BGR2RGB)


def overlay_map(image: np.ndarray, score_map: np.ndarray, alpha: float = 0.7, *,
                colormap: str = "turbo", weighting: str = "map") -> np.ndarray:
    """The blend of the module docstring: ``(1 - a) * image + a * C(map)`` with ``a = alpha *
    map`` (``weighting="map"``) or ``a = alpha`` (``"uniform"``); the map is resized to the
    image (bilinear) and clipped to [0, 1]."""
    image = _check_image(image)
    score_map = _check_map(score_map)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    h, w = image.shape[:2]
    if score_map.shape != (h, w):
        score_map = cv2.resize(score_map, (w, h), interpolation=cv2.INTER_LINEAR)
    score_map = np.clip(score_map, 0.0, 1.0)
    heat8 = colorize_map(score_map, colormap)
    out = np.empty_like(image)
    # (1 - a) * image + a * heat in float32, rounded and clipped, a band of rows at a time: the
    # temporaries stay in cache (image-sized ones cost their page faults on a large photo)
    rows = max(1, _BLEND_PIXELS // w)
    for lo in range(0, h, rows):
        band = slice(lo, lo + rows)
        m = score_map[band]
        a = (alpha * m if weighting == "map" else np.full(m.shape, alpha, np.float32))
        a = a.astype(np.float32)[:, :, None]
        blend = image[band].astype(np.float32)
        blend *= 1.0 - a
        heat = heat8[band].astype(np.float32)
        heat *= a
        blend += heat
        np.rint(blend, out=blend)
        np.clip(blend, 0, 255, out=blend)
        out[band] = blend
    return out


#: Pixels per band of :func:`overlay_map`'s blend (a few hundred KiB of float32 temporaries).
_BLEND_PIXELS = 16384


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


def label_font_size(image_shape: Sequence[int]) -> int:
    """Label text height in pixels for an image of ``(H, W, ...)``: ``max(11, 0.045 min(H, W))``
    (readable on a thumbnail, in proportion on a photograph)."""
    return max(11, round(0.045 * min(image_shape[0], image_shape[1])))


@functools.lru_cache(maxsize=32)
def _truetype(size: int):
    """DejaVu Sans at ``size`` px (matplotlib ships it); None without FreeType or the file."""
    try:
        import matplotlib
        from PIL import ImageFont

        path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        return ImageFont.truetype(str(path), size)
    except (ImportError, OSError):
        return None


def draw_label(image: np.ndarray, text: str, anchor: tuple[int, int] = (0, 0),
               color: tuple[int, int, int] = PRED_COLOR, size: int | None = None) -> np.ndarray:
    """Write ``text`` in black on a ``color`` background just above the point ``anchor`` (a
    box's top-left corner), or just below it when there is no room above; the label is kept
    inside the image. ``size`` is the text height in pixels (default
    :func:`label_font_size`), reduced until the label fits the image's width (at 8 px the text
    is cut and ends in an ellipsis). In place, returns ``image``."""
    _check_image(image)
    h, w = image.shape[:2]
    size = max(8, int(size or label_font_size(image.shape)))
    font = _truetype(size)
    if font is None:
        return _draw_label_hershey(image, text, anchor, color)
    def too_wide(t: str) -> bool:
        return font.getbbox(t)[2] + 2 * max(1, size // 5) > w

    while size > 8 and too_wide(text):
        size -= 1
        font = _truetype(size) or font
    while len(text) > 1 and too_wide(text):  # still too wide at 8 px: cut, mark with an ellipsis
        text = text[:-2] + "…"
    pad = max(1, size // 5)
    box_w = font.getbbox(text)[2] + 2 * pad
    box_h = round(size * 1.2) + 2 * pad  # ascent + descent of DejaVu Sans ~ 1.17 em
    x = int(np.clip(anchor[0], 0, max(0, w - box_w)))
    y = anchor[1] - box_h if anchor[1] - box_h >= 0 else anchor[1]
    y = int(np.clip(y, 0, max(0, h - box_h)))
    from PIL import Image, ImageDraw

    # Drawn on the patch around the label (a margin of one text height for glyphs that reach
    # past the box), not on a copy of the whole image: the same pixels, at integer offsets.
    y0, y1 = max(0, y - size), min(h, y + box_h + size)
    x0, x1 = max(0, x - size), min(w, x + box_w + size)
    canvas = Image.fromarray(np.ascontiguousarray(image[y0:y1, x0:x1]))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((x - x0, y - y0, x - x0 + box_w - 1, y - y0 + box_h - 1), fill=tuple(color))
    draw.text((x - x0 + pad, y - y0 + pad), text, fill=(0, 0, 0), font=font)
    image[y0:y1, x0:x1] = np.asarray(canvas)
    return image


def _draw_label_hershey(image: np.ndarray, text: str, anchor: tuple[int, int],
                        color: tuple[int, int, int]) -> np.ndarray:
    """Fallback without FreeType: OpenCV's Hershey font (ASCII only: others become ``?``)."""
    text = text.encode("ascii", "replace").decode("ascii")
    h, w = image.shape[:2]
    scale = label_font_size(image.shape) / 22.0
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
                   alpha: float = 0.7, colormap: str = "turbo",
                   weighting: str = "map") -> np.ndarray:
    """A new image: the map blended over ``image`` (skipped when ``score_map`` is None), GT boxes
    in red, predicted boxes in green, and ``label`` at the first predicted box's top-left corner
    (the image's top-left corner without a box)."""
    image = _check_image(image)
    out = (overlay_map(image, score_map, alpha, colormap=colormap, weighting=weighting)
           if score_map is not None else image.copy())
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
