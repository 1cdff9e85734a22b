"""CREAM + regressor (method-spec §2 "CREAM + regressor"; the PSOL recipe, Zhang et al. 2020).

1. Pseudo boxes for the training images from CREAM's fused map (:func:`wsol.localization.geometry.pseudo_boxes_from_maps`;
   the paper generates them at 448x448 as PSOL): the bounding rectangle of the largest contour
   of the normalized map at a threshold chosen on the val split.
2. A class-agnostic :class:`BoxRegressor`: backbone features -> GAP -> MLP -> 4 sigmoid outputs,
   trained with ``50 * MSE`` on the pseudo boxes, with box-aware random-resized-crop and flip
   (:class:`RandomResizedCropWithBox`, :class:`RandomHorizontalFlipWithBox`).
3. At test time the class comes from the classifier, the box from the regressor.

Box conventions used here:

- *pixel boxes*: ``(x0, y0, x1, y1)`` int64, inclusive pixel indices (wsolevaluation).
- *normalized boxes*: ``(x, y, w, h)`` float in [0, 1]: top-left corner and size of the box's
  continuous extent, divided by the image width/height. A pixel box covers the continuous
  interval ``[x0, x1 + 1)``, so ``x = x0 / W`` and ``w = (x1 + 1 - x0) / W``. Normalized boxes
  are resolution independent (a resize leaves them unchanged), which is why the box transforms
  and the regressor's targets use them.

Image sizes are ``(H, W)`` throughout, as in :func:`wsol.localization.geometry.scale_boxes`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from PIL import Image
from torch import Tensor, nn

from wsol.data.boxes import xywh_to_xyxy, xyxy_to_xywh
from wsol.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Normalize, to_tensor
from wsol.models.base import WSOLBackbone, make_param_groups

__all__ = [
    "BoxEvalTransform",
    "BoxRegressor",
    "BoxTrainTransform",
    "RandomHorizontalFlipWithBox",
    "RandomResizedCropWithBox",
    "ResizeWithBox",
    "regression_loss",
    "xywh_to_xyxy",
    "xyxy_to_xywh",
]

#: PSOL weights the box MSE by 50.
PSOL_LOSS_WEIGHT = 50.0


# --------------------------------------------------------------------------------------------
# Box conversions
# --------------------------------------------------------------------------------------------

def regression_loss(pred: Tensor, target: Tensor, weight: float = PSOL_LOSS_WEIGHT) -> Tensor:
    """``weight * mean((pred - target)^2)`` over the ``(B, 4)`` normalized boxes (PSOL: 50)."""
    if pred.shape != target.shape or pred.ndim != 2 or pred.shape[1] != 4:
        raise ValueError(f"pred and target must both be (B, 4), got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    return weight * nn.functional.mse_loss(pred, target.to(pred.dtype))


class BoxRegressor(nn.Module):
    """Class-agnostic box regressor: ``F = backbone.forward_features(x)`` -> GAP -> MLP -> sigmoid.

    ``head = Linear(D, hidden) -> ReLU -> Dropout(dropout) -> Linear(hidden, 4)`` (``hidden = 0``:
    a single ``Linear(D, 4)``); the output ``sigmoid(head(GAP(F)))`` is the normalized
    ``(x, y, w, h)`` box of the input image. The backbone's classifier is not used (and not
    trained); classification comes from the WSOL model.

    Args:
        backbone: a :class:`~wsol.models.base.WSOLBackbone` (ImageNet-pretrained in the recipe).
        hidden: MLP width (512 by default [inferred]).
        dropout: dropout before the last layer.
        loss_weight: factor of the MSE (50, as PSOL).
    """

    def __init__(self, backbone: WSOLBackbone, hidden: int = 512, dropout: float = 0.0,
                 loss_weight: float = PSOL_LOSS_WEIGHT) -> None:
        super().__init__()
        if hidden < 0:
            raise ValueError(f"BoxRegressor: hidden must be >= 0, got {hidden}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"BoxRegressor: dropout must be in [0, 1), got {dropout}")
        if not loss_weight > 0:
            raise ValueError(f"BoxRegressor: loss_weight must be > 0, got {loss_weight}")
        self.backbone = backbone
        self.loss_weight = float(loss_weight)
        dim = int(backbone.feature_dim)
        if hidden:
            self.head = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True),
                                      nn.Dropout(dropout), nn.Linear(hidden, 4))
        else:
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, 4))
        for m in self.head.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def forward(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` normalized images -> ``(B, 4)`` normalized ``(x, y, w, h)``."""
        features = self.backbone.forward_features(images)
        return torch.sigmoid(self.head(features.mean(dim=(2, 3))))

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """:func:`regression_loss` with this model's ``loss_weight``."""
        return regression_loss(pred, target, self.loss_weight)

    def predict_boxes(self, images: Tensor, sizes: Tensor | Sequence[int]) -> Tensor:
        """Inclusive pixel boxes ``(B, 4)`` in images of ``sizes`` (``(H, W)`` or ``(B, 2)``)."""
        return xywh_to_xyxy(self(images), sizes)

    def param_groups(self, lr: float, new_layer_lr_mult: float = 10.0,
                     weight_decay: float = 0.0) -> list[dict]:
        """Pretrained backbone layers at ``lr``; the backbone's new layers (except its unused
        classifier) and the MLP head at ``lr * new_layer_lr_mult``."""
        skip = {id(p) for p in self.backbone.classifier.parameters()}
        new_ids = {id(p) for m in self.backbone.new_modules() for p in m.parameters()} - skip
        new_ids |= {id(p) for p in self.head.parameters()}
        old = [p for p in self.backbone.parameters()
               if id(p) not in new_ids and id(p) not in skip and p.requires_grad]
        new = [p for p in self.parameters() if id(p) in new_ids and p.requires_grad]
        return make_param_groups(old, new, lr, new_layer_lr_mult, weight_decay)


