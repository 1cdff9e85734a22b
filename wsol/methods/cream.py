"""CREAM: Class RE-Activation Mapping (Xu et al., CVPR 2022), method-spec §2.

The official code never released this part; this module is the reference implementation.
Equation numbers refer to the CVPR 2022 paper. Notation: ``F`` is the feature map CAM is
computed from (``(B, D, h, w)``), ``N = h * w``, ``f_i`` the feature of pixel ``i``, ``M_c``
the CAM of class ``c`` (Eq.1), ``C`` the number of classes.

Training (Eq.3-4): exactly CAM's cross-entropy; on the side, two class-specific context
embeddings ``e_fg^c``, ``e_bg^c`` (buffers, no gradient) follow the CAM-guided foreground and
background feature averages with momentum ``gamma``.

Inference (Eq.5-12): per image, a two-component mixture over pixel features with cosine
"Gaussian" base models ``p_k(f) ∝ exp(s cos(f, mu_k))`` (Eq.7) is fitted by EM (Eq.8-9) starting
from the GT/predicted class's embeddings; the component that covers the CAM-guided region best
is the calibrated foreground map (Eq.10-11), which is added to the min-max normalized CAM
(Eq.12).

Everything is batched: all images of a batch go through EM at once with ``bmm``/``einsum``, on
the features' device, with no Python loop over images.

CREAM on any method (plug-and-play, paper Table 1 / Fig. 6): :class:`CreamAddon` is a mixin
that adds the embeddings, their training update and the three inference stages to any
:class:`~wsol.methods.base.WSOLMethod`; ``build_method(name, backbone, cream=True, **kw)`` (config
``method.cream: true``) builds ``with_cream(cls)``, the method's class with the mixin in front.
The method keeps its own loss, ``prepare_batch`` and forward untouched, so its weights train
exactly as without CREAM (same seed). CREAM reads two things from the method: the features its
map is computed from (``cream_features``) and its own map (``localization_maps``, which guides
Eq.3 with the ground-truth class during training and is ``M_c`` in Eq.10-12 at inference).
:class:`CREAM` (``method.name: cream``) is the mixin on :class:`~wsol.methods.cam.CAM`.

Public API::

    cam_guided_mask(cams, tau=0.2) -> mask                          # Eq.3
    masked_mean_features(features, mask) -> f_fg, f_bg, valid_fg, valid_bg   # Eq.4 averages
    momentum_update(emb, feats, labels, valid, gamma, reduce=None) -> counts  # Eq.4 update
    em_reactivation(features, mu_init, scale, iterations, pi_init) -> Z, mu, pi  # Eq.5-9
    calibrate(Z, region) -> Z_hat                                   # Eq.10-11
    fuse(Z_hat, cam) -> M_hat                                       # Eq.12
    CreamAddon, with_cream(method_cls) -> method_cls + CREAM, CREAM_OPTIONS
    CREAM(backbone, tau=0.2, gamma=0.8, scale=8.0, iterations=2, stage="fused", ...)
    CREAM.from_cam(cam_method_or_backbone, **kw)
    fit_embeddings(method, loader, device, mode="mean", progress=True, reduce_fn=None)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from wsol.errors import ConfigError
from wsol.methods.base import WSOLMethod, single_process_reduce
from wsol.methods.cam import CAM
from wsol.methods.registry import register_method
from wsol.models.base import WSOLBackbone
from wsol.utils.checks import check_choice
from wsol.utils.maps import minmax_per_image

__all__ = [
    "CREAM",
    "CREAM_OPTIONS",
    "STAGES",
    "CreamAddon",
    "with_cream",
    "calibrate",
    "cam_guided_mask",
    "em_reactivation",
    "fit_embeddings",
    "fuse",
    "masked_mean_features",
    "minmax_normalize",
    "momentum_update",
]

#: Localization map stages of :class:`CREAM` (Table 5 rows 1-3).
STAGES = ("cam", "calibrated", "fused")
_FEATURE_NORMALIZATIONS = ("none", "l2")
_PI_INITS = ("uniform", "cam")
_SKIP_EMPTY = ("both", "each")
_EPS = 1e-12


# --------------------------------------------------------------------------------------------
# Pure batched functions
# --------------------------------------------------------------------------------------------

def minmax_normalize(maps: Tensor) -> Tensor:
    """Per-image min-max normalization (:func:`wsol.utils.maps.minmax_per_image`): NaN or
    constant maps become zeros, as in the evaluation protocol (method-spec §1)."""
    return minmax_per_image(maps)


def cam_guided_mask(cams: Tensor, tau: float = 0.2) -> Tensor:
    """Eq.3: ``B = 1[N(M_c) > tau]`` with ``N`` the per-image min-max normalization.

    Args:
        cams: ``(B, h, w)`` raw class activation maps (one class per image).
        tau: threshold on the normalized map (0.2, "as suggested in [38]").

    Returns:
        ``(B, h, w)`` bool mask. A constant or NaN map normalizes to zeros, so its mask is
        empty (all False) for any ``tau >= 0``.
    """
    if cams.ndim != 3:
        raise ValueError(f"cams must have shape (B, h, w), got {tuple(cams.shape)}")
    if not math.isfinite(tau):
        raise ValueError(f"tau must be a finite number, got {tau}")
    return minmax_normalize(cams) > tau


def masked_mean_features(features: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Eq.4's spatial averages ``f_fg = sum_i B_i f_i / |B|``, ``f_bg = sum_i (1-B_i) f_i / |1-B|``.

    Args:
        features: ``(B, D, h, w)`` (or ``(B, D, N)``) feature maps.
        mask: ``(B, h, w)`` (or ``(B, N)``) bool foreground mask ``B``.

    Returns:
        ``(f_fg, f_bg, valid_fg, valid_bg)``: two ``(B, D)`` float tensors and two ``(B,)`` bool
        tensors; ``valid_fg[b]`` is False when image ``b``'s mask is empty (its ``f_fg`` is then
        zero), ``valid_bg[b]`` when the mask covers every pixel.
    """
    if features.ndim not in (3, 4):
        raise ValueError(f"features must have shape (B, D, h, w) or (B, D, N), "
                         f"got {tuple(features.shape)}")
    flat = features.flatten(2)
    m = mask.reshape(mask.shape[0], -1)
    if m.shape != (flat.shape[0], flat.shape[2]):
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not match features of shape "
                         f"{tuple(features.shape)}")
    flat = flat.float()
    fg = m.to(flat.dtype)
    count_fg = fg.sum(dim=1)                                    # (B,)
    count_bg = flat.shape[2] - count_fg
    sum_all = flat.sum(dim=2)                                   # (B, D)
    sum_fg = torch.bmm(flat, fg.unsqueeze(2)).squeeze(2)        # (B, D)
    sum_bg = sum_all - sum_fg
    f_fg = sum_fg / count_fg.clamp_min(1.0).unsqueeze(1)
    f_bg = sum_bg / count_bg.clamp_min(1.0).unsqueeze(1)
    return f_fg, f_bg, count_fg > 0, count_bg > 0


