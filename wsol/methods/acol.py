"""Adversarial Complementary Learning (Zhang et al., CVPR 2018) as in wsolevaluation
(method-spec §6).

Architecture: the backbone's trunk ``T`` (:meth:`~wsol.models.base.WSOLBackbone.forward_trunk`:
the feature extractor without the CAM-only layers; VGG16 also applies a 3x3 stride-1 max-pool
and a 3x3 stride-1 average-pool, as the reference's ``'M2'`` + ``avg_pool2d``) feeds two
classifiers A and B, each ``conv -> ReLU -> conv3x3 -> ReLU -> conv1x1 (-> C)``; GAP of a
classifier's class maps gives its logits. Training (the ground-truth class ``y``; without labels
the prediction of A)::

    S_A = A(T);  a = minmax(S_A[y])  (per image, detached)
    T'  = T * 1[a < threshold]       (A's discriminative region erased)
    S_B = B(T');  loss = CE(GAP S_A, y) + CE(GAP S_B, y)

Map for class ``c``: ``max(minmax(S_A[c]), minmax(S_B[c]))`` with ``S_B`` computed on ``T``
erased with A's map of ``c`` (as the reference evaluates with the label). Logits (Top-1) = A's.
The backbone's CAM-only layers (VGG conv6, InceptionV3's SPG_A3 head, the classifier) are
unused: they are frozen (``requires_grad=False``) so that no parameter goes without a gradient.

Heads per backbone (:data:`ACOL_HEADS`, ``(first kernel, width, init)``): VGG16, ResNet50 and
InceptionV3 [code] ``3x3`` to 1024, then ``3x3`` 1024 -> 1024 (VGG and InceptionV3 Xavier
init, ResNet50 He). EfficientNet-Lite0 [ours]: the trunk is F (1280 channels, like ResNet's
layer4); the heads are ``1x1 1280 -> 256``, ``3x3 256 -> 256``, ``1x1 -> C`` (Xavier init: He
(fan-out) on a 1x1 conv to few classes draws large weights and logits near 20 at the start), so the
two heads together cost about what the backbone does at 224 (the reference's 3x3 1024-wide
heads would cost ~20x the Lite0 backbone). tiny CNN [ours]: ``3x3`` heads at the trunk's width
(Xavier).
All heads train at ``lr x new_layer_lr_mult`` (the reference's ResNet puts them at the base lr).
Threshold default: wsolevaluation's ``acol_threshold=0.7``.

With CREAM: ACoL's map is the maximum of two classifiers whose last features differ (B sees an
erased copy), so no single penultimate feature map explains it; CREAM clusters the shared
trunk ``T`` (the input of both classifiers, never erased, and what both were trained from) and
is guided by ACoL's own fused map.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from wsol.methods.base import WSOLMethod
from wsol.methods.registry import register_method
from wsol.models.base import WSOLBackbone
from wsol.models.layers import init_new_layers
from wsol.utils.maps import minmax_per_image

#: Backbone family -> (first conv kernel, head width or None = the trunk's width, conv init).
ACOL_HEADS: dict[str, tuple[int, int | None, str]] = {
    "vgg16": (3, 1024, "xavier"),
    "resnet50": (3, 1024, "he"),
    "inception_v3": (3, 1024, "xavier"),
    "efficientnet_lite0": (1, 256, "xavier"),
    "tiny_cnn": (3, None, "xavier"),
}


def acol_head(in_channels: int, num_classes: int, first_kernel: int, width: int) -> nn.Sequential:
    """``conv(k) -> ReLU -> conv3x3 -> ReLU -> conv1x1 (-> C)``, spatial size preserved."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, first_kernel, padding=first_kernel // 2),
        nn.ReLU(inplace=False),
        nn.Conv2d(width, width, 3, padding=1),
        nn.ReLU(inplace=False),
        nn.Conv2d(width, num_classes, 1))


def erase(features: Tensor, class_maps: Tensor, classes: Tensor, threshold: float) -> Tensor:
    """Zero the pixels where ``minmax(class_maps[b, classes[b]]) >= threshold``."""
    att = minmax_per_image(class_maps.detach()[torch.arange(len(classes)), classes])
    keep = (att < threshold).to(features.dtype).unsqueeze(1)
    return features * keep


@register_method
class ACoL(WSOLMethod):
    """Two classifiers; the second learns from the first's erased features.

    Args:
        backbone: a backbone of a known family (:data:`ACOL_HEADS`).
        threshold: erasing threshold on A's normalized map (0.7).
        head_width: override the heads' width (default per family).
    """

    name = "acol"

    def __init__(self, backbone: WSOLBackbone, threshold: float = 0.7,
                 head_width: int | None = None) -> None:
        super().__init__(backbone)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"acol: threshold must be in [0, 1], got {threshold}")
        if backbone.family not in ACOL_HEADS:
            raise ValueError(f"acol: no head definition for backbone {type(backbone).__name__} "
                             f"(family {backbone.family!r}); known: {', '.join(ACOL_HEADS)}")
        kernel, width, init = ACOL_HEADS[backbone.family]
        width = int(head_width or width or backbone.trunk_dim)
        self.threshold = float(threshold)
        self.pre_pool = backbone.family == "vgg16"
        self.head_a = acol_head(backbone.trunk_dim, backbone.num_classes, kernel, width)
        self.head_b = acol_head(backbone.trunk_dim, backbone.num_classes, kernel, width)
        init_new_layers([self.head_a, self.head_b], conv_init=init)
        for module in backbone.cam_head_modules():
            module.requires_grad_(False)

    @property
    def cream_feature_dim(self) -> int:
        return int(self.backbone.trunk_dim)

    def prepare_batch(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        self._keep_labels(labels)
        return images, labels

    def forward(self, images: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        labels = self._take_labels(images, labels)
        trunk = self.backbone.forward_trunk(images)
        if self.pre_pool:
            trunk = F.avg_pool2d(F.max_pool2d(trunk, 3, stride=1, padding=1), 3, stride=1,
                                 padding=1)
        map_a = self.head_a(trunk)
        logits = map_a.mean(dim=(2, 3))
        classes = logits.argmax(dim=1) if labels is None else labels.long()
        map_b = self.head_b(erase(trunk, map_a, classes, self.threshold))
        return {"features": trunk, "logits": logits, "logits_b": map_b.mean(dim=(2, 3)),
                "map_a": map_a, "map_b": map_b, "erase_classes": classes}

    def loss(self, outputs: dict[str, Tensor], labels: Tensor) -> Tensor:
        """``CE(A) + CE(B)`` (both against the ground truth)."""
        return (F.cross_entropy(outputs["logits"], labels)
                + F.cross_entropy(outputs["logits_b"], labels))

    def localization_maps(self, outputs: dict[str, Tensor], classes: Tensor) -> Tensor:
        """``max(minmax(S_A[c]), minmax(S_B[c]))`` at feature resolution, ``(B, h, w)``."""
        classes = classes.to(outputs["map_a"].device).long()
        idx = torch.arange(len(classes), device=classes.device)
        map_b = outputs["map_b"]
        if not torch.equal(classes, outputs["erase_classes"].to(classes.device)):
            map_b = self.head_b(erase(outputs["features"], outputs["map_a"], classes,
                                      self.threshold))
        return torch.maximum(minmax_per_image(outputs["map_a"][idx, classes]),
                             minmax_per_image(map_b[idx, classes]))

    def extra_repr(self) -> str:
        return f"method={self.name}, threshold={self.threshold}"
