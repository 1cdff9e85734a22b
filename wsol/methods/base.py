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

Methods whose training forward needs the labels (ACoL erases the region of the ground-truth
class, SPG builds its masks from it) keep them from ``prepare_batch`` for the next forward of the
same batch (``_keep_labels`` / ``_take_labels``); without them (evaluation, or a forward outside
the engine) they use the predicted class, as the reference code does when no label is given.

CREAM add-on (:mod:`wsol.methods.cream`): ``build_method(name, backbone, cream=True, ...)`` puts
CREAM's context embeddings on any method that defines

- ``cream_features(outputs)``: the ``(B, D, h, w)`` features the method's own map is computed
  from (default ``outputs["features"]``), which CREAM clusters, with ``cream_feature_dim = D``;
- ``localization_maps``: the method's own map, which guides Eq.3 and is fused in Eq.12;
- ``cream_valid_pixels(outputs, features)``: optionally a ``(B, h, w)`` bool mask of the pixels
  that may update the embeddings during training (CutMix leaves out the pasted box).

``reduce_fn`` sums a tensor over distributed processes in place; the engine sets it
(``wsol.engine.distributed.all_reduce_sum``), the default is the single-process identity, so no
method imports the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from torch import Tensor, nn

from wsol.models.base import WSOLBackbone


def single_process_reduce(tensor: Tensor) -> None:
    """The default ``reduce_fn``: one process, the sum over processes is the tensor itself."""


class WSOLMethod(nn.Module):
    """Base class of every method (CAM, CREAM, B-CAM, HaS, ACoL, SPG, ADL, CutMix)."""

    name: ClassVar[str] = "base"
    #: True when ``localization_maps`` differentiates through ``outputs`` (gradient maps).
    maps_need_grad: ClassVar[bool] = False
    #: True for methods carrying CREAM's context embeddings (:mod:`wsol.methods.cream`).
    with_cream: ClassVar[bool] = False
    #: True when the forward pass keeps no state on the module, so that chunks of a batch may
    #: run through it concurrently (:mod:`wsol.utils.streams`); False for SPG's taps.
    stream_safe: ClassVar[bool] = True

    def __init__(self, backbone: WSOLBackbone) -> None:
        super().__init__()
        self.backbone = backbone
        #: In-place sum over processes (set by the engine under torch.distributed).
        self.reduce_fn: Callable[[Tensor], None] = single_process_reduce
        self._kept_labels: Tensor | None = None

    def _keep_labels(self, labels: Tensor) -> None:
        """Remember the training labels for the next forward (see the module docstring)."""
        self._kept_labels = labels

    def _take_labels(self, images: Tensor, labels: Tensor | None) -> Tensor | None:
        """Labels for this forward: the explicit ones, else those kept by ``prepare_batch`` when
        training on a batch of the same size, else None (use the prediction). Kept labels are
        used once."""
        kept, self._kept_labels = self._kept_labels, None
        if labels is not None:
            return labels
        if self.training and kept is not None and kept.shape[0] == images.shape[0]:
            return kept.to(images.device)
        return None

    @property
    def cream_feature_dim(self) -> int:
        """Channels ``D`` of :meth:`cream_features`."""
        return int(self.backbone.feature_dim)

    def cream_features(self, outputs: dict[str, Tensor]) -> Tensor:
        """The features this method's map is computed from (what CREAM clusters)."""
        return outputs["features"]

    def cream_valid_pixels(self, outputs: dict[str, Tensor], features: Tensor) -> Tensor | None:
        """Pixels allowed to update CREAM's embeddings in this training batch (None = all)."""
        return None

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