@torch.no_grad()
def momentum_update(emb: Tensor, feats: Tensor, labels: Tensor, valid: Tensor,
                    gamma: float, reduce: Callable[[Tensor], None] | None = None) -> Tensor:
    """Eq.4 momentum rule, batched: ``e_c <- gamma e_c + (1 - gamma) mean_{b: y_b = c} f_b``.

    The mean runs over the valid samples of class ``c`` in the batch (all ranks together: the
    per-class sums and counts are summed in place by ``reduce`` before the update, so every rank
    applies the identical update; ``None`` = one process, no reduction). Under torch.distributed
    pass ``wsol.engine.distributed.all_reduce_sum``; methods get it as their ``reduce_fn``.
    Classes with no valid sample are left unchanged. ``gamma = 0`` copies the batch mean,
    ``gamma = 1`` leaves the buffer unchanged. ``emb`` is updated in place.

    Args:
        emb: ``(C, D)`` embedding buffer.
        feats: ``(B, D)`` per-sample features (``f_fg`` or ``f_bg``).
        labels: ``(B,)`` int class of each sample.
        valid: ``(B,)`` bool, samples that take part.
        gamma: momentum coefficient in ``[0, 1]``.
        reduce: in-place sum over processes of a tensor (every rank must call it).

    Returns:
        ``(C,)`` int64 number of samples (over all ranks) that updated each class.
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    if emb.ndim != 2 or feats.ndim != 2 or feats.shape[1] != emb.shape[1]:
        raise ValueError(f"expected emb (C, D) and feats (B, D) with the same D, got "
                         f"{tuple(emb.shape)} and {tuple(feats.shape)}")
    if labels.shape != (feats.shape[0],) or valid.shape != (feats.shape[0],):
        raise ValueError(f"labels {tuple(labels.shape)} and valid {tuple(valid.shape)} must both "
                         f"have shape ({feats.shape[0]},)")
    num_classes = emb.shape[0]
    labels = labels.to(device=emb.device, dtype=torch.long)
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    w = valid.to(device=emb.device, dtype=emb.dtype)
    # One reduction carries sums and counts: (C, D + 1).
    stats = emb.new_zeros(num_classes, emb.shape[1] + 1)
    weighted = torch.cat([feats.to(device=emb.device, dtype=emb.dtype) * w.unsqueeze(1),
                          w.unsqueeze(1)], dim=1)
    stats.index_add_(0, labels, weighted)
    (reduce or single_process_reduce)(stats)
    counts = stats[:, -1]
    present = counts > 0
    mean = stats[:, :-1] / counts.clamp_min(1.0).unsqueeze(1)
    updated = gamma * emb + (1.0 - gamma) * mean
    emb.copy_(torch.where(present.unsqueeze(1), updated, emb))
    return counts.round().to(torch.long)


def _normalize_rows(x: Tensor, dim: int) -> Tensor:
    return x / x.norm(dim=dim, keepdim=True).clamp_min(_EPS)


def em_reactivation(features: Tensor, mu_init: Tensor, scale: float = 8.0, iterations: int = 2,
                    pi_init: Tensor | None = None,
                    feature_normalization: str = "none") -> tuple[Tensor, Tensor, Tensor]:
    """Eq.5-9: EM for a two-component cosine mixture over the pixel features of each image.

    Model (Eq.6-7): ``p(f) = sum_k pi_k p_k(f)``, ``p_k(f) ∝ exp(s cos(f, mu_k))``, ``k in {0, 1}``
    (index 0 = the component initialized from the foreground embedding, 1 = background).

    One *iteration* is an E-step followed by an M-step:

    - E-step (Eq.8): ``z_i^k = pi_k p_k(f_i) / sum_j pi_j p_j(f_i)
      = softmax_k(s cos(f_i, mu_k) + log pi_k)`` (log-sum-exp inside ``softmax``).
    - M-step (Eq.9): ``mu_k = sum_i z_i^k f_i / sum_i z_i^k``, ``pi_k = N_k / N`` with
      ``N_k = sum_i z_i^k``.

    ``Z`` is the output of the *last E-step*: with ``T = 1`` pixels are assigned with the
    initial (learned) embeddings, i.e. ``Z = E(mu_init, pi_init)``; with ``T = 2`` the
    centroids are refined once by an M-step and pixels are re-assigned,
    ``Z = E(M(E(mu_init)))``. The final M-step of iteration ``T`` does not change ``Z``; it only
    produces the returned ``(mu, pi)``, the parameters after ``T`` full iterations.

    Args:
        features: ``(B, D, N)`` (or ``(B, D, h, w)``) pixel features.
        mu_init: ``(B, 2, D)`` initial centroids (``e_fg^c``, ``e_bg^c`` of each image's class).
        scale: ``s`` in Eq.7 (8 in the paper). ``s -> 0`` makes ``Z`` equal the mixing weights.
        iterations: ``T >= 1``.
        pi_init: ``(B, 2)`` or ``(2,)`` initial mixing weights summing to 1; ``None`` ->
            ``(1/2, 1/2)`` [inferred].
        feature_normalization: [inferred] what the M-step averages: ``"none"`` the raw features
            as Eq.9 is written (the E-step's cosine is unaffected by the centroids' norm),
            ``"l2"`` the unit-normalized features (spherical k-means style centroids).

    Returns:
        ``(Z, mu, pi)``: ``(B, 2, N)`` responsibilities (sum to 1 over dim 1), ``(B, 2, D)``
        centroids and ``(B, 2)`` mixing weights after ``T`` iterations. Computed in float32
        (float64 if the inputs are float64).
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1 (T = 0 means plain CAM), got {iterations}")
    if feature_normalization not in _FEATURE_NORMALIZATIONS:
        raise ValueError(f"feature_normalization must be one of {_FEATURE_NORMALIZATIONS}, "
                         f"got {feature_normalization!r}")
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"scale must be a finite number >= 0, got {scale}")
    if features.ndim == 4:
        features = features.flatten(2)
    if features.ndim != 3:
        raise ValueError(f"features must have shape (B, D, N), got {tuple(features.shape)}")
    bsz, dim, npix = features.shape
    if mu_init.shape != (bsz, 2, dim):
        raise ValueError(f"mu_init must have shape ({bsz}, 2, {dim}), got {tuple(mu_init.shape)}")
    dtype = torch.float64 if features.dtype == torch.float64 else torch.float32
    feats = features.to(dtype)
    # cos(f_i, mu_k) = (mu_k / |mu_k|) . f_i / |f_i|: only the per-pixel norms are computed, the
    # (B, D, N) features are never copied or normalized.
    inv_norm = feats.norm(dim=1).clamp_min(_EPS).reciprocal().unsqueeze(1)     # (B, 1, N)
    mu = mu_init.to(device=feats.device, dtype=dtype)
    if pi_init is None:
        pi = feats.new_full((bsz, 2), 0.5)
    else:
        pi = pi_init.to(device=feats.device, dtype=dtype).expand(bsz, 2)
        if (pi < 0).any() or not torch.allclose(pi.sum(dim=1), pi.new_ones(bsz)):
            raise ValueError("pi_init must be non-negative and sum to 1 over the two components")
    tiny = torch.finfo(dtype).tiny
    z = feats.new_empty(bsz, 2, npix)
    for _ in range(iterations):
        # E-step (Eq.8): (B, 2, D) @ (B, D, N) -> (B, 2, N) cosines, times s, plus log pi.
        logits = torch.bmm(_normalize_rows(mu, dim=2), feats).mul_(inv_norm).mul_(scale)
        logits.add_(pi.clamp_min(tiny).log().unsqueeze(2))
        z = torch.softmax(logits, dim=1)
        # M-step (Eq.9): (B, 2, N) @ (B, N, D) -> (B, 2, D); "l2" averages f_i / |f_i|.
        n_k = z.sum(dim=2)                                                      # (B, 2)
        weights = z if feature_normalization == "none" else z * inv_norm
        mu = torch.bmm(weights, feats.transpose(1, 2)) / n_k.clamp_min(_EPS).unsqueeze(2)
        pi = n_k / npix
    return z, mu, pi


