"""CutMix (Yun et al., ICCV 2019) as in wsolevaluation (method-spec §6).

Training only (:meth:`CutMix.prepare_batch`): with probability ``prob`` per batch (and
``beta > 0``), ``lam ~ Beta(beta, beta)``, a box of side ``sqrt(1 - lam)`` times the image side,
centred at a uniformly drawn pixel and clipped to the image, is pasted from a random permutation
of the batch; ``lam`` is then recomputed as the unpasted share of the image. The loss is
``lam * CE(logits, y_a) + (1 - lam) * CE(logits, y_b)`` (``y_b`` the permuted labels). Network
and map are CAM's; evaluation is a plain forward.

Defaults are wsolevaluation's ``config.py``: ``cutmix_beta=1.0``, ``cutmix_prob=1.0``. Box
geometry follows the reference: the side along dim 2 is ``int(H sqrt(1 - lam))``, the corners
``clip(c -+ side // 2, 0, H)``; all draws come from torch's global RNG (seeded per epoch).

With CREAM (:mod:`wsol.methods.cream`), the pasted box belongs to another image's class, so its
pixels update neither embedding of ``y_a`` (:meth:`CutMix.cream_valid_pixels`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn import functional as F

from wsol.methods.cam import CAM
from wsol.methods.registry import register_method
from wsol.models.base import WSOLBackbone


class MixedTargets(NamedTuple):
    """Targets of a mixed batch: ``lam * CE(y_a) + (1 - lam) * CE(y_b)``."""

    labels_a: Tensor
    labels_b: Tensor
    lam: float


def rand_box(height: int, width: int, lam: float) -> tuple[int, int, int, int]:
    """A box ``(r1, c1, r2, c2)`` (rows along dim 2) of side ``sqrt(1 - lam)`` of the image,
    centred at a uniform pixel and clipped to the image."""
    ratio = (1.0 - lam) ** 0.5
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cr = int(torch.randint(height, ()).item())
    cc = int(torch.randint(width, ()).item())
    r1, r2 = max(cr - cut_h // 2, 0), min(cr + cut_h // 2, height)
    c1, c2 = max(cc - cut_w // 2, 0), min(cc + cut_w // 2, width)
    return r1, c1, r2, c2


@register_method
class CutMix(CAM):
    """CAM trained on CutMix batches.

    Args:
        backbone: any CAM backbone.
        beta: Beta distribution parameter of ``lam`` (default 1.0; 0 disables mixing).
        prob: probability that a batch is mixed (default 1.0).
    """

    name = "cutmix"

    def __init__(self, backbone: WSOLBackbone, beta: float = 1.0, prob: float = 1.0) -> None:
        super().__init__(backbone)
        if not beta >= 0:
            raise ValueError(f"cutmix: beta must be >= 0, got {beta}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"cutmix: prob must be in [0, 1], got {prob}")
        self.beta = float(beta)
        self.prob = float(prob)
        self._pasted: tuple[int, int, int, int, int, int] | None = None

    def prepare_batch(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor | MixedTargets]:
        """Training: mix the batch with probability ``prob`` (module docstring); eval: unchanged."""
        self._pasted = None
        if not self.training or self.beta <= 0 or not float(torch.rand(())) < self.prob:
            return images, labels
        lam = float(torch.distributions.Beta(self.beta, self.beta).sample())
        perm = torch.randperm(images.shape[0], device=images.device)
        height, width = images.shape[-2:]
        r1, c1, r2, c2 = rand_box(height, width, lam)
        mixed = images.clone()
        mixed[:, :, r1:r2, c1:c2] = images[perm, :, r1:r2, c1:c2]
        lam = 1.0 - (r2 - r1) * (c2 - c1) / (height * width)
        self._pasted = (r1, c1, r2, c2, height, width)
        return mixed, MixedTargets(labels, labels[perm], lam)

    def loss(self, outputs: dict[str, Tensor], targets: Tensor | MixedTargets) -> Tensor:
        """``lam * CE(y_a) + (1 - lam) * CE(y_b)`` for a mixed batch, CE otherwise."""
        if isinstance(targets, MixedTargets):
            logits = outputs["logits"]
            return (targets.lam * F.cross_entropy(logits, targets.labels_a)
                    + (1.0 - targets.lam) * F.cross_entropy(logits, targets.labels_b))
        return super().loss(outputs, targets)

    def cream_valid_pixels(self, outputs: dict[str, Tensor], features: Tensor) -> Tensor | None:
        """Feature pixels whose centre lies outside the box pasted into this training batch."""
        if self._pasted is None or not self.training:
            return None
        r1, c1, r2, c2, height, width = self._pasted
        h, w = features.shape[-2:]
        rows = (torch.arange(h, device=features.device) + 0.5) * (height / h)
        cols = (torch.arange(w, device=features.device) + 0.5) * (width / w)
        inside = (((rows >= r1) & (rows < r2)).unsqueeze(1)
                  & ((cols >= c1) & (cols < c2)).unsqueeze(0))
        return (~inside).unsqueeze(0).expand(features.shape[0], h, w)

    def extra_repr(self) -> str:
        return f"method={self.name}, beta={self.beta}, prob={self.prob}"
