"""Self-Produced Guidance (Zhang et al., ECCV 2018) as in wsolevaluation (method-spec §6).

Architecture. The classification path ends in ``F`` and a 1x1 classifier (``SPG_A4``) + GAP; two
side taps of the backbone feed branches ``B1`` and ``B2`` (each ``conv3x3 -> ReLU``) that share
a head ``B_shared`` (``conv3x3 -> ReLU -> conv1x1 -> 1``), and ``C`` (``conv3x3 -> ReLU ->
conv1x1 -> 1``) reads ``F``. The taps are forward hooks on backbone modules
(:meth:`~wsol.models.base.WSOLBackbone.insert_after`), so the backbone itself is unchanged.

Training (the ground-truth class ``y``; without labels the predicted class), everything at the
input resolution ``H x W`` (bilinear upsampling)::

    attention = minmax(up(S[y]))               S = SPG_A4's class maps (detached)
    fused     = (sigmoid(up(B1)) + sigmoid(up(B2))) / 2   (detached)
    mask(P; hi, lo) = 1 where P > hi (if fewer than 30 such pixels: P > 0.7 max P),
                      0 where P < lo, ignored elsewhere
    loss = CE(logits, y) + BCE(up(B2) | mask(attention; t1)) + BCE(up(B1) | mask(sigmoid(up(B2)); t2))
           + BCE(up(C) | mask(fused; t3))

(BCE with logits, mean over the non-ignored pixels; a term with none is 0). Thresholds
``((h1, l1), (h2, l2), (h3, l3))`` default to wsolevaluation's ``((0.7, 0.01), (0.5, 0.05),
(0.7, 0.1))``. Map: ``S[c]`` at feature resolution (Eq.1 of SPG_A4 on F; the bias, a per-image
constant, is left out as for CAM). Evaluation is a plain forward (no side branches).

Per backbone (:data:`SPG_LAYOUT`):

- VGG16 [code]: the reference re-uses conv4_1..5_3 as SPG_A_1/A_2, then two new 3x3 512 convs
  (SPG_A_3) and SPG_A4 (1x1 512 -> C). Here: B1 taps conv4_3 (its ReLU), B2 taps conv5_3,
  ``F`` = the new SPG_A_3 on the trunk (conv5_3), SPG_A4 new; the backbone's conv6 and
  classifier are unused and frozen. Our pool4 is VGG's 2x2 one (the reference: 3x3 stride 2).
  Side widths 512, C width 512.
- ResNet50 [code]: B1 after layer3.0, B2 after layer3; ``F`` = layer4, SPG_A4 = the backbone's
  classifier. Side widths 1024, C width 512.
- InceptionV3 [code]: the backbone already is the SPG variant (F = SPG_A3_2b, classifier =
  SPG_A4). B1 after Mixed_5d, B2 after Mixed_6d (the reference feeds B2 Mixed_6d's output, not
  Mixed_6e's). Side widths 512, C width 512.
- EfficientNet-Lite0 [ours, as ResNet50]: B1 after the 80-channel stage (``blocks.3``), B2 after
  the 192-channel stage (``blocks.5``), ``F`` = the head conv, SPG_A4 = the classifier; widths
  256 (light branches for a light backbone).
- tiny CNN [ours]: B1 after ``stage2``, B2 after ``stage3.0``; widths = F's channels.

With CREAM: SPG's map is linear in ``F`` exactly as CAM's (SPG_A4 is a 1x1 classifier over it),
so CREAM clusters ``F`` (for VGG16 the SPG_A_3 output, not the unused conv6 features) guided by
SPG's own map; the side branches only shape ``F`` during training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from wsol.methods.base import WSOLMethod
from wsol.methods.registry import register_method
from wsol.models.base import WSOLBackbone
from wsol.models.layers import init_new_layers
from wsol.utils.maps import minmax_per_image

#: Backbone family -> (B1 tap, B2 tap, side width, C width, own head); VGG16's taps are
#: computed from its layer list (conv4_3, conv5_3 ReLUs). ``None`` width = F's channels.
SPG_LAYOUT: dict[str, tuple[str | None, str | None, int | None, int | None, bool]] = {
    "vgg16": (None, None, 512, 512, True),
    "resnet50": ("layer3.0", "layer3", 1024, 512, False),
    "inception_v3": ("Mixed_5d", "Mixed_6d", 512, 512, False),
    "efficientnet_lite0": ("blocks.3", "blocks.5", 256, 256, False),
    "tiny_cnn": ("stage2", "stage3.0", None, None, False),
}
DEFAULT_THRESHOLDS = ((0.7, 0.01), (0.5, 0.05), (0.7, 0.1))
MIN_FOREGROUND = 30  # pixels; fewer above the high threshold -> 0.7 x max instead


class Tap(nn.Module):
    """Records the tensor passing through (for one forward) and returns it unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.value: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        self.value = x
        return x

    def pop(self) -> Tensor:
        value, self.value = self.value, None
        if value is None:
            raise RuntimeError("spg: a backbone tap recorded nothing in this forward")
        return value