def calibrate(z: Tensor, region: Tensor) -> Tensor:
    """Eq.10-11: pick the component that is more "foreground" on the CAM-guided region.

    ``P_k = sum_{i in B} z_i^k / |B|`` (Eq.10) and ``Z_hat = Z^0 if P_0 >= P_1 else Z^1``
    (Eq.11), with component 0 the one initialized from the foreground embedding.

    Tie and empty region [inferred]: ``P_0 == P_1`` (including an empty region ``B``, where both
    means are taken as 0) selects component 0, the foreground-initialized one. Since ``z^0 + z^1
    = 1``, ties only happen when the region's mean responsibility is exactly 1/2.

    Args:
        z: ``(B, 2, N)`` responsibilities from :func:`em_reactivation`.
        region: ``(B, N)`` (or ``(B, h, w)``) bool CAM-guided region (Eq.3 mask).

    Returns:
        ``(B, N)`` calibrated foreground map in [0, 1].
    """
    if z.ndim != 3 or z.shape[1] != 2:
        raise ValueError(f"z must have shape (B, 2, N), got {tuple(z.shape)}")
    reg = region.reshape(region.shape[0], -1)
    if reg.shape != (z.shape[0], z.shape[2]):
        raise ValueError(f"region of shape {tuple(region.shape)} does not match z of shape "
                         f"{tuple(z.shape)}")
    # Both P_k share the denominator |B|, so comparing the sums is comparing the means.
    sums = torch.bmm(z, reg.to(z.dtype).unsqueeze(2)).squeeze(2)      # (B, 2)
    keep_first = sums[:, 0] >= sums[:, 1]
    return torch.where(keep_first.unsqueeze(1), z[:, 0], z[:, 1])


