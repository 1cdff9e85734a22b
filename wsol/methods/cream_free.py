"""Training-free CREAM: class re-activation with no training set (our extension).

CREAM (Xu et al., CVPR 2022; :mod:`wsol.methods.cream`) starts its per-image EM (Eq.5-9) from
class-specific context embeddings ``e_fg^c``, ``e_bg^c`` learned during training with the
momentum rule of Eq.4. An off-the-shelf classifier (say the ImageNet EfficientNet-Lite0) has no
such embeddings. This module gives CREAM two initializations that need no training set and no
labels; everything after the initialization (EM, calibration Eq.10-11, fusion Eq.12) is
CREAM's own pure functions, unchanged.

``init="self"`` (the image's own context, the default):
    Eq.3-4 applied to the test image itself. With ``M_c`` the CAM of the image's class ``c``
    (the top-1 prediction, or the class asked for) and ``B = 1[N(M_c) > tau]`` (Eq.3), the EM
    starts from the image's CAM-guided averages

        mu_fg^0 = sum_i B_i f_i / |B|,     mu_bg^0 = sum_i (1 - B_i) f_i / |1 - B|

    (Eq.4's ``f_fg``/``f_bg``, i.e. Eq.4 with ``gamma = 0`` on a batch of one image). An image
    whose mask is empty or covers every pixel (a constant CAM) has no split: its map is its CAM.

``init="fitted"`` (embeddings from a handful of unlabeled images):
    :func:`fit_unlabeled` runs the classifier on unlabeled images, takes each image's
    *predicted* class ``c_hat`` and averages Eq.4's ``f_fg``/``f_bg`` per predicted class (the
    fixed point of the momentum rule) and over all images (a class-agnostic pair ``e_fg``,
    ``e_bg``). At inference the image's class embeddings are used when that class was fitted
    (``class_specific=True``), else the class-agnostic pair, else (nothing fitted) the image's
    own averages as in ``init="self"``.

Evidence (``benchmarks/ilsvrc_sample.py`` -> ``benchmarks/results/ilsvrc_sample.json``; the
ImageNet EfficientNet-Lite0, no training; settings chosen on the CUB subset's val split, maps
of the predicted class): on the CUB subset's 243 test images CAM gives MaxBoxAccV2 52.1,
``init="self"`` 67.2 (paired bootstrap gain +14.5, 95% CI [11.3, 17.8]) and ``init="fitted"``
with the class-agnostic pair fitted on 250 unlabeled CUB images 78.5 (+26.0, [22.5, 29.4]);
per-class embeddings did worse (70.1: a handful of images per predicted class). On the 20
ILSVRC val images CAM gives 56.7 and every init 60-62, a gain whose CI includes 0 at that
size. Hence the defaults: ``init="self"`` (needs nothing; what :meth:`wsol.Localizer.pretrained`
uses), and ``init="fitted"`` with ``class_specific=False`` when a few unlabeled images of the
user's domain are at hand (:meth:`wsol.Localizer.fit`); the calibrated map (Eq.11), T = 2 and
the unit-feature M-step were the best on CUB val for every init. Both inits stay available as
``method.init=self|fitted``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from wsol.errors import ConfigError
from wsol.methods.base import WSOLMethod
from wsol.methods.cream import (
    calibrate,
    check_em_options,
    cam_guided_mask,
    em_reactivation,
    fuse,
    masked_mean_features,
)
from wsol.methods.registry import register_method
from wsol.models.base import WSOLBackbone
from wsol.utils.maps import minmax_per_image

__all__ = ["INITS", "STAGES", "TrainingFreeCREAM", "fit_unlabeled"]

#: Initializations of the EM (see the module docstring).
INITS = ("self", "fitted")
#: Map stages, as CREAM's (Table 5 rows 1-3).
STAGES = ("cam", "calibrated", "fused")
_FEATURE_NORMALIZATIONS = ("none", "l2")
_PI_INITS = ("uniform", "cam")


@register_method
class TrainingFreeCREAM(WSOLMethod):
    """CREAM's EM re-activation with a training-free initialization (module docstring).

    Args:
        backbone: any :class:`~wsol.models.base.WSOLBackbone` (e.g. an ImageNet classifier,
            or :class:`wsol.models.adapter.ClassifierAdapter` around your own).
        init: ``"self"`` (the image's CAM-guided averages) or ``"fitted"`` (embeddings from
            :func:`fit_unlabeled`; falls back as described in the module docstring).
        class_specific: with ``init="fitted"``, use per-class embeddings for classes that were
            fitted (True) or always the class-agnostic pair (False, the default: better on the
            CUB subset, see the module docstring).
        tau: Eq.3 threshold on the min-max normalized CAM (initial split and calibration
            region), 0.2.
        scale: ``s`` of Eq.7, 8.
        iterations: EM iterations ``T >= 1`` (:func:`wsol.methods.cream.em_reactivation`);
            0 gives plain CAM.
        stage: ``"cam"`` (Eq.1), ``"calibrated"`` (Eq.11, default) or ``"fused"`` (Eq.12).
        feature_normalization: M-step on raw (``"none"``) or unit (``"l2"``, default) features.
        pi_init: initial mixing weights ``"uniform"`` or ``"cam"`` (``|B| / N``).

    Buffers (saved in a checkpoint; zeros until :func:`fit_unlabeled`): ``fg_embeddings``,
    ``bg_embeddings`` ``(C, D)``; ``fit_count`` ``(C,)`` images absorbed per class;
    ``generic_embeddings`` ``(2, D)`` and ``generic_count`` ``()`` for the class-agnostic pair.
    """

    name = "cream_free"
    stages = STAGES

    def __init__(self, backbone: WSOLBackbone, init: str = "self", class_specific: bool = False,
                 tau: float = 0.2, scale: float = 8.0, iterations: int = 2,
                 stage: str = "calibrated", feature_normalization: str = "l2",
                 pi_init: str = "uniform") -> None:
        super().__init__(backbone)
        if init not in INITS:
            raise ConfigError(f"cream_free: init must be one of {INITS}, got {init!r}")
        if not isinstance(class_specific, bool):
            raise ConfigError(f"cream_free: class_specific must be true or false, "
                             f"got {class_specific!r}")
        check_em_options("cream_free", tau=tau, scale=scale, iterations=iterations, stage=stage,
                         feature_normalization=feature_normalization, pi_init=pi_init)
        self.init = init
        self.class_specific = class_specific
        self.tau = float(tau)
        self.scale = float(scale)
        self.iterations = int(iterations)
        self.stage = stage
        self.feature_normalization = feature_normalization
        self.pi_init = pi_init
        num_classes, dim = int(backbone.num_classes), int(backbone.feature_dim)
        self.register_buffer("fg_embeddings", torch.zeros(num_classes, dim))
        self.register_buffer("bg_embeddings", torch.zeros(num_classes, dim))
        self.register_buffer("fit_count", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("generic_embeddings", torch.zeros(2, dim))
        self.register_buffer("generic_count", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return (f"method={self.name}, init={self.init!r}, class_specific={self.class_specific}, "
                f"tau={self.tau}, scale={self.scale}, iterations={self.iterations}, "
                f"stage={self.stage!r}, feature_normalization={self.feature_normalization!r}, "
                f"pi_init={self.pi_init!r}, fitted_classes={int((self.fit_count > 0).sum())}, "
                f"fitted_images={int(self.generic_count)}")

    # ---------------------------------------------------------------- initialization
    def initial_centroids(self, features: Tensor, classes: Tensor,
                          region: Tensor) -> tuple[Tensor, Tensor]:
        """``mu_init`` ``(B, 2, D)`` (index 0 foreground) and ``(B,)`` bool "has a split".

        ``init="self"``: Eq.4's averages of the image over ``region`` (Eq.3). ``init="fitted"``:
        per image, the fitted class pair, else the class-agnostic pair, else the self pair.
        """
        f_fg, f_bg, valid_fg, valid_bg = masked_mean_features(features, region)
        mu = torch.stack([f_fg, f_bg], dim=1)                               # (B, 2, D)
        valid = valid_fg & valid_bg
        if self.init == "fitted":
            classes = classes.to(self.fg_embeddings.device)
            if int(self.generic_count) > 0:
                generic = self.generic_embeddings.to(mu.dtype).unsqueeze(0).expand_as(mu)
                mu = generic.clone()
                valid = torch.ones_like(valid)
            if self.class_specific:
                known = (self.fit_count[classes] > 0).to(mu.device)           # (B,)
                own = torch.stack([self.fg_embeddings[classes],
                                   self.bg_embeddings[classes]], dim=1).to(mu.dtype)
                mu = torch.where(known[:, None, None], own, mu)
                valid = valid | known
        return mu, valid

    # ---------------------------------------------------------------- inference (Eq.5-12)
    def _stage_maps(self, outputs: dict[str, Tensor], classes: Tensor,
                    upto: str) -> dict[str, Tensor]:
        features = outputs["features"]
        cams = self.backbone.class_activation_maps(features, classes)
        maps = {"cam": cams}
        if upto == "cam" or self.iterations == 0:
            return maps
        bsz, _, h, w = features.shape
        region = cam_guided_mask(cams, self.tau).reshape(bsz, h * w)          # Eq.3
        mu_init, valid = self.initial_centroids(features, classes, region)
        pi = None
        if self.pi_init == "cam":
            frac = region.float().mean(dim=1).clamp(0.01, 0.99)
            pi = torch.stack([frac, 1.0 - frac], dim=1)
        z, _, _ = em_reactivation(features.flatten(2), mu_init, self.scale, self.iterations,
                                  pi, self.feature_normalization)             # Eq.5-9
        z_hat = calibrate(z, region).reshape(bsz, h, w)                       # Eq.10-11
        # No split (constant CAM): the calibrated map is the normalized CAM itself.
        z_hat = torch.where(valid.to(z_hat.device)[:, None, None], z_hat,
                            minmax_per_image(cams).to(z_hat.dtype))
        maps["calibrated"] = z_hat
        if upto == "fused":
            maps["fused"] = fuse(z_hat, cams)                                 # Eq.12
        return maps

    def localization_maps(self, outputs: dict[str, Tensor], classes: Tensor) -> Tensor:
        """Raw ``(B, h, w)`` map of ``self.stage`` for ``classes[b]`` (CAM when ``T = 0``)."""
        maps = self._stage_maps(outputs, classes, self.stage)
        return maps.get(self.stage, maps["cam"])

    def maps_by_stage(self, outputs: dict[str, Tensor], classes: Tensor) -> dict[str, Tensor]:
        """``{"cam", "calibrated", "fused"}`` in one pass (only ``"cam"`` when ``T = 0``)."""
        return self._stage_maps(outputs, classes, "fused")


@torch.no_grad()
def fit_unlabeled(method: TrainingFreeCREAM, images: Iterable[Any],
                  device: torch.device | str | None = None) -> TrainingFreeCREAM:
    """Fit ``init="fitted"``'s embeddings on unlabeled images, with predicted classes.

    ``images`` yields batches: ``(B, 3, H, W)`` normalized tensors, or dicts with an
    ``"image"`` tensor (labels, if any, are ignored). For every image: ``c_hat = argmax``
    logits, ``B`` = Eq.3 mask of ``M_{c_hat}``, ``(f_fg, f_bg)`` = Eq.4's averages; images
    whose mask is empty or full are skipped. Then

        e_k^c = mean of f_k over the images predicted as c,   e_k = mean of f_k over all

    (``k`` in fg/bg; the fixed point of Eq.4's momentum rule). Replaces previous fits. The
    model's train/eval mode is restored; returns ``method``.
    """
    if not isinstance(method, TrainingFreeCREAM):
        raise ValueError(f"fit_unlabeled expects a TrainingFreeCREAM method, got "
                         f"{type(method).__name__}")
    device = torch.device(device) if device is not None else method.fg_embeddings.device
    was_training = method.training
    method.to(device).eval()
    num_classes, dim = method.fg_embeddings.shape
    sums = torch.zeros(2, num_classes, dim, dtype=torch.float64, device=device)
    counts = torch.zeros(num_classes, dtype=torch.float64, device=device)
    try:
        for index, batch in enumerate(images):
            x = batch["image"] if isinstance(batch, dict) else batch
            if not torch.is_tensor(x) or x.ndim != 4 or x.shape[1] != 3:
                raise ValueError(f"fit_unlabeled: batch {index} is not a (B, 3, H, W) tensor "
                                 f"(or a dict with one under 'image')")
            outputs = method(x.to(device))
            features = outputs["features"].float()
            classes = outputs["logits"].argmax(dim=1)
            cams = method.backbone.class_activation_maps(features, classes)
            mask = cam_guided_mask(cams, method.tau)
            f_fg, f_bg, valid_fg, valid_bg = masked_mean_features(features, mask)
            w = (valid_fg & valid_bg).to(torch.float64)
            for row, f in enumerate((f_fg, f_bg)):
                sums[row].index_add_(0, classes, f.to(torch.float64) * w[:, None])
            counts.index_add_(0, classes, w)
    finally:
        method.train(was_training)
    total = counts.sum()
    means = sums / counts.clamp_min(1.0)[None, :, None]
    method.fg_embeddings.copy_(means[0].to(method.fg_embeddings.dtype))
    method.bg_embeddings.copy_(means[1].to(method.bg_embeddings.dtype))
    method.fit_count.copy_(counts.round().long())
    generic = sums.sum(dim=1) / total.clamp_min(1.0)
    method.generic_embeddings.copy_(generic.to(method.generic_embeddings.dtype))
    method.generic_count.fill_(int(total.round()))
    return method
