"""B-CAM: background-aware classification activation maps (Zhu et al., arXiv 2112.14379).

Method-spec §3. Tags: **[paper]** the abstract, **[code]** the official implementation
(zh460045050/BCAM, ``SingleObjectLocalization``), **[inferred]** our choice where both are silent.

Architecture. ``F`` (B, D, h, w) is the backbone's feature map (``forward_features``), ``f_i`` its
column at pixel ``i``. Two aggregators ``A`` and ``B`` are 1x1 convolutions ``D -> K`` (K = 100
heads), zero-initialized so that both start as global average pooling [code]. Per head ``k`` the
attention is a softmax over the ``N = h*w`` pixels::

    a_{k,i} = softmax_i((A F)_{k,i}),      b_{k,i} = softmax_i((B F)_{k,i})
    z_o = mean_k sum_i a_{k,i} f_i,         z_b = mean_k sum_i b_{k,i} f_i

(computed as ``sum_i abar_i f_i`` with ``abar_i = mean_k a_{k,i}``, which is the same sum).
``W_o`` is the backbone's own classifier (so CAM checkpoints load and
``backbone.class_activation_maps`` keeps meaning "object CAM"); ``W_b`` is a new linear layer
``D -> C``. A prime marks an aggregate whose *value* path ``F`` is detached while the attention
stays live [code]::

    "logits"          = W_o z_o    object classifier, object feature (the Top-1 output)
    "logits_back"     = W_b z_b'   background classifier, background feature
    "logits_rev"      = W_b z_o'   background classifier, object feature
    "logits_back_rev" = W_o z_b    object classifier, background feature

(the keys are the official code's names). Stagger classification loss [paper][code], with ``y``
the one-hot label and MLSM the multilabel soft margin loss (mean over classes)::

    L = r_ff CE(W_o z_o, y) + r_fb MLSM(W_b z_o', 1 - y) + r_bf MLSM(W_b z_b', 1)
        + r_bb MLSM(W_o z_b, 0)

Localization. ``map_type="gradient"`` [code: inference.py ``Generator``]: the score for class
``c`` is ``s_fg = (W_o z_o)_c - (W_b z_o')_c`` for the foreground and
``s_bg = (W_b z_b')_c - (W_o z_b)_c`` for the background (variants "cub", "ilsvrc"); the
"openimages" variant uses ``(W_o z_o)_c`` and ``(W_b z_b')_c`` alone. ``G = ds/dF`` is the
plain gradient with respect to the feature map (through the live paths only, as in the
official backward hook on the target layer), and with ``g_d = mean_{x,y} G_d``::

    "cub":        M = sum_d G_d * g_d                (gradient times its own channel mean)
    "ilsvrc":     M = sum_d G_d * ReLU(g_d)
    "openimages": M = sum_d F_d * g_d                (Grad-CAM, no ReLU)

``map_type="weight"``: the per-pixel logits ``M_fg = W_o^c F + b_o^c`` and
``M_bg = W_b^c F + b_b^c`` (the image logit ``W z + b`` is the attention-weighted mean of them).

``localization_maps`` returns ``M_fg`` (eval type ``prob``: upsampled, normalized, threshold
sweep). ``localization_masks`` returns ``1[M_fg > M_bg]`` after upsampling both maps to the input
size (eval type ``mask``, threshold free; ties go to background, as the official
``argmax([back, fore])``). Normalization before comparing (``mask_normalization="auto"``):
gradient maps are compared raw (official inference.py); weight maps are min-max normalized per
image first (official ``return_cam`` path, ``normalize_tensor``). Upsampling for masks is
bilinear, ``align_corners=False`` (official ``F.interpolate``).

Large objects, few classes: why the maps invert, and the polarity check [inferred, measured].

- The "cub" gradient map is, exactly (the attention term's spatial sum is zero, so
  ``g = mean_i G_i = w_o^c / N``)::

      N M_i = abar_i ||w_o^c||^2 + (1/K) sum_k a_{k,i} (l_i - lbar_k) (A_k . w_o^c)

  with ``l_i = (w_o^c - w_b^c) . f_i`` and ``lbar_k = sum_j a_{k,j} l_j``: the object
  attention plus an attention-sensitivity term. So the foreground map is mainly *where the
  object aggregator pools*; the map inverts when the object attention sits on the background,
  not because of the sign of the channel weights.
- The stagger loss does not pin down which region is "object": cross-entropy is invariant to a
  common logit shift and the three MLSM terms are met by biases and by ``W_b`` saying "yes" to
  the other classes, so it only asks that the object branch hold the *class-discriminative*
  pixels and the background branch the pixels shared by all classes. When the object fills the
  crop and the classes share its look (CUB crops of three albatross species), the border
  context is what discriminates, and the branches swap. Measured (EfficientNet-Lite0, shipped
  config, 10 epochs, 3-class CUB crops with 40-100 % box cover, 88 test images): object
  attention inside the box on 0 of 88 images, the foreground map on 0 of 88, and the object
  classifier's own CAM on 22 of 88 (so CAM-region evidence cannot fix it); with ``W_b``
  initialized fan-in the branches swap cleanly (background attention inside on 88 of 88). The
  same recipe on 10 classes (4 epochs) is not inverted (243 of 243; numbers in
  benchmarks/notes_bcam_inversion.md). All ``K`` heads stay identical (zero init, identical
  gradients), here as in the official code.
- Since the inversion is a property of the objective, the maps are checked per image:
  ``polarity="border"`` flips the sign of the foreground and background maps of an image whose
  min-max normalized foreground map is higher, on average, on the border band (width
  ``max(1, round(0.1 min(h, w)))`` feature pixels) than inside it (the boundary prior of
  saliency detection: the border is background far more often than object). "cam" and
  "attention" compare against the CAM region ``1[N(W_o^c F) > tau]`` or the object attention
  instead (CREAM Eq.10-11 style); not recommended: B-CAM's ``W_o`` CAM is a poor reference
  (it flipped 46 % of the correct maps on the 10-class crops and 77 % on CUB). "none" is the
  official behaviour. The check uses the raw map
  at feature resolution, and :func:`wsol.metrics.inside.inside_gt_share` measures the result.
  tests/test_bcam_inversion_synthetic.py reproduces the inversion on a synthetic set (the same
  object in every class, filling most of the image, the class told by the background): inside
  share 0.15-0.27 with ``polarity="none"``, 0.85-0.93 with ``"border"`` (three seeds).

Deviations (documented, [inferred]):

- The target layer is always ``F``. Official: ResNet ``layer4`` (= F), VGG ``conv6`` (pre-ReLU,
  F is post-ReLU), Inception ``SPG_A3_1b`` (one layer before F).
- The aggregators read ``F`` for every backbone; the official VGG feeds them the 512-channel
  pre-conv6 features (its aggregators also have a bias, which a softmax over pixels ignores).
- ``W_b`` is ``nn.Linear`` (= the official 1x1 conv on a 1x1 map), He-normal (fan-out) weights
  and zero bias like the official ``initialize_weights(..., 'he')``.
"""

