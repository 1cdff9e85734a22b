"""The backbone contract every WSOL model in :mod:`wsol.models` follows.

A backbone is a fully convolutional feature extractor followed by global average pooling and a
linear classifier (the CAM architecture, method-spec §1). It exposes the two halves separately so
that methods need no hooks:

- ``forward_features(x) -> F``: the last feature map, ``(B, D, h, w)`` (14x14 at 224 for every
  wsolevaluation variant). This is the tensor CAM, CREAM and B-CAM read.
- ``forward_head(F) -> logits``: ``(B, C)``, GAP then the classifier (Eq.2: ``y_c = mean M_c``
  plus bias).
- ``class_activation_maps(F, classes) -> (B, h, w)``: Eq.1, ``M_c(x, y) = sum_k w^c_k F_k(x, y)``
  for the class ``classes[b]`` of each image (no bias, no ReLU, no normalization; the
  localization code upsamples and normalizes).
- ``param_groups(lr, new_layer_lr_mult)``: SGD parameter groups, pretrained layers at ``lr``,
  new layers (``new_modules()``) at ``lr * new_layer_lr_mult``.
- ``input_mean`` / ``input_std``: per-channel normalization the (pretrained) weights expect.
- ``stages()`` / ``freeze_stages(n)``: fine-tuning control for small (CPU) budgets: the feature
  extractor as an ordered list of stages (input -> output, classifier excluded); the first ``n``
  are frozen (no gradients, BatchNorm statistics fixed even in ``train()`` mode).

Hooks for the method zoo (:mod:`wsol.methods.adl`, ``acol``, ``spg``), so that no method needs a
per-backbone copy of the network:

- ``family``: the backbone family name (``"vgg16"``, ``"resnet50"``, ...) methods key their
  architecture-specific choices (ADL positions, ACoL/SPG heads) on.
- ``insert_after(path, module)``: run a parameter-free ``module`` on the output of the submodule
  at dotted ``path`` (``"layer3.0"``, ``"features.16"``) and pass its result on, through a
  forward hook: the state-dict keys, pretrained loading and checkpoints are unchanged.
- ``forward_trunk(x)`` / ``trunk_dim`` / ``cam_head_modules()``: the feature extractor without
  the layers that exist only for CAM (VGG's ``conv6``, InceptionV3's SPG_A3 head) and those
  layers (plus the classifier). ACoL puts its two classifiers on the trunk; for ResNet50,
  EfficientNet-Lite0 and the tiny CNN the trunk is F itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle


def make_param_groups(pretrained: list, new: list, lr: float, new_layer_lr_mult: float,
                      weight_decay: float) -> list[dict]:
    """SGD groups: ``pretrained`` parameters at ``lr``, ``new`` ones at ``lr * new_layer_lr_mult``
    (empty groups are left out)."""
    groups = []
    if pretrained:
        groups.append({"params": pretrained, "lr": lr, "weight_decay": weight_decay,
                       "name": "pretrained"})
    if new:
        groups.append({"params": new, "lr": lr * new_layer_lr_mult,
                       "weight_decay": weight_decay, "name": "new"})
    return groups


class _ApplyAfter:
    """Forward hook that replaces a module's output ``y`` by ``module(y)``.

    A class (not a closure) so that ``copy.deepcopy`` of a method copies the hook together with
    the module it applies.
    """

    def __init__(self, module: Callable[[Tensor], Tensor]) -> None:
        self.module = module

    def __call__(self, _module: nn.Module, _inputs: tuple, output: Tensor) -> Tensor:
        return self.module(output)


class WSOLBackbone(nn.Module):
    """Base class: subclasses set ``self.classifier`` (``nn.Linear(D, C)`` or a 1x1 ``nn.Conv2d``)
    and implement :meth:`forward_features`."""

    #: Per-channel mean/std applied to images in [0, 1] before the network (ImageNet by default).
    input_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    input_std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    num_classes: int
    feature_dim: int
    classifier: nn.Module
    #: Number of leading :meth:`stages` frozen by :meth:`freeze_stages` (0 = none).
    frozen_stages: int = 0
    #: Backbone family (the registry name), the key of the zoo methods' per-backbone choices.
    family: ClassVar[str | None] = None
    #: The forward pass keeps no state on the module (:mod:`wsol.utils.streams`).
    stream_safe: bool = True

    def insert_after(self, path: str, module: Callable[[Tensor], Tensor]) -> RemovableHandle:
        """Apply ``module`` to the output of submodule ``path``; returns the hook's handle.

        ``module`` must keep the tensor's shape (ADL's dropout, a recording tap). It is not
        registered as a child here: the caller owns it (so that ``train()``/``eval()`` and
        ``.to()`` reach it through the caller).
        """
        try:
            target = self.get_submodule(path)
        except AttributeError:
            raise ValueError(f"{type(self).__name__} has no submodule {path!r} to insert after "
                             f"(see its named_modules())") from None
        if target is self:
            raise ValueError("insert_after needs a submodule path, not the empty path")
        return target.register_forward_hook(_ApplyAfter(module))

    def forward_trunk(self, x: Tensor) -> Tensor:
        """The feature extractor without the CAM-only layers (default: F itself)."""
        return self.forward_features(x)

    @property
    def trunk_dim(self) -> int:
        """Channels of :meth:`forward_trunk`."""
        return self.feature_dim

    def cam_head_modules(self) -> list[nn.Module]:
        """The layers after the trunk that only the CAM architecture uses (default: the
        classifier); methods with their own heads over the trunk (ACoL) freeze them."""
        return [self.classifier]

    def forward_features(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def classifier_weight(self) -> Tensor:
        """Classifier weights as a ``(C, D)`` matrix (a 1x1 conv's kernel is flattened)."""
        w = self.classifier.weight
        return w.reshape(w.shape[0], -1)

    def classifier_bias(self) -> Tensor | None:
        return getattr(self.classifier, "bias", None)

    def forward_head(self, features: Tensor) -> Tensor:
        """Eq.2: GAP over pixels, then the linear classifier: ``(B, D, h, w) -> (B, C)``."""
        pooled = features.mean(dim=(2, 3))
        return nn.functional.linear(pooled, self.classifier_weight(), self.classifier_bias())

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def class_activation_maps(self, features: Tensor, classes: Tensor) -> Tensor:
        """Eq.1: ``M_c = sum_k w^c_k F_k`` for ``c = classes[b]``; ``(B, D, h, w) -> (B, h, w)``."""
        if classes.ndim != 1 or classes.shape[0] != features.shape[0]:
            raise ValueError(
                f"expected one class per image: classes has shape {tuple(classes.shape)}, "
                f"features have batch size {features.shape[0]}")
        weights = self.classifier_weight()[classes].to(features.dtype)  # (B, D)
        b, _, h, w = features.shape
        # bmm over the flattened pixels: several times faster than einsum on CPU.
        return torch.bmm(weights.unsqueeze(1), features.flatten(2)).view(b, h, w)

    def new_modules(self) -> list[nn.Module]:
        """Modules that are not ImageNet-pretrained (trained at the higher learning rate)."""
        return [self.classifier]

    def param_groups(self, lr: float, new_layer_lr_mult: float = 10.0,
                     weight_decay: float = 0.0) -> list[dict]:
        """SGD parameter groups: pretrained layers at ``lr``, new layers at ``lr * mult``."""
        new_ids = {id(p) for m in self.new_modules() for p in m.parameters()}
        old = [p for p in self.parameters() if id(p) not in new_ids and p.requires_grad]
        new = [p for p in self.parameters() if id(p) in new_ids and p.requires_grad]
        return make_param_groups(old, new, lr, new_layer_lr_mult, weight_decay)

    def stages(self) -> list[nn.Module]:
        """The feature extractor as ordered stages (input -> output); the classifier is not one.

        Every parameter used by :meth:`forward_features` belongs to exactly one stage.
        """
        raise NotImplementedError(f"{type(self).__name__} does not define stages()")

    def freeze_stages(self, n: int) -> None:
        """Freeze exactly the first ``n`` stages and unfreeze the others.

        Frozen stages get ``requires_grad=False`` and their BatchNorm layers stay in eval mode
        (running statistics fixed) even when the model is put in train mode. ``n = 0`` unfreezes
        everything; ``n = len(stages())`` trains the classifier only (a linear probe).
        """
        stages = self.stages()
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= len(stages):
            raise ValueError(f"freeze_stages: n must be an int in [0, {len(stages)}] for "
                             f"{type(self).__name__}, got {n!r}")
        for i, stage in enumerate(stages):
            for p in stage.parameters():
                p.requires_grad_(i >= n)
        self.frozen_stages = n
        self.train(self.training)

    def train(self, mode: bool = True) -> WSOLBackbone:
        """``nn.Module.train`` that keeps the BatchNorm layers of frozen stages in eval mode."""
        super().train(mode)
        if mode and self.frozen_stages > 0:
            for stage in self.stages()[: self.frozen_stages]:
                for m in stage.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
        return self