# --------------------------------------------------------------------------------------------
# Box-aware transforms (PIL images, normalized (x, y, w, h) boxes, torch RNG)
# --------------------------------------------------------------------------------------------

def _check_box(box: Tensor | Sequence[float], name: str = "box") -> Tensor:
    b = torch.as_tensor(box, dtype=torch.float64).reshape(-1)
    if b.shape != (4,) or not torch.isfinite(b).all():
        raise ValueError(f"{name} must be 4 finite numbers (x, y, w, h), got {box!r}")
    tol = 1e-6
    if (b[2] <= 0 or b[3] <= 0 or b[0] < -tol or b[1] < -tol or b[0] + b[2] > 1 + tol
            or b[1] + b[3] > 1 + tol):
        raise ValueError(f"{name} must be a normalized (x, y, w, h) box with w, h > 0 inside "
                         f"[0, 1], got {b.tolist()}")
    return b


def _size_hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or any(int(s) <= 0 for s in size):
        raise ValueError(f"size must be a positive int or (height, width), got {size!r}")
    return int(size[0]), int(size[1])


class RandomResizedCropWithBox:
    """Random crop of random area and aspect ratio, resized to ``size``, with the box adjusted.

    Crop sampling (the usual random-resized-crop; torch RNG): for up to ``max_attempts``
    attempts draw ``area ~ U(scale) * W H`` and ``log r ~ U(log ratio)``, crop width
    ``round(sqrt(area r))``, height ``round(sqrt(area / r))``; if it fits, the offset is uniform
    over the valid positions. A crop is accepted only if the visible part of the box (box ∩
    crop) is at least one source pixel wide and tall and covers at least ``min_box_visible``
    of the box's area.

    Box: clipped to the crop (``[x0, x1) ∩ [left, left + cw)``), shifted and divided by the crop
    size; the result is the normalized box of the visible part of the object in the output.
    When no attempt is accepted (a crop that misses the box is never used), the whole image is
    taken (resized to ``size``) and the box is returned unchanged.

    ``__call__(img, box) -> (img, box)``: PIL image, normalized ``(x, y, w, h)`` box (float64
    tensor on output). Bilinear resampling.
    """

    def __init__(self, size: int | Sequence[int], scale: tuple[float, float] = (0.2, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), min_box_visible: float = 0.0,
                 max_attempts: int = 10, generator: torch.Generator | None = None) -> None:
        self.size = _size_hw(size)
        if not (0 < scale[0] <= scale[1] <= 1):
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
        if not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {ratio}")
        if not 0.0 <= min_box_visible <= 1.0:
            raise ValueError(f"min_box_visible must be in [0, 1], got {min_box_visible}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        self.min_box_visible = float(min_box_visible)
        self.max_attempts = int(max_attempts)
        self.generator = generator

    def _uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=self.generator))

    def _randint(self, high: int) -> int:
        """Uniform integer in ``[0, high]``."""
        return int(torch.randint(0, high + 1, (1,), generator=self.generator))

    def get_params(self, width: int, height: int, box: Tensor) -> tuple[int, int, int, int]:
        """``(left, top, crop_w, crop_h)`` in pixels for an image of ``width x height`` whose
        normalized box is ``box``."""
        bx0, by0 = float(box[0]) * width, float(box[1]) * height
        bx1, by1 = bx0 + float(box[2]) * width, by0 + float(box[3]) * height
        box_area = (bx1 - bx0) * (by1 - by0)
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(self.max_attempts):
            area = width * height * self._uniform(*self.scale)
            aspect = math.exp(self._uniform(log_lo, log_hi))
            cw = int(round(math.sqrt(area * aspect)))
            ch = int(round(math.sqrt(area / aspect)))
            if not (0 < cw <= width and 0 < ch <= height):
                continue
            top, left = self._randint(height - ch), self._randint(width - cw)
            iw = min(bx1, left + cw) - max(bx0, left)
            ih = min(by1, top + ch) - max(by0, top)
            if iw >= 1 and ih >= 1 and iw * ih >= self.min_box_visible * box_area:
                return left, top, cw, ch
        return 0, 0, width, height

    def __call__(self, img: Image.Image,
                 box: Tensor | Sequence[float]) -> tuple[Image.Image, Tensor]:
        b = _check_box(box)
        width, height = img.size
        left, top, cw, ch = self.get_params(width, height, b)
        out = img.resize((self.size[1], self.size[0]), Image.BILINEAR,
                         box=(left, top, left + cw, top + ch))
        x0 = (b[0] * width - left).clamp(0, cw)
        x1 = ((b[0] + b[2]) * width - left).clamp(0, cw)
        y0 = (b[1] * height - top).clamp(0, ch)
        y1 = ((b[1] + b[3]) * height - top).clamp(0, ch)
        return out, torch.stack([x0 / cw, y0 / ch, (x1 - x0) / cw, (y1 - y0) / ch])

    def __repr__(self) -> str:
        return (f"RandomResizedCropWithBox(size={self.size}, scale={self.scale}, "
                f"ratio={self.ratio}, min_box_visible={self.min_box_visible})")