from __future__ import annotations

import math
import re
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from wsol.methods.base import WSOLMethod
from wsol.methods.registry import register_method
from wsol.models.base import WSOLBackbone
from wsol.utils.maps import minmax_per_image

MapType = Literal["gradient", "weight"]
Variant = Literal["cub", "ilsvrc", "openimages"]
MaskNormalization = Literal["auto", "none", "minmax"]
Polarity = Literal["none", "border", "cam", "attention"]

_MAP_TYPES = ("gradient", "weight")
_VARIANTS = ("cub", "ilsvrc", "openimages")
_MASK_NORMALIZATIONS = ("auto", "none", "minmax")
_POLARITIES = ("none", "border", "cam", "attention")
_BACKGROUND_INITS = ("fan_out", "fan_in")


class StaggerWeights(NamedTuple):
    """Weights ``(r_ff, r_fb, r_bf, r_bb)`` of the four terms of the stagger loss."""

    ff: float
    fb: float
    bf: float
    bb: float


#: Backbone-name prefix -> default stagger weights (CUB settings of the official Train.sh).
_DEFAULT_WEIGHTS: dict[str, StaggerWeights] = {
    "resnet": StaggerWeights(1.0, 1.0, 1.0, 1.0),  # [code]
    "vgg": StaggerWeights(1.0, 0.4, 0.4, 0.2),  # [code]
    "inception": StaggerWeights(1.0, 0.4, 0.4, 0.2),  # [code]
    # [inferred, chosen on val] on the CUB subset's val split (benchmarks/cub_bcam.py) 1/0.4/0.4/0.2
    # gave MaxBoxAccV2 74.7 against 66.0 for the ResNet-like 1/1/1/1 (the 1x1 head conv in front
    # of F is newly trained at 10x lr, like VGG's conv6).
    "efficientnet": StaggerWeights(1.0, 0.4, 0.4, 0.2),
    # [inferred] trained from scratch: every layer is new, as the conv6 / SPG heads of VGG and
    # Inception, so the gentler background terms keep cross-entropy dominant early on.
    "tiny_cnn": StaggerWeights(1.0, 0.4, 0.4, 0.2),
}


