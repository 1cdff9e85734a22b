"""Image loading and the wsolevaluation input pipeline, without torchvision.

Train (wsolevaluation / CREAM §4 "resize 256 -> random crop 224 -> flip")::

    x = normalize(to_tensor(hflip_p(random_crop_c(resize_(R, R)(img)))))

Eval (method-spec §4 "test images resized to 224x224, no crop")::

    x = normalize(to_tensor(resize_(S, S)(img)))

with ``to_tensor`` mapping uint8 RGB to float in [0, 1], ``(3, H, W)``, and
``normalize(x)_k = (x_k - mean_k) / std_k`` using the backbone's ``input_mean`` / ``input_std``.
Resizing is PIL bilinear (what torchvision's ``Resize`` does on PIL images, antialiased when
shrinking); a square target is used because wsolevaluation resizes to a square, which is also
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
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from wsol.errors import ImageLoadError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)




def load_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode ``path`` as an RGB PIL image.

    Grayscale, palette (with or without transparency), RGBA and CMYK inputs are converted to RGB
    (alpha is dropped). A missing, truncated or undecodable file raises :class:`ImageLoadError`
    naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"{path}: image file does not exist")
    try:
        with Image.open(path) as img:
            img.load()  # force the full decode: a truncated file fails here, not later
            if img.mode == "P" and "transparency" in img.info:
                img = img.convert("RGBA")
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
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


def resize(img: Image.Image, size: int | Sequence[int]) -> Image.Image:
    """Bilinear resize to ``size`` (``(height, width)``, or an int for a square)."""
    h, w = _pair(size, "size")
    if img.size == (w, h):
        return img
    return img.resize((w, h), Image.BILINEAR)


def to_tensor(img: Image.Image) -> Tensor:
    """RGB uint8 PIL image -> float tensor ``(3, H, W)`` with values ``v / 255`` in [0, 1]."""
    if img.mode != "RGB":
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
        img = resize(img, self.resize_size)
        (rh, rw), (ch, cw) = self.resize_size, self.crop_size
        top = int(torch.randint(0, rh - ch + 1, (1,)).item())
        left = int(torch.randint(0, rw - cw + 1, (1,)).item())
        flip = bool(torch.rand(()).item() < self.flip_prob)
        x = to_tensor(img)[:, top:top + ch, left:left + cw]
        if flip:
            x = x.flip(-1)
        return self.normalize(x.contiguous())

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
        return self.normalize(to_tensor(resize(img, self.size)))

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
