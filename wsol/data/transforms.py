"""Image loading and the wsolevaluation input pipeline, without torchvision.

Train (wsolevaluation / CREAM §4 "resize 256 -> random crop 224 -> flip")::

    x = normalize(to_tensor(hflip_p(random_crop_c(resize_(R, R)(img)))))

Eval (method-spec §4 "test images resized to 224x224, no crop")::

    x = normalize(to_tensor(resize_(S, S)(img)))

with ``to_tensor`` mapping uint8 RGB to float in [0, 1], ``(3, H, W)``, and
``normalize(x)_k = (x_k - mean_k) / std_k`` using the backbone's ``input_mean`` / ``input_std``.
Resizing is PIL bilinear (what torchvision's ``Resize`` does on PIL images, antialiased when
shrinking; computed with PIL's exact numbers by :mod:`wsol.data.resample`); a square target
is used because wsolevaluation resizes to a square, which is also
what makes ``int(x * S / W)`` the right box rescaling.

All randomness (crop offset, flip) is drawn from torch's global RNG, so ``torch.manual_seed``
in the main process makes a run reproducible, including inside DataLoader workers (each worker's
torch RNG is seeded from the loader's base seed).

Example::

    tf = TrainTransform(mean=model.input_mean, std=model.input_std)
    x = tf(load_image("img.jpg"))          # (3, 224, 224), normalized
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from wsol.data.resample import resize_array
from wsol.errors import ImageLoadError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


#: Largest image wsol decodes, in pixels (W * H): 100 megapixels, about 300 MB as 8-bit RGB.
#: A file whose header declares more is refused before decoding (a "decompression bomb": a
#: small PNG can declare 20000 x 20000 pixels and take gigabytes to decode). Override per call
#: with ``load_image(..., max_pixels=N)`` or for the whole process (DataLoader workers included)
#: with the environment variable ``WSOL_MAX_IMAGE_PIXELS=N``.
MAX_IMAGE_PIXELS = 100_000_000

_OPEN_LOCK = threading.Lock()


def max_image_pixels() -> int:
    """The pixel limit in force: ``$WSOL_MAX_IMAGE_PIXELS`` if set, else
    :data:`MAX_IMAGE_PIXELS`."""
    text = os.environ.get("WSOL_MAX_IMAGE_PIXELS")
    if text is None or not text.strip():
        return MAX_IMAGE_PIXELS
    try:
        value = int(text)
    except ValueError:
        raise ImageLoadError(f"WSOL_MAX_IMAGE_PIXELS must be a positive integer, got {text!r}"
                             ) from None
    if value <= 0:
        raise ImageLoadError(f"WSOL_MAX_IMAGE_PIXELS must be a positive integer, got {value}")
    return value


def _open_checked(path: Path, limit: int) -> Image.Image:
    """``Image.open`` (header only) with wsol's pixel limit replacing PIL's bomb check.

    PIL warns above ``Image.MAX_IMAGE_PIXELS`` (~89.5 MP) and raises above twice that, from
    inside ``Image.open``; both are turned into our one check. The lock only covers the header
    parse, so that the temporary warning filter cannot race with another wsol thread.
    """
    with _OPEN_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        pil_limit = Image.MAX_IMAGE_PIXELS
        raise_pil = pil_limit is not None and limit > pil_limit
        if raise_pil:
            Image.MAX_IMAGE_PIXELS = limit  # a larger wsol limit must not be vetoed by PIL's
        try:
            img = Image.open(path)
        except Image.DecompressionBombError as exc:
            raise ImageLoadError(f"{path}: image too large to decode safely ({exc}); the limit "
                                 f"is {limit} pixels (set WSOL_MAX_IMAGE_PIXELS to raise it)"
                                 ) from None
        finally:
            if raise_pil:
                Image.MAX_IMAGE_PIXELS = pil_limit
    width, height = img.size
    if width * height > limit:
        img.close()
        raise ImageLoadError(f"{path}: image declares {width}x{height} = {width * height} "
                             f"pixels, more than the limit of {limit} (a decompression bomb or "
                             "a very large image; set WSOL_MAX_IMAGE_PIXELS to raise the limit)")
    return img


def _to_uint8_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB from any decoded PIL mode (see :func:`load_image` for the rules)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode == "I":
        # 16-bit grayscale PNG/TIFF (PIL: "I;16", "I;16B", or "I" = int32 holding 0..65535).
        # v8 = round(v16 / 257) maps 0..65535 exactly onto 0..255 (255 * 257 = 65535).
        # An "I" image whose values all lie in 0..255 is 8-bit data widened to int32: kept.
        array = np.asarray(img).astype(np.int64)
        if mode == "I" and array.size and array.min() >= 0 and array.max() <= 255:
            gray = array.astype(np.uint8)
        else:
            gray = np.rint(np.clip(array, 0, 65535) / 257.0).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode == "F":
        # 32-bit float: values in [0, 1] are intensities (x 255); otherwise min-max scaled.
        array = np.nan_to_num(np.asarray(img, dtype=np.float64))
        lo, hi = (float(array.min()), float(array.max())) if array.size else (0.0, 1.0)
        if lo < 0.0 or hi > 1.0:
            array = (array - lo) / (hi - lo) if hi > lo else np.zeros_like(array)
        gray = np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    elif mode in ("PA", "LA", "La", "RGBa"):
        img = img.convert("RGBA")
    return img.convert("RGB")


def _owns_its_pixels(img: Image.Image) -> bool:
    """True for a loaded single-frame JPEG or PNG: PIL has closed its file after decoding and
    the pixels live in memory of its own (not a memory map of the file, as for some raw
    formats). Anything else (multi-frame files keep their file open) is copied and closed."""
    return (img.format in ("JPEG", "PNG") and not getattr(img, "is_animated", False)
            and getattr(img, "map", None) is None and getattr(img, "fp", None) is None)


def load_image(path: str | os.PathLike, max_pixels: int | None = None) -> Image.Image:
    """Open and fully decode ``path`` as an 8-bit RGB PIL image.

    - Size: a file declaring more than ``max_pixels`` pixels (default
      :func:`max_image_pixels`, 100 MP) raises :class:`ImageLoadError` before it is decoded.
    - Modes: grayscale (``L``, ``1``), palette (with or without transparency), ``LA``, RGBA and
      CMYK are converted to RGB (alpha is dropped, not composited). 16-bit grayscale
      (``I;16*``, or ``I`` from a 16-bit PNG) is scaled ``round(v / 257)`` so that 65535 maps to
      255 (PIL's own conversion clips it, turning most images white); ``I`` images whose values
      all lie in 0..255 are kept as is; float ``F`` images in [0, 1] are multiplied by 255, other
      ranges min-max scaled. (PIL already reduces 16-bit RGB(A) PNGs to 8 bits per channel.)
    - A missing, truncated or undecodable file raises :class:`ImageLoadError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"{path}: image file does not exist")
    limit = max_image_pixels() if max_pixels is None else int(max_pixels)
    if limit <= 0:
        raise ImageLoadError(f"max_pixels must be positive, got {limit}")
    try:
        img = _open_checked(path, limit)
        try:
            img.load()  # force the full decode: a truncated file fails here, not later
            out = _to_uint8_rgb(img)
        except BaseException:
            img.close()
            raise
        if out is img and _owns_its_pixels(img):
            return img  # its file is closed and nothing refers to it: no copy needed
        if out is img:
            out = img.copy()
        img.close()
        return out
    except ImageLoadError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            EOFError) as exc:
        raise ImageLoadError(f"{path}: cannot decode image ({exc})") from None


def _pair(size: int | Sequence[int], name: str) -> tuple[int, int]:
    """``size`` as ``(height, width)``; an int means a square."""
    if isinstance(size, int):
        h = w = size
    else:
        if len(size) != 2:
            raise ValueError(f"{name} must be an int or (height, width), got {size!r}")
        h, w = (int(s) for s in size)
    if h <= 0 or w <= 0:
        raise ValueError(f"{name} must be positive, got {size!r}")
    return h, w


def _check_stats(mean: Sequence[float], std: Sequence[float]) -> tuple[Tensor, Tensor]:
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need 3 values (RGB), got mean={mean!r} std={std!r}")
    if any(s <= 0 for s in std):
        raise ValueError(f"std must be positive, got {std!r}")
    return (torch.tensor(mean, dtype=torch.float32).view(3, 1, 1),
            torch.tensor(std, dtype=torch.float32).view(3, 1, 1))


def _rgb(img: Image.Image) -> Image.Image:
    return img if img.mode == "RGB" else img.convert("RGB")


def resize(img: Image.Image, size: int | Sequence[int]) -> Image.Image:
    """Bilinear resize to ``size`` (``(height, width)``, or an int for a square)."""
    h, w = _pair(size, "size")
    if img.size == (w, h):
        return img
    return img.resize((w, h), Image.BILINEAR)


def to_tensor(img: Image.Image | np.ndarray) -> Tensor:
    """RGB uint8 PIL image (or ``(H, W, 3)`` uint8 array) -> float tensor ``(3, H, W)`` with
    values ``v / 255`` in [0, 1]."""
    if isinstance(img, Image.Image) and img.mode != "RGB":
        img = img.convert("RGB")
    array = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    # In NumPy (single-threaded): torch's thread pool makes per-image ops slow on a busy CPU.
    chw = np.ascontiguousarray(array, dtype=np.float32)
    chw /= np.float32(255.0)
    return torch.from_numpy(chw)


class Normalize:
    """``x_k <- (x_k - mean_k) / std_k`` per channel of (3, H, W) or (B, 3, H, W) tensors."""

    def __init__(self, *, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        self.mean, self.std = _check_stats(mean, std)

    def __call__(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def apply_(self, x: Tensor) -> Tensor:
        """:meth:`__call__` in place, for a tensor the caller owns (the transforms' fresh
        per-image tensors): the same float32 operations, so the same values, without two
        temporaries per image; CPU tensors in NumPy (single-threaded: torch's thread pool makes
        small per-image ops slow on a busy CPU)."""
        if x.device.type == "cpu" and x.dtype == torch.float32 and x.is_contiguous():
            arr = x.numpy()
            shape = (3, 1, 1) if x.ndim == 3 else (1, 3, 1, 1)
            arr -= self.mean.numpy().reshape(shape)
            arr /= self.std.numpy().reshape(shape)
            return x
        return x.sub_(self.mean.to(x.device)).div_(self.std.to(x.device))

    def invert(self, x: Tensor) -> Tensor:
        """Undo the normalization (``x * std + mean``), e.g. to draw overlays."""
        return x * self.std.to(x.device) + self.mean.to(x.device)


class TrainTransform:
    """Resize to ``resize_size`` (square by default, 256), random crop ``crop_size`` (224),
    horizontal flip with probability ``flip_prob``, to tensor, normalize.

    Crop offsets are uniform over all valid positions: ``top ~ U{0..R_h - c_h}``,
    ``left ~ U{0..R_w - c_w}`` (torch RNG).
    """

    def __init__(self, *, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD,
                 resize_size: int | Sequence[int] = 256, crop_size: int | Sequence[int] = 224,
                 flip_prob: float = 0.5) -> None:
        self.resize_size = _pair(resize_size, "resize_size")
        self.crop_size = _pair(crop_size, "crop_size")
        if self.crop_size[0] > self.resize_size[0] or self.crop_size[1] > self.resize_size[1]:
            raise ValueError(f"crop_size {self.crop_size} is larger than resize_size "
                             f"{self.resize_size}")
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}")
        self.flip_prob = flip_prob
        self.normalize = Normalize(mean=mean, std=std)

    def __call__(self, img: Image.Image) -> Tensor:
        resized = resize_array(_rgb(img), self.resize_size)  # = resize(), as an array
        (rh, rw), (ch, cw) = self.resize_size, self.crop_size
        top = int(torch.randint(0, rh - ch + 1, (1,)).item())
        left = int(torch.randint(0, rw - cw + 1, (1,)).item())
        flip = bool(torch.rand(()).item() < self.flip_prob)
        x = to_tensor(resized)[:, top:top + ch, left:left + cw]
        if flip:
            x = x.flip(-1)
        return self.normalize.apply_(x.contiguous())

    def __repr__(self) -> str:
        return (f"TrainTransform(resize_size={self.resize_size}, crop_size={self.crop_size}, "
                f"flip_prob={self.flip_prob})")


class EvalTransform:
    """Resize to ``size`` (square, 224 by default; no crop), to tensor, normalize."""

    def __init__(self, *, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD,
                 size: int | Sequence[int] = 224) -> None:
        self.size = _pair(size, "size")
        self.normalize = Normalize(mean=mean, std=std)

    def __call__(self, img: Image.Image) -> Tensor:
        return self.normalize.apply_(to_tensor(resize_array(_rgb(img), self.size)))

    def __repr__(self) -> str:
        return f"EvalTransform(size={self.size})"


def build_transform(train: bool, *, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD,
                    resize_size: int | Sequence[int] = 256,
                    crop_size: int | Sequence[int] = 224) -> TrainTransform | EvalTransform:
    """The wsolevaluation pipeline: train = resize ``resize_size`` + random crop ``crop_size`` +
    flip; eval = resize to ``crop_size`` (the network input size), no crop."""
    if train:
        return TrainTransform(mean=mean, std=std, resize_size=resize_size, crop_size=crop_size)
    return EvalTransform(mean=mean, std=std, size=crop_size)