class RandomHorizontalFlipWithBox:
    """Mirror the image with probability ``p`` (torch RNG); the box becomes ``x' = 1 - x - w``."""

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = float(p)
        self.generator = generator

    def __call__(self, img: Image.Image,
                 box: Tensor | Sequence[float]) -> tuple[Image.Image, Tensor]:
        b = _check_box(box)
        if float(torch.rand((), generator=self.generator)) < self.p:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
            b = torch.stack([1.0 - b[0] - b[2], b[1], b[2], b[3]])
        return img, b

    def __repr__(self) -> str:
        return f"RandomHorizontalFlipWithBox(p={self.p})"


class ResizeWithBox:
    """Bilinear resize to ``size``; a normalized box is unchanged by a resize."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _size_hw(size)

    def __call__(self, img: Image.Image,
                 box: Tensor | Sequence[float]) -> tuple[Image.Image, Tensor]:
        b = _check_box(box)
        if img.size != (self.size[1], self.size[0]):
            img = img.resize((self.size[1], self.size[0]), Image.BILINEAR)
        return img, b


class BoxTrainTransform:
    """Regressor training pipeline (PSOL): random-resized-crop (scale 0.2-1) + flip, to tensor,
    normalize. ``(PIL image, normalized box) -> ((3, S, S) float tensor, (4,) float32 box)``."""

    def __init__(self, *, size: int | Sequence[int] = 224, scale: tuple[float, float] = (0.2, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), flip_prob: float = 0.5,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 generator: torch.Generator | None = None) -> None:
        self.crop = RandomResizedCropWithBox(size, scale=scale, ratio=ratio, generator=generator)
        self.flip = RandomHorizontalFlipWithBox(flip_prob, generator=generator)
        self.normalize = Normalize(mean=mean, std=std)

    def __call__(self, img: Image.Image, box: Tensor | Sequence[float]) -> tuple[Tensor, Tensor]:
        img, b = self.flip(*self.crop(img, box))
        return self.normalize.apply_(to_tensor(img)), b.float()


class BoxEvalTransform:
    """Regressor evaluation pipeline: resize to ``size`` (no crop), to tensor, normalize."""

    def __init__(self, *, size: int | Sequence[int] = 224, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        self.resize = ResizeWithBox(size)
        self.normalize = Normalize(mean=mean, std=std)

    def __call__(self, img: Image.Image, box: Tensor | Sequence[float]) -> tuple[Tensor, Tensor]:
        img, b = self.resize(img, box)
        return self.normalize.apply_(to_tensor(img)), b.float()