def _normalize_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def default_loss_weights(backbone_name: str) -> StaggerWeights:
    """Default stagger weights for a backbone name, matched by family prefix ignoring case and
    punctuation ("resnet50", "ResNet50CAM", "tiny_cnn" and "TinyCNN" all match).

    ResNet 1/1/1/1 and VGG / Inception 1/0.4/0.4/0.2 are the official CUB settings;
    EfficientNet (1/0.4/0.4/0.2, chosen on val) and tiny_cnn (1/0.4/0.4/0.2) are our choices (see
    ``_DEFAULT_WEIGHTS``).
    """
    key = _normalize_name(backbone_name)
    for prefix, weights in _DEFAULT_WEIGHTS.items():
        if key.startswith(_normalize_name(prefix)):
            return weights
    raise ValueError(f"no default B-CAM loss weights for backbone {backbone_name!r} (known "
                     f"families: {', '.join(_DEFAULT_WEIGHTS)}); pass rate_ff, rate_fb, "
                     "rate_bf and rate_bb explicitly")


def pixel_attention(aggregator: nn.Module, features: Tensor) -> Tensor:
    """Per-head softmax over pixels of a 1x1-conv aggregator: ``(B, D, h, w) -> (B, K, h*w)``."""
    scores = aggregator(features)
    return torch.softmax(scores.flatten(2), dim=-1)


def aggregate(attention: Tensor, features: Tensor) -> Tensor:
    """``z = mean_k sum_i att_{k,i} f_i``: ``(B, K, N)`` and ``(B, D, h, w)`` -> ``(B, D)``."""
    weights = attention.mean(dim=1)  # (B, N): the head average, summed over pixels = 1
    return torch.einsum("bn,bdn->bd", weights, features.flatten(2))


def _multilabel_soft_margin(logits: Tensor, target: float | Tensor) -> Tensor:
    """MLSM: ``mean_b mean_c -(t log sigma(x) + (1 - t) log sigma(-x))``."""
    target_t = torch.as_tensor(target, dtype=logits.dtype, device=logits.device)
    return nnf.multilabel_soft_margin_loss(logits, target_t.expand_as(logits))


def stagger_loss(outputs: dict[str, Tensor], labels: Tensor, weights: StaggerWeights) -> Tensor:
    """The stagger classification loss (module docstring; method-spec §3).

    ``L = r_ff CE(W_o z_o, y) + r_fb MLSM(W_b z_o', 1 - y) + r_bf MLSM(W_b z_b', 1)
    + r_bb MLSM(W_o z_b, 0)`` with ``y`` the one-hot label.
    """
    logits = outputs["logits"]
    if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"labels: expected shape ({logits.shape[0]},), got {tuple(labels.shape)}")
    if labels.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"labels: expected integer class indices, got dtype {labels.dtype}")
    num_classes = logits.shape[1]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels: class indices must lie in [0, {num_classes}), got "
                         f"min {int(labels.min())}, max {int(labels.max())}")
    labels = labels.long()
    one_hot = nnf.one_hot(labels, num_classes).to(logits.dtype)
    return (weights.ff * nnf.cross_entropy(logits, labels)
            + weights.fb * _multilabel_soft_margin(outputs["logits_rev"], 1.0 - one_hot)
            + weights.bf * _multilabel_soft_margin(outputs["logits_back"], 1.0)
            + weights.bb * _multilabel_soft_margin(outputs["logits_back_rev"], 0.0))