def fuse(z_hat: Tensor, cam: Tensor) -> Tensor:
    """Eq.12: ``M_hat = Z_hat + N(M_c)``, ``N`` the per-image min-max normalization.

    Both terms are at feature resolution and in [0, 1] [inferred], so ``M_hat`` is in [0, 2]
    (the localization code normalizes it again after upsampling). ``z_hat`` may be ``(B, N)``;
    the result has ``cam``'s shape.
    """
    if z_hat.shape[0] != cam.shape[0] or z_hat.numel() != cam.numel():
        raise ValueError(f"z_hat of shape {tuple(z_hat.shape)} does not match cam of shape "
                         f"{tuple(cam.shape)}")
    return z_hat.reshape(cam.shape) + minmax_normalize(cam).to(z_hat.dtype)


# --------------------------------------------------------------------------------------------
# The add-on and CREAM on CAM
# --------------------------------------------------------------------------------------------

#: CREAM's keyword arguments and defaults (everything else goes to the wrapped method).
CREAM_OPTIONS: dict[str, Any] = {
    "tau": 0.2, "gamma": 0.8, "scale": 8.0, "iterations": 2, "stage": "fused", "init_seed": 0,
    "init_std": 1.0, "feature_normalization": "none", "pi_init": "uniform", "skip_empty": "both",
    "inference_tau": None,
}