def spg_mask(prob: Tensor, high: float, low: float) -> Tensor:
    """``(B, H, W)`` target: 1 foreground, 0 background, -1 ignored (method docstring)."""
    flat = prob.flatten(1)
    enough = (flat > high).sum(dim=1) >= MIN_FOREGROUND
    thr = torch.where(enough, torch.full_like(flat[:, 0], high), 0.7 * flat.amax(dim=1))
    mask = torch.full_like(prob, -1.0)
    mask = torch.where(prob > thr.view(-1, 1, 1), torch.ones_like(prob), mask)
    return torch.where(prob < low, torch.zeros_like(prob), mask)


def masked_bce(logits: Tensor, target: Tensor) -> Tensor:
    """BCE with logits over the pixels whose target is not -1 (0 if there are none)."""
    keep = target >= 0
    if not bool(keep.any()):
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[keep], target[keep])


@register_method
class SPG(WSOLMethod):
    """Self-produced guidance: CAM plus three pixel-wise auxiliary losses.

    Args:
        backbone: a backbone of a known family (:data:`SPG_LAYOUT`).
        thresholds: ``((h1, l1), (h2, l2), (h3, l3))`` for the B2, B1 and C masks.
    """

    name = "spg"
    stream_safe = False  # the taps record a tensor per forward pass

    def __init__(self, backbone: WSOLBackbone,
                 thresholds: Sequence[Sequence[float]] = DEFAULT_THRESHOLDS) -> None:
        super().__init__(backbone)
        pairs = [tuple(float(v) for v in pair) for pair in thresholds]
        if len(pairs) != 3 or any(len(p) != 2 or not 0 <= p[1] <= p[0] <= 1 for p in pairs):
            raise ValueError(f"spg: thresholds must be three (high, low) pairs with "
                             f"0 <= low <= high <= 1, got {thresholds!r}")
        self.thresholds = pairs
        if backbone.family not in SPG_LAYOUT:
            raise ValueError(f"spg: no layout for backbone {type(backbone).__name__} "
                             f"(family {backbone.family!r}); known: {', '.join(SPG_LAYOUT)}")
        b1_path, b2_path, side, c_width, own_head = SPG_LAYOUT[backbone.family]
        if backbone.family == "vgg16":
            b1_path = backbone.layer_path("conv", 9)  # type: ignore[attr-defined]
            b2_path = backbone.layer_path("conv", 12)  # type: ignore[attr-defined]
        self.own_head = own_head
        num_classes = backbone.num_classes
        if own_head:  # VGG16: SPG_A_3 (2 x conv3x3 512) and SPG_A4 on the conv5_3 trunk
            dim = backbone.trunk_dim
            self.head_a3 = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1), nn.ReLU(inplace=True),
                                         nn.Conv2d(dim, dim, 3, padding=1), nn.ReLU(inplace=True))
            self.head_a4 = nn.Conv2d(dim, num_classes, 1)
            for module in backbone.cam_head_modules():
                module.requires_grad_(False)
        self.tap_b1, self.tap_b2 = Tap(), Tap()
        self._handles = [backbone.insert_after(str(b1_path), self.tap_b1),
                         backbone.insert_after(str(b2_path), self.tap_b2)]
        ch1, ch2 = self._probe_channels()
        fdim = self.cream_feature_dim
        side = side or fdim
        c_width = c_width or fdim
        self.b1a = nn.Sequential(nn.Conv2d(ch1, side, 3, padding=1), nn.ReLU(inplace=True))
        self.b2a = nn.Sequential(nn.Conv2d(ch2, side, 3, padding=1), nn.ReLU(inplace=True))
        self.b_shared = nn.Sequential(nn.Conv2d(side, side, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.Conv2d(side, 1, 1))
        self.branch_c = nn.Sequential(nn.Conv2d(fdim, c_width, 3, padding=1),
                                      nn.ReLU(inplace=True), nn.Conv2d(c_width, 1, 1))
        new = [self.b1a, self.b2a, self.b_shared, self.branch_c]
        if own_head:
            new += [self.head_a3, self.head_a4]
        init_new_layers(new, conv_init="xavier")

    @torch.no_grad()
    def _probe_channels(self) -> tuple[int, int]:
        """Channels at the two taps, from one eval-mode forward of a small zero image."""
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            param = next(self.backbone.parameters())
            self.backbone.forward_trunk(torch.zeros(1, 3, 96, 96, device=param.device))
            if self.tap_b2.value is None:  # tap after the trunk (not for our layouts)
                self.backbone.forward_features(torch.zeros(1, 3, 96, 96, device=param.device))
            return self.tap_b1.pop().shape[1], self.tap_b2.pop().shape[1]
        finally:
            self.backbone.train(was_training)

    @property
    def cream_feature_dim(self) -> int:
        return int(self.backbone.trunk_dim if self.own_head else self.backbone.feature_dim)

    def prepare_batch(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        self._keep_labels(labels)
        return images, labels

    def _class_maps(self, features: Tensor, classes: Tensor) -> Tensor:
        """SPG_A4's map of ``classes[b]`` without the bias: ``(B, h, w)``."""
        if not self.own_head:
            return self.backbone.class_activation_maps(features, classes)
        weights = self.head_a4.weight.flatten(1)[classes].to(features.dtype)
        b, _, h, w = features.shape
        return torch.bmm(weights.unsqueeze(1), features.flatten(2)).view(b, h, w)

    def forward(self, images: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        labels = self._take_labels(images, labels)
        if self.own_head:
            features = self.head_a3(self.backbone.forward_trunk(images))
            logits = self.head_a4(features).mean(dim=(2, 3))
        else:
            features = self.backbone.forward_features(images)
            logits = self.backbone.forward_head(features)
        b1, b2 = self.tap_b1.pop(), self.tap_b2.pop()
        outputs = {"features": features, "logits": logits}
        if not self.training:
            return outputs
        size = images.shape[-2:]
        logits_b1 = self.b_shared(self.b1a(b1))
        logits_b2 = self.b_shared(self.b2a(b2))
        logits_c = self.branch_c(features)
        classes = logits.argmax(dim=1) if labels is None else labels.long()
        cams = self._class_maps(features.detach(), classes).unsqueeze(1)
        attention = minmax_per_image(F.interpolate(cams, size=size, mode="bilinear",
                                                   align_corners=False)).squeeze(1)
        fused = (torch.sigmoid(_up(logits_b1.detach(), size))
                 + torch.sigmoid(_up(logits_b2.detach(), size))) / 2
        outputs.update({"logits_b1": logits_b1, "logits_b2": logits_b2, "logits_c": logits_c,
                        "attention": attention, "fused_attention": fused.squeeze(1)})
        return outputs

    def loss(self, outputs: dict[str, Tensor], labels: Tensor) -> Tensor:
        """CE + the three self-produced-guidance BCE terms (module docstring)."""
        return sum(self.loss_terms(outputs, labels).values())  # type: ignore[return-value]

    def loss_terms(self, outputs: dict[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
        """The four terms: ``cls``, ``b2_attention``, ``b1_b2``, ``c_fused``."""
        terms = {"cls": F.cross_entropy(outputs["logits"], labels)}
        if "attention" not in outputs:
            return terms
        (h1, l1), (h2, l2), (h3, l3) = self.thresholds
        size = outputs["attention"].shape[-2:]
        up_b1 = _up(outputs["logits_b1"], size).squeeze(1)
        up_b2 = _up(outputs["logits_b2"], size).squeeze(1)
        up_c = _up(outputs["logits_c"], size).squeeze(1)
        terms["b2_attention"] = masked_bce(up_b2, spg_mask(outputs["attention"], h1, l1))
        terms["b1_b2"] = masked_bce(up_b1, spg_mask(torch.sigmoid(up_b2.detach()), h2, l2))
        terms["c_fused"] = masked_bce(up_c, spg_mask(outputs["fused_attention"], h3, l3))
        return terms

    def localization_maps(self, outputs: dict[str, Tensor], classes: Tensor) -> Tensor:
        """SPG_A4's class map on F (Eq.1 form): ``(B, h, w)``."""
        return self._class_maps(outputs["features"], classes.to(outputs["features"].device))

    def extra_repr(self) -> str:
        return f"method={self.name}, thresholds={self.thresholds}"


def _up(x: Tensor, size: torch.Size | tuple[int, int]) -> Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