def gradient_weighted_map(grads: Tensor, features: Tensor, variant: str) -> Tensor:
    """Combine ``G = ds/dF`` (B, D, h, w) into a map (B, h, w); ``g_d = mean_{x,y} G_d``.

    "cub": ``sum_d G_d g_d``; "ilsvrc": ``sum_d G_d ReLU(g_d)``; "openimages": ``sum_d F_d g_d``.
    """
    channel_weights = grads.mean(dim=(2, 3), keepdim=True)
    if variant == "cub":
        return (grads * channel_weights).sum(dim=1)
    if variant == "ilsvrc":
        return (grads * channel_weights.clamp_min(0)).sum(dim=1)
    if variant == "openimages":
        return (features * channel_weights).sum(dim=1)
    raise ValueError(f"variant must be one of {_VARIANTS}, got {variant!r}")


def evidence_region(evidence: Tensor, tau: float) -> Tensor:
    """``R = 1[N(E) > tau]`` (bool, same shape), ``N`` the per-image min-max normalization."""
    return minmax_per_image(evidence) > tau


def interior_region(batch: int, size: tuple[int, int], device: torch.device | None = None,
                    fraction: float = 0.1) -> Tensor:
    """Bool ``(B, h, w)``: the pixels at least ``max(1, round(fraction * min(h, w)))`` from the
    image border (the boundary prior: the border band is background far more often than the
    object). Empty when the map is too small to have an interior."""
    h, w = int(size[0]), int(size[1])
    m = max(1, round(fraction * min(h, w)))
    region = torch.zeros((batch, h, w), dtype=torch.bool, device=device)
    if h > 2 * m and w > 2 * m:
        region[:, m:h - m, m:w - m] = True
    return region


def inverted_maps(maps: Tensor, region: Tensor) -> Tensor:
    """Bool ``(B,)``: the map is *inverted* with respect to the object-evidence region ``R``.

    With ``N`` the per-image min-max normalization, image ``b`` is inverted when
    ``mean_{i in R_b} N(M_b)_i < mean_{i notin R_b} N(M_b)_i``. An empty or full region gives
    no contrast and counts as not inverted (the map is kept), as do ties.
    """
    if maps.shape != region.shape or maps.ndim != 3:
        raise ValueError(f"maps and region must both be (B, h, w); got {tuple(maps.shape)} and "
                         f"{tuple(region.shape)}")
    m = minmax_per_image(maps).flatten(1)
    r = region.flatten(1).to(m.dtype)
    n_in = r.sum(dim=1)
    n_out = r.shape[1] - n_in
    inside = (m * r).sum(dim=1) / n_in.clamp_min(1)
    outside = (m * (1 - r)).sum(dim=1) / n_out.clamp_min(1)
    return (n_in > 0) & (n_out > 0) & (inside < outside)


def masks_from_maps(fore: Tensor, back: Tensor, size: tuple[int, int],
                    normalization: Literal["none", "minmax"] = "none") -> Tensor:
    """``1[fore > back]`` at ``size`` (bool ``(B, H, W)``); ties go to background.

    Both ``(B, h, w)`` maps are optionally min-max normalized per image, then upsampled
    bilinearly (``align_corners=False``) to ``size = (H, W)``.
    """
    if fore.shape != back.shape or fore.ndim != 3:
        raise ValueError(f"fore and back must both be (B, h, w); got {tuple(fore.shape)} and "
                         f"{tuple(back.shape)}")
    if len(size) != 2 or any(int(s) < 1 for s in size):
        raise ValueError(f"size must be (H, W) with positive entries, got {size!r}")
    if normalization == "minmax":
        fore, back = minmax_per_image(fore), minmax_per_image(back)
    elif normalization != "none":
        raise ValueError(f"normalization must be 'none' or 'minmax', got {normalization!r}")
    both = torch.stack([fore, back], dim=1).float()  # (B, 2, h, w)
    both = nnf.interpolate(both, size=(int(size[0]), int(size[1])), mode="bilinear",
                           align_corners=False)
    return both[:, 0] > both[:, 1]