def check_em_options(who: str, *, tau: float, scale: float, iterations: int, stage: str,
                     feature_normalization: str, pi_init: str) -> None:
    """Validate the inference options shared by CREAM and training-free CREAM (Eq.3 ``tau``,
    Eq.7 ``scale``, ``T``, the map stage, the M-step's features, the initial mixing weights);
    a bad value is a :class:`~wsol.errors.ConfigError` naming ``who`` and the option."""
    if not math.isfinite(tau):
        raise ConfigError(f"{who}: tau must be finite, got {tau}")
    if not math.isfinite(scale) or scale < 0:
        raise ConfigError(f"{who}: scale must be a finite number >= 0, got {scale}")
    if isinstance(iterations, bool) or int(iterations) != iterations or iterations < 0:
        raise ConfigError(f"{who}: iterations must be an integer >= 0, got {iterations}")
    check_choice(who, "stage", stage, STAGES)
    check_choice(who, "feature_normalization", feature_normalization, _FEATURE_NORMALIZATIONS)
    check_choice(who, "pi_init", pi_init, _PI_INITS)


class CreamAddon(WSOLMethod):
    """CREAM on top of a method (method-spec §2, §6 "CREAM on top"): a mixin placed before the
    method's class (:func:`with_cream`); see the module docstring.

    Training: the method's own loss (inherited untouched). :meth:`update_state` first runs the
    method's own update, then maintains the context embeddings (Eq.3-4) on
    ``cream_features(outputs)`` with the Eq.3 mask of the method's own map for the ground-truth
    class. Inference: :meth:`localization_maps` runs EM re-activation, calibration and fusion
    (Eq.5-12) on the same features, with the method's own map as ``M_c``.

    Args (keywords; the others go to the method):
        tau: CAM threshold of Eq.3 (training mask and calibration region), 0.2.
        inference_tau: [inferred] the Eq.3 threshold of the inference calibration region (Eq.11)
            and of ``pi_init="cam"`` when it should differ from the training ``tau``; ``None``
            (default) uses ``tau``, the paper's single value. The embeddings are learned with
            ``tau`` either way, so a value selected on val for inference can be shipped next to
            the training one (the CUB-subset configs: training 0.2, inference 0.3).
        gamma: momentum of Eq.4, 0.8 (Table 8).
        scale: ``s`` of Eq.7, 8.
        iterations: EM iterations ``T`` (Table 7; 0 = the method's plain map). See
            :func:`em_reactivation`.
        stage: which map :meth:`localization_maps` returns: ``"cam"`` (the method's own map;
            Eq.1 for CAM), ``"calibrated"`` (Eq.11) or ``"fused"`` (Eq.12, default).
        init_seed: seed of the dedicated ``torch.Generator`` that draws the initial embeddings,
            so every rank (and every rebuild) starts from the same buffers and the global RNG
            (hence the method's training) is untouched.
        init_std: [inferred] the embeddings start as i.i.d. ``N(0, init_std^2)`` entries (the
            paper only says "randomly initialized"; with cosine similarity only the direction
            matters at inference, the scale sets how fast the momentum rule forgets the init).
        feature_normalization: [inferred] ``"none"`` (Eq.9 literally: M-step on raw features) or
            ``"l2"`` (M-step on unit features). See :func:`em_reactivation`.
        pi_init: [inferred] initial mixing weights: ``"uniform"`` (1/2, 1/2) or ``"cam"``
            (``pi_fg = |B| / N`` from the Eq.3 mask, clamped to [0.01, 0.99]).
        skip_empty: [inferred] which updates to skip for a sample whose Eq.3 mask has no
            foreground (constant/NaN CAM) or no background pixel: ``"both"`` skips the sample
            for both embeddings (its CAM gave no split), ``"each"`` still updates the embedding
            whose part is non-empty.

    Buffers (saved in ``state_dict`` under the method's own top-level keys, never trained):
    ``fg_embeddings``, ``bg_embeddings`` ``(C, D)`` float32 with ``D = cream_feature_dim``;
    ``update_count`` ``(2, C)`` int64, the number of samples absorbed by each class's foreground
    (row 0) and background (row 1) embedding (0 = still the random init). The distributed sum
    is ``self.reduce_fn`` (set by the engine).
    """

    with_cream = True
    stages = STAGES

    def __init__(self, backbone: WSOLBackbone, *, tau: float = 0.2, gamma: float = 0.8,
                 scale: float = 8.0, iterations: int = 2, stage: str = "fused",
                 init_seed: int = 0, init_std: float = 1.0, feature_normalization: str = "none",
                 pi_init: str = "uniform", skip_empty: str = "both",
                 inference_tau: float | None = None, **method_kwargs: Any) -> None:
        super().__init__(backbone, **method_kwargs)
        if self.maps_need_grad:
            raise ValueError(f"CREAM cannot be added to {self.name!r}: its map needs gradients "
                             "(CREAM's Eq.3 guide is computed without them)")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"CREAM: gamma must be in [0, 1], got {gamma}")
        check_em_options("CREAM", tau=tau, scale=scale, iterations=iterations, stage=stage,
                         feature_normalization=feature_normalization, pi_init=pi_init)
        if inference_tau is not None and not math.isfinite(inference_tau):
            raise ConfigError(f"CREAM: inference_tau must be finite or null, got {inference_tau}")
        if skip_empty not in _SKIP_EMPTY:
            raise ValueError(f"CREAM: skip_empty must be one of {_SKIP_EMPTY}, got {skip_empty!r}")
        if not init_std > 0:
            raise ValueError(f"CREAM: init_std must be > 0, got {init_std}")
        self.tau = float(tau)
        self.inference_tau = self.tau if inference_tau is None else float(inference_tau)
        self.gamma = float(gamma)
        self.scale = float(scale)
        self.iterations = int(iterations)
        self.stage = stage
        self.init_seed = int(init_seed)
        self.init_std = float(init_std)
        self.feature_normalization = feature_normalization
        self.pi_init = pi_init
        self.skip_empty = skip_empty
        num_classes, dim = int(backbone.num_classes), int(self.cream_feature_dim)
        gen = torch.Generator().manual_seed(self.init_seed)
        init = torch.randn(2, num_classes, dim, generator=gen) * self.init_std
        self.register_buffer("fg_embeddings", init[0].clone())
        self.register_buffer("bg_embeddings", init[1].clone())
        self.register_buffer("update_count", torch.zeros(2, num_classes, dtype=torch.long))

    def extra_repr(self) -> str:
        return (f"method={self.name}, cream: tau={self.tau}, "
                f"inference_tau={self.inference_tau}, gamma={self.gamma}, "
                f"scale={self.scale}, iterations={self.iterations}, stage={self.stage!r}, "
                f"feature_normalization={self.feature_normalization!r}, "
                f"pi_init={self.pi_init!r}, skip_empty={self.skip_empty!r}")

    def method_maps(self, outputs: dict[str, Tensor], classes: Tensor) -> Tensor:
        """The wrapped method's own raw ``(B, h, w)`` map (``M_c`` of Eq.3 and Eq.10-12)."""
        return super().localization_maps(outputs, classes)

    # ---------------------------------------------------------------- training (Eq.3-4)
    def _batch_means(self, outputs: dict[str, Tensor],
                     labels: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Eq.3 mask from the method's map for the GT class, then Eq.4's averages and flags.

        Pixels outside ``cream_valid_pixels`` (if any) belong to neither part.
        """
        feats = self.cream_features(outputs).detach()
        cams = self.method_maps(outputs, labels).detach()
        if cams.shape != (feats.shape[0], *feats.shape[2:]):
            raise ValueError(f"{self.name}: map of shape {tuple(cams.shape)} does not match the "
                             f"CREAM features of shape {tuple(feats.shape)}")
        mask = cam_guided_mask(cams, self.tau)
        valid = self.cream_valid_pixels(outputs, feats)
        if valid is None:
            f_fg, f_bg, valid_fg, valid_bg = masked_mean_features(feats, mask)
        else:
            f_fg, _, valid_fg, _ = masked_mean_features(feats, mask & valid)
            f_bg, _, valid_bg, _ = masked_mean_features(feats, ~mask & valid)
        if self.skip_empty == "both":
            valid_fg = valid_bg = valid_fg & valid_bg
        return f_fg, f_bg, valid_fg, valid_bg

    @torch.no_grad()
    def update_state(self, outputs: dict[str, Tensor], labels: Tensor) -> None:
        """The method's own update, then Eq.3-4 on its (detached) features with the GT class."""
        super().update_state(outputs, labels)
        labels = labels.to(self.fg_embeddings.device)
        f_fg, f_bg, valid_fg, valid_bg = self._batch_means(outputs, labels)
        n_fg = momentum_update(self.fg_embeddings, f_fg, labels, valid_fg, self.gamma,
                               self.reduce_fn)
        n_bg = momentum_update(self.bg_embeddings, f_bg, labels, valid_bg, self.gamma,
                               self.reduce_fn)
        self.update_count[0] += n_fg
        self.update_count[1] += n_bg

    @torch.no_grad()
    def _empty_update(self) -> None:
        """Take part in the distributed reductions of :meth:`update_state` with no sample."""
        for row, emb in enumerate((self.fg_embeddings, self.bg_embeddings)):
            none = torch.zeros(0, dtype=torch.long, device=emb.device)
            self.update_count[row] += momentum_update(emb, emb.new_zeros(0, emb.shape[1]), none,
                                                      none.bool(), self.gamma, self.reduce_fn)

    # ---------------------------------------------------------------- inference (Eq.5-12)
    def _stage_maps(self, outputs: dict[str, Tensor], classes: Tensor,
                    upto: str) -> dict[str, Tensor]:
        cams = self.method_maps(outputs, classes)
        maps = {"cam": cams}
        if upto == "cam" or self.iterations == 0:
            return maps
        features = self.cream_features(outputs)
        bsz, _, h, w = features.shape
        classes = classes.to(self.fg_embeddings.device)
        mu_init = torch.stack([self.fg_embeddings[classes], self.bg_embeddings[classes]], dim=1)
        region = cam_guided_mask(cams, self.inference_tau).reshape(bsz, h * w)
        pi = None
        if self.pi_init == "cam":
            frac = region.float().mean(dim=1).clamp(0.01, 0.99)
            pi = torch.stack([frac, 1.0 - frac], dim=1)
        z, _, _ = em_reactivation(features.flatten(2), mu_init, self.scale, self.iterations,
                                  pi, self.feature_normalization)
        z_hat = calibrate(z, region).reshape(bsz, h, w)
        maps["calibrated"] = z_hat
        if upto == "fused":
            maps["fused"] = fuse(z_hat, cams)
        return maps

    def localization_maps(self, outputs: dict[str, Tensor], classes: Tensor) -> Tensor:
        """Raw ``(B, h, w)`` map of ``self.stage`` for ``classes[b]`` (the method's own map when
        ``T = 0`` or ``stage = "cam"``)."""
        maps = self._stage_maps(outputs, classes, self.stage)
        return maps[self.stage] if self.stage in maps else maps["cam"]

    def maps_by_stage(self, outputs: dict[str, Tensor], classes: Tensor) -> dict[str, Tensor]:
        """All three stages in one pass (Table 5 ablation): ``{"cam", "calibrated", "fused"}``.

        With ``iterations = 0`` only ``"cam"`` is present.
        """
        return self._stage_maps(outputs, classes, "fused")


_WITH_CREAM: dict[type, type] = {}


def with_cream(method_cls: type[WSOLMethod]) -> type[WSOLMethod]:
    """``method_cls`` with :class:`CreamAddon` in front (cached: one class per method)."""
    if not (isinstance(method_cls, type) and issubclass(method_cls, WSOLMethod)):
        raise ValueError(f"with_cream expects a WSOLMethod subclass, got {method_cls!r}")
    if method_cls.with_cream:
        raise ValueError(f"method {method_cls.name!r} already carries CREAM")
    if method_cls.maps_need_grad:
        raise ValueError(f"CREAM cannot be added to {method_cls.name!r}: its map needs "
                         "gradients (CREAM's Eq.3 guide is computed without them)")
    if method_cls not in _WITH_CREAM:
        _WITH_CREAM[method_cls] = type(
            f"{method_cls.__name__}WithCREAM", (CreamAddon, method_cls),
            {"__module__": method_cls.__module__,
             "__doc__": f"{method_cls.__name__} with CREAM (see wsol.methods.cream.CreamAddon)."})
    return _WITH_CREAM[method_cls]


@register_method
class CREAM(CreamAddon, CAM):
    """Class re-activation mapping on top of CAM (method-spec §2): ``method.name: cream``.

    Training loss = CAM's cross-entropy; Eq.3-4 on the backbone's feature map F with the Eq.1
    CAM; inference Eq.5-12 on F. Takes the :class:`CreamAddon` keywords.
    """

    name = "cream"

    def __init__(self, backbone: WSOLBackbone, tau: float = 0.2, gamma: float = 0.8,
                 scale: float = 8.0, iterations: int = 2, stage: str = "fused",
                 init_seed: int = 0, init_std: float = 1.0, feature_normalization: str = "none",
                 pi_init: str = "uniform", skip_empty: str = "both",
                 inference_tau: float | None = None) -> None:
        super().__init__(backbone, tau=tau, gamma=gamma, scale=scale, iterations=iterations,
                         stage=stage, init_seed=init_seed, init_std=init_std,
                         feature_normalization=feature_normalization, pi_init=pi_init,
                         skip_empty=skip_empty, inference_tau=inference_tau)

    @classmethod
    def from_cam(cls, cam_method_or_backbone: WSOLMethod | WSOLBackbone, **kwargs: Any) -> CREAM:
        """CREAM sharing (not copying) the backbone of a trained CAM method or a backbone.

        The embeddings start at their random init: fill them with :func:`fit_embeddings`.
        """
        if isinstance(cam_method_or_backbone, WSOLMethod):
            backbone = cam_method_or_backbone.backbone
        elif isinstance(cam_method_or_backbone, WSOLBackbone):
            backbone = cam_method_or_backbone
        else:
            raise ValueError(f"CREAM.from_cam expects a WSOLMethod or WSOLBackbone, got "
                             f"{type(cam_method_or_backbone).__name__}")
        method = cls(backbone, **kwargs)
        param = next(backbone.parameters(), None)
        return method.to(param.device) if param is not None else method


# --------------------------------------------------------------------------------------------
# Plug-in use: embeddings for an existing CAM model
# --------------------------------------------------------------------------------------------

_FIT_MODES = ("mean", "momentum")


@torch.no_grad()
def fit_embeddings(method: CreamAddon, loader: Iterable[dict[str, Any]],
                   device: torch.device | str, mode: str = "mean", progress: bool = True,
                   reduce_fn: Callable[[Tensor], None] | None = None) -> CreamAddon:
    """Compute the context embeddings of an already trained model of any method, without
    retraining (``method`` is that method with CREAM, e.g. ``build_method(name, backbone,
    cream=True)`` holding the trained weights).

    One pass over ``loader`` (batches of dicts with ``"image"`` ``(B, 3, H, W)`` and ``"label"``
    ``(B,)``; use the train split with evaluation transforms) with the model in eval mode, on
    the method's CREAM features guided by its own map for the GT class:

    - ``mode="mean"``: ``e_fg^c = mean over the split's valid samples of class c of f_fg``
      (Eq.4's averages), likewise ``e_bg^c``: the fixed point of the momentum rule in
      expectation; deterministic and independent of the batch order. Sums and counts are
      reduced over distributed ranks once at the end. Classes without a valid sample keep
      their current embedding. ``update_count`` is set to the per-class sample counts.
    - ``mode="momentum"``: the training rule (:meth:`CreamAddon.update_state`) applied batch by
      batch, starting from the current buffers (order dependent). Under torch.distributed every
      rank must call it; before each step the ranks sum a "has a batch" flag, and ranks whose
      shard is exhausted join the remaining reductions with empty updates (uneven shards).

    ``reduce_fn`` (in-place sum over ranks) defaults to ``method.reduce_fn`` (one process unless
    the caller set it). The model's train/eval mode is restored afterwards. Returns ``method``.
    """
    if mode not in _FIT_MODES:
        raise ValueError(f"fit_embeddings: mode must be one of {_FIT_MODES}, got {mode!r}")
    if not getattr(method, "with_cream", False):
        raise ValueError(f"fit_embeddings expects a method with CREAM, got "
                         f"{type(method).__name__}")
    device = torch.device(device)
    reduce = reduce_fn or method.reduce_fn
    saved_reduce = method.reduce_fn
    was_training = method.training
    method.to(device).eval()
    method.reduce_fn = reduce
    num_classes, dim = method.fg_embeddings.shape
    stats = torch.zeros(2, num_classes, dim + 1, dtype=torch.float64, device=device)
    batches: Iterable[dict[str, Any]] = loader
    if progress:
        from tqdm import tqdm

        batches = tqdm(loader, desc=f"CREAM embeddings ({mode})", unit="batch")
    iterator = iter(batches)
    try:
        index = 0
        while True:
            batch = next(iterator, None)
            if mode == "momentum":
                flag = torch.tensor([0.0 if batch is None else 1.0], device=device)
                reduce(flag)
                if float(flag) == 0.0:
                    break
                if batch is None:
                    method._empty_update()
                    continue
            elif batch is None:
                break
            if not isinstance(batch, dict) or "image" not in batch or "label" not in batch:
                raise ValueError(f"fit_embeddings: batch {index} is not a dict with 'image' and "
                                 f"'label' keys (got {type(batch).__name__})")
            images = batch["image"].to(device, non_blocking=True)
            labels = torch.as_tensor(batch["label"]).to(device=device, dtype=torch.long)
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
                raise ValueError(f"fit_embeddings: batch {index} has labels outside "
                                 f"[0, {num_classes})")
            index += 1
            outputs = method(images)
            if mode == "momentum":
                method.update_state(outputs, labels)
                continue
            f_fg, f_bg, valid_fg, valid_bg = method._batch_means(outputs, labels)
            for row, (f, valid) in enumerate(((f_fg, valid_fg), (f_bg, valid_bg))):
                w = valid.to(torch.float64).unsqueeze(1)
                stats[row].index_add_(0, labels, torch.cat([f.to(torch.float64) * w, w], dim=1))
    finally:
        method.train(was_training)
        method.reduce_fn = saved_reduce
    if mode == "mean":
        reduce(stats)
        counts = stats[:, :, -1]
        means = stats[:, :, :-1] / counts.clamp_min(1.0).unsqueeze(2)
        means = means.to(method.fg_embeddings.dtype)
        for row, emb in enumerate((method.fg_embeddings, method.bg_embeddings)):
            present = (counts[row] > 0).unsqueeze(1)
            emb.copy_(torch.where(present, means[row], emb))
        method.update_count.copy_(counts.round().to(torch.long))
    return method
