"""The method contract: a WSOL method wraps a backbone and owns the training loss and the
localization map.

The engine calls, per training batch::

    images, targets = method.prepare_batch(images, labels)  # training-only input changes
    outputs = method(images)                   # dict with at least "logits" (B, C)
    loss = method.loss(outputs, targets)       # differentiable scalar
    loss.backward(); optimizer.step()
    method.update_state(outputs, labels)       # no-grad side state (CREAM's embeddings)

``prepare_batch`` is where input-level training behaviour lives (HaS hides patches, CutMix
mixes images and returns mixed targets); it draws from torch's global RNG, which the engine
seeds per epoch. ``targets`` is whatever the method's ``loss`` understands (the labels by
default).

and, per evaluation batch (under ``torch.no_grad()`` unless ``maps_need_grad``)::

    outputs = method(images)
    maps = method.localization_maps(outputs, classes)   # (B, h, w), raw scores

``localization_maps`` returns scores at feature resolution, not normalized: the localization
code upsamples them to the input size (bicubic) and normalizes each map (minmax by default).
Methods whose maps are binary masks (B-CAM's ``mask`` evaluation) also implement
``localization_masks``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

from wsol.models.base import WSOLBackbone


class WSOLMethod(nn.Module):
    """Base class of CAM, CREAM, B-CAM."""

    name: ClassVar[str] = "base"
    #: True when ``localization_maps`` differentiates through ``outputs`` (gradient maps).
    maps_need_grad: ClassVar[bool] = False

    def __init__(self, backbone: WSOLBackbone) -> None:
        super().__init__()
        self.backbone = backbone

    @property
    def num_classes(self) -> int:
        return self.backbone.num_classes

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        features = self.backbone.forward_features(images)
        return {"features": features, "logits": self.backbone.forward_head(features)}

    def prepare_batch(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Any]:
        """Training-time input transform before the forward pass (default: none)."""
        return images, labels

    def loss(self, outputs: dict[str, Tensor], labels: Tensor) -> Tensor:
        return nn.functional.cross_entropy(outputs["logits"], labels)

    def update_state(self, outputs: dict[str, Tensor], labels: Tensor) -> None:
        """Update non-gradient state after an optimizer step (default: nothing)."""

    def localization_maps(self, outputs: dict[str, Tensor], classes: Tensor) -> Tensor:
        raise NotImplementedError

    def param_groups(self, lr: float, new_layer_lr_mult: float = 10.0,
                     weight_decay: float = 0.0) -> list[dict]:
        """Backbone groups plus this method's own new modules at the higher rate."""
        groups = self.backbone.param_groups(lr, new_layer_lr_mult, weight_decay)
        own = [p for n, p in self.named_parameters()
               if not n.startswith("backbone.") and p.requires_grad]
        if own:
            groups.append({"params": own, "lr": lr * new_layer_lr_mult,
                           "weight_decay": weight_decay, "name": f"{self.name}_head"})
        return groups

    def extra_repr(self) -> str:
        return f"method={self.name}"
