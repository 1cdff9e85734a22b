"""PIL's bilinear resize, with its exact numbers, from the compiled helper ``_resample``.

Every image of the evaluation (and the training resize) goes through ``PIL.Image.resize(size,
BILINEAR)``: a separable convolution with the triangle filter, stretched by the downscaling
factor, in fixed point (22 fractional bits), one axis after the other with 8-bit pixels in
between (the formulas are in ``_resample.c``). The helper computes exactly those integers,
vectorized (the horizontal pass on a transposed copy, the vertical pass on whole rows), from
the image's own RGBX pixels, a few times faster than PIL (``benchmarks/bench_host_costs.py``).

Which pass runs first changes the 8-bit intermediate, and Pillow's choice changed between
versions: before 12.2 always horizontal first; 12.2-12.x vertical first for images taller than
100 x their width being shrunk vertically; from 13.0 vertical first when the height shrinks by
more than twice as many pixels as the width. :func:`horizontal_first` follows the installed
version, and at first use the helper is compared with PIL on probe shapes on both sides of
each rule; any difference (a Pillow that chose otherwise) turns the helper off, so the numbers
are always PIL's. Without the compiled helper (no C compiler at install) PIL runs itself.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

try:
    from wsol.data import _resample
except ImportError:  # pragma: no cover - built without a C compiler
    _resample = None

__all__ = ["available", "horizontal_first", "resize_array"]


@functools.lru_cache(maxsize=1)
def _pillow_version() -> tuple[int, int]:
    import PIL

    major, minor = (PIL.__version__.split(".") + ["0"])[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def horizontal_first(h: int, w: int, oh: int, ow: int) -> bool:
    """Whether the installed Pillow resizes ``(h, w) -> (oh, ow)`` horizontally first."""
    version = _pillow_version()
    if version >= (13, 0):
        return not (h - oh > 0 and h - oh > (w - ow) * 2)
    if version >= (12, 2):
        return not (h > w * 100 and oh < h)
    return True


def _fast(img: Image.Image, oh: int, ow: int) -> np.ndarray:
    channels = 3 if img.mode == "RGB" else 1
    data = img.tobytes("raw", "RGBX") if channels == 3 else img.tobytes()
    out = np.empty((oh, ow, channels), dtype=np.uint8)
    _resample.resize(data, img.height, img.width, 4 if channels == 3 else 1, out, oh, ow,
                     channels, horizontal_first(img.height, img.width, oh, ow))
    return out if channels == 3 else out[:, :, 0]


#: Probe resizes ((h, w) -> (oh, ow)) on both sides of each version's pass-order rule.
_PROBES = (((37, 23), (11, 19)), ((23, 37), (19, 11)), ((40, 30), (10, 25)),
           ((30, 40), (25, 10)), ((31, 29), (29, 31)), ((13, 17), (13, 5)), ((17, 13), (5, 13)),
           ((505, 4), (3, 3)), ((4, 505), (3, 3)), ((9, 7), (20, 3)))


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """True when the compiled helper is built and reproduces this Pillow on the probes."""
    if _resample is None:
        return False
    rng = np.random.default_rng(0)
    for (h, w), (oh, ow) in _PROBES:
        for mode, shape in (("RGB", (h, w, 3)), ("L", (h, w))):
            img = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
            if not np.array_equal(_fast(img, oh, ow),
                                  np.asarray(img.resize((ow, oh), Image.BILINEAR))):
                return False
    return True


def resize_array(img: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """``np.asarray(img.resize((w, h), Image.BILINEAR))`` for ``size = (h, w)``: the same
    array, ``(h, w, 3)`` for RGB (``(h, w)`` for L), from the compiled helper where it is
    available; any other mode goes through PIL."""
    oh, ow = int(size[0]), int(size[1])
    if img.size == (ow, oh):
        return np.asarray(img)
    if img.mode in ("RGB", "L") and available():
        return _fast(img, oh, ow)
    return np.asarray(img.resize((ow, oh), Image.BILINEAR))