@register_method
class BCAM(WSOLMethod):
    """Background-aware CAM trained with the stagger classification loss (module docstring).

    Args:
        backbone: a :class:`~wsol.models.base.WSOLBackbone`; its classifier is ``W_o``.
        num_heads: aggregator heads ``K`` (official 100).
        rate_ff, rate_fb, rate_bf, rate_bb: stagger loss weights; ``None`` takes
            :func:`default_loss_weights` of ``backbone_name``.
        backbone_name: registry name used for the default weights (falls back to the backbone's
            ``name`` attribute, then to its class name, e.g. ``TinyCNN`` -> tiny_cnn).
        map_type: "gradient" (official) or "weight" (per-pixel classifier logits).
        variant: gradient-map combination, "cub", "ilsvrc" or "openimages".
        mask_normalization: "auto" (gradient maps raw, weight maps min-max), "none", "minmax".
        polarity: per-image polarity check of the maps (module docstring, "Large objects"):
            "border" (default; the boundary prior), "cam" (the object classifier's CAM region),
            "attention" (the object aggregator's attention) or "none" (official: as computed).
        polarity_tau: threshold of the "cam"/"attention" evidence region ``1[N(E) > tau]``, 0.2.
        background_init: He-normal mode of ``W_b``: "fan_out" (official, row norm
            ``~sqrt(2D/C)``) or "fan_in" (``~sqrt(2)`` whatever the number of classes).

    Example::

        method = BCAM(create_model("resnet50", 200), backbone_name="resnet50")
        out = method(images); method.loss(out, labels).backward()
        fg = method.localization_maps(out, labels)             # (B, h, w)
        mask = method.localization_masks(out, labels, (224, 224))  # bool (B, 224, 224)
    """

    name = "bcam"
    # Gradient maps re-run the head on a detached copy of F under their own enable_grad(), so
    # the engine can run the backbone forward without building its graph.
    maps_need_grad = False

    def __init__(self, backbone: WSOLBackbone, *, num_heads: int = 100,
                 rate_ff: float | None = None, rate_fb: float | None = None,
                 rate_bf: float | None = None, rate_bb: float | None = None,
                 backbone_name: str | None = None, map_type: MapType = "gradient",
                 variant: Variant = "cub", mask_normalization: MaskNormalization = "auto",
                 polarity: Polarity = "border", polarity_tau: float = 0.2,
                 background_init: Literal["fan_out", "fan_in"] = "fan_out") -> None:
        super().__init__(backbone)
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
            raise ValueError(f"num_heads must be a positive int, got {num_heads!r}")
        if map_type not in _MAP_TYPES:
            raise ValueError(f"map_type must be one of {_MAP_TYPES}, got {map_type!r}")
        if variant not in _VARIANTS:
            raise ValueError(f"variant must be one of {_VARIANTS}, got {variant!r}")
        if mask_normalization not in _MASK_NORMALIZATIONS:
            raise ValueError(f"mask_normalization must be one of {_MASK_NORMALIZATIONS}, "
                             f"got {mask_normalization!r}")
        if polarity not in _POLARITIES:
            raise ValueError(f"polarity must be one of {_POLARITIES}, got {polarity!r}")
        if (isinstance(polarity_tau, bool) or not isinstance(polarity_tau, (int, float))
                or not 0.0 <= float(polarity_tau) < 1.0):
            raise ValueError(f"polarity_tau must be a number in [0, 1), got {polarity_tau!r}")
        self.polarity: str = polarity
        self.polarity_tau = float(polarity_tau)
        self.loss_weights = self._resolve_weights(
            backbone, backbone_name, {"ff": rate_ff, "fb": rate_fb, "bf": rate_bf, "bb": rate_bb})
        self.num_heads = num_heads
        self.map_type: str = map_type
        self.variant: str = variant
        self.mask_normalization: str = mask_normalization

        dim, num_classes = backbone.feature_dim, backbone.num_classes
        self.object_aggregator = nn.Conv2d(dim, num_heads, kernel_size=1, bias=False)
        self.background_aggregator = nn.Conv2d(dim, num_heads, kernel_size=1, bias=False)
        nn.init.zeros_(self.object_aggregator.weight)
        nn.init.zeros_(self.background_aggregator.weight)
        self.background_classifier = nn.Linear(dim, num_classes)
        if background_init not in _BACKGROUND_INITS:
            raise ValueError(f"background_init must be one of {_BACKGROUND_INITS}, got "
                             f"{background_init!r}")
        self.background_init: str = background_init
        nn.init.kaiming_normal_(self.background_classifier.weight, mode=background_init,
                                nonlinearity="relu")
        nn.init.zeros_(self.background_classifier.bias)

    @staticmethod
    def _resolve_weights(backbone: WSOLBackbone, backbone_name: str | None,
                         given: dict[str, float | None]) -> StaggerWeights:
        for key, value in given.items():
            if value is not None and (not math.isfinite(float(value)) or float(value) < 0):
                raise ValueError(f"rate_{key} must be a finite number >= 0, got {value!r}")
        explicit = {k: float(v) for k, v in given.items() if v is not None}
        if len(explicit) == len(given):
            return StaggerWeights(**explicit)
        name = backbone_name
        if name is None:
            attr = getattr(backbone, "name", None)
            name = attr if isinstance(attr, str) else type(backbone).__name__
        try:
            defaults = default_loss_weights(name)._asdict()
        except ValueError as exc:
            missing = ", ".join(f"rate_{k}" for k, v in given.items() if v is None)
            raise ValueError(f"B-CAM: {exc}; or pass backbone_name= (missing: {missing})") from None
        return StaggerWeights(**{**defaults, **explicit})

    # ------------------------------------------------------------------ forward and loss
    def head(self, features: Tensor) -> dict[str, Tensor]:
        """The four logits and the head-averaged attentions from ``F`` (module docstring)."""
        att_o = pixel_attention(self.object_aggregator, features)
        att_b = pixel_attention(self.background_aggregator, features)
        detached = features.detach()
        w_o = self.backbone.classifier_weight()
        b_o = self.backbone.classifier_bias()
        h, w = features.shape[2:]
        return {
            "logits": nnf.linear(aggregate(att_o, features), w_o, b_o),
            "logits_back": self.background_classifier(aggregate(att_b, detached)),
            "logits_rev": self.background_classifier(aggregate(att_o, detached)),
            "logits_back_rev": nnf.linear(aggregate(att_b, features), w_o, b_o),
            "object_attention": att_o.mean(dim=1).unflatten(1, (h, w)),
            "background_attention": att_b.mean(dim=1).unflatten(1, (h, w)),
        }

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        features = self.backbone.forward_features(images)
        return {"features": features, **self.head(features)}

    def loss(self, outputs: dict[str, Tensor], labels: Tensor) -> Tensor:
        return stagger_loss(outputs, labels, self.loss_weights)

    # ------------------------------------------------------------------ localization
    def _check_classes(self, outputs: dict[str, Tensor], classes: Tensor) -> Tensor:
        if "features" not in outputs:
            raise ValueError("outputs has no 'features' entry: pass the dict BCAM.forward returns")
        batch = outputs["features"].shape[0]
        if classes.ndim != 1 or classes.shape[0] != batch:
            raise ValueError(f"classes: expected shape ({batch},), got {tuple(classes.shape)}")
        if classes.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"classes: expected integer class indices, got dtype {classes.dtype}")
        if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= self.num_classes):
            raise ValueError(f"classes: indices must lie in [0, {self.num_classes})")
        return classes.long().to(outputs["features"].device)

    def _weight_maps(self, features: Tensor, classes: Tensor) -> tuple[Tensor, Tensor]:
        f = features.detach()
        maps = []
        for weight, bias in ((self.backbone.classifier_weight(), self.backbone.classifier_bias()),
                             (self.background_classifier.weight, self.background_classifier.bias)):
            m = torch.einsum("bdhw,bd->bhw", f, weight.detach()[classes].to(f.dtype))
            if bias is not None:
                m = m + bias.detach()[classes].to(f.dtype).view(-1, 1, 1)
            maps.append(m)
        return maps[0], maps[1]

    def _gradient_maps(self, features: Tensor, classes: Tensor,
                       background: bool) -> tuple[Tensor, Tensor | None]:
        """Batched gradient maps; differentiates a re-run of the head on a detached copy of F,
        w.r.t. that copy only, so no parameter ``.grad`` is touched."""
        with torch.inference_mode(False), torch.enable_grad():
            f = features.detach().clone().requires_grad_(True)
            out = self.head(f)
            idx = classes.view(-1, 1)

            def score(key: str, minus: str) -> Tensor:
                s = out[key].gather(1, idx)
                if self.variant != "openimages":
                    s = s - out[minus].gather(1, idx)
                return s.sum()  # images are independent after F: sum -> per-image gradients

            g_fg = torch.autograd.grad(score("logits", "logits_rev"), f,
                                       retain_graph=background)[0]
            g_bg = (torch.autograd.grad(score("logits_back", "logits_back_rev"), f)[0]
                    if background else None)
        fd = f.detach()
        fore = gradient_weighted_map(g_fg, fd, self.variant)
        back = gradient_weighted_map(g_bg, fd, self.variant) if g_bg is not None else None
        return fore, back

    def object_evidence(self, outputs: dict[str, Tensor], classes: Tensor) -> Tensor | None:
        """The evidence map ``E`` ``(B, h, w)`` of ``self.polarity`` ("cam": ``W_o^c F + b_o^c``;
        "attention": the head-averaged object attention), ``None`` for "none"."""
        if self.polarity in ("none", "border"):
            return None
        if self.polarity == "attention":
            if "object_attention" not in outputs:
                raise ValueError("outputs has no 'object_attention' entry: pass the dict "
                                 "BCAM.forward returns")
            return outputs["object_attention"].detach()
        return self._weight_maps(outputs["features"], classes)[0]

    def polarity_flips(self, outputs: dict[str, Tensor], classes: Tensor,
                       fore: Tensor | None = None) -> Tensor:
        """Bool ``(B,)``: images whose raw foreground map is inverted with respect to the object
        evidence (:func:`inverted_maps` on :func:`evidence_region`); all False for "none"."""
        classes = self._check_classes(outputs, classes)
        if fore is None:
            fore = self._raw_maps(outputs, classes, background=False)[0]
        if self.polarity == "border":
            return inverted_maps(fore, interior_region(fore.shape[0], tuple(fore.shape[1:]),
                                                       fore.device))
        evidence = self.object_evidence(outputs, classes)
        if evidence is None:
            return torch.zeros(fore.shape[0], dtype=torch.bool, device=fore.device)
        return inverted_maps(fore, evidence_region(evidence.to(fore.dtype), self.polarity_tau))

    def _raw_maps(self, outputs: dict[str, Tensor], classes: Tensor,
                  background: bool) -> tuple[Tensor, Tensor | None]:
        if self.map_type == "weight":
            fore, back = self._weight_maps(outputs["features"], classes)
            return fore, (back if background else None)
        return self._gradient_maps(outputs["features"], classes, background=background)

    def _oriented(self, outputs: dict[str, Tensor], classes: Tensor,
                  background: bool) -> tuple[Tensor, Tensor | None]:
        """Raw maps with the polarity check applied: where the foreground map is inverted, both
        maps change sign (so ``1[fore > back]`` becomes ``1[back > fore]``)."""
        fore, back = self._raw_maps(outputs, classes, background)
        if self.polarity == "none":
            return fore, back
        sign = 1.0 - 2.0 * self.polarity_flips(outputs, classes, fore).to(fore.dtype)
        sign = sign.view(-1, 1, 1)
        return fore * sign, (back * sign if back is not None else None)

    def foreground_background_maps(self, outputs: dict[str, Tensor],
                                   classes: Tensor) -> tuple[Tensor, Tensor]:
        """Raw foreground and background maps ``(B, h, w)`` for ``classes[b]`` (after the
        polarity check)."""
        classes = self._check_classes(outputs, classes)
        fore, back = self._oriented(outputs, classes, background=True)
        assert back is not None
        return fore, back

    def localization_maps(self, outputs: dict[str, Tensor], classes: Tensor) -> Tensor:
        """Foreground map ``(B, h, w)``, raw (eval type ``prob``), after the polarity check."""
        classes = self._check_classes(outputs, classes)
        return self._oriented(outputs, classes, background=False)[0]

    def background_maps(self, outputs: dict[str, Tensor], classes: Tensor) -> Tensor:
        """Background map ``(B, h, w)``, raw."""
        return self.foreground_background_maps(outputs, classes)[1]

    def localization_masks(self, outputs: dict[str, Tensor], classes: Tensor,
                           size: tuple[int, int]) -> Tensor:
        """``1[fore > back]`` as bool ``(B, H, W)`` at ``size = (H, W)`` (eval type ``mask``)."""
        fore, back = self.foreground_background_maps(outputs, classes)
        norm = self.mask_normalization
        if norm == "auto":
            norm = "minmax" if self.map_type == "weight" else "none"
        return masks_from_maps(fore, back, size, normalization=norm)  # type: ignore[arg-type]

    def extra_repr(self) -> str:
        w = self.loss_weights
        return (f"method={self.name}, num_heads={self.num_heads}, map_type={self.map_type}, "
                f"variant={self.variant}, polarity={self.polarity}, rates=(ff={w.ff}, fb={w.fb}, bf={w.bf}, bb={w.bb})")
