"""Attention-based Dropout Layer (Choe & Shim, CVPR 2019) as in wsolevaluation (method-spec §6).

ADL is a parameter-free layer inserted after chosen blocks of the backbone
(:meth:`wsol.models.base.WSOLBackbone.insert_after`, a forward hook: the backbone's weights,
state-dict keys and pretrained loading are CAM's). In training, on the block's output ``X``
``(B, K, h, w)``::

    A = mean_k X_k                                   (self-attention map, (B, 1, h, w))
    drop mask  D = 1[A < threshold * max_{x,y} A]    (hides the most discriminative part)
    importance I = sigmoid(A)                        (highlights it)
    out = X * (D if floor(U[0, 1) + drop_rate) == 1 else I)

with one draw ``U`` per layer per forward (the whole batch gets the same choice). In evaluation
every ADL layer is the identity. Loss (cross-entropy) and map (Eq.1 CAM on F) are CAM's.

Defaults are wsolevaluation's ``config.py``: ``adl_drop_rate=0.75``, ``adl_threshold=0.9``.

Positions (:data:`ADL_POSITIONS`), as module paths of our backbones:

- VGG16 [code]: after pool3, after the conv4 block (conv4_3 + ReLU) and after the conv5 block
  (conv5_3 + ReLU, before conv6): the reference cfg ``[..., 'M', 'A', 512 x3, 'A', 'M',
  512 x3, 'A']`` (the large-feature-map variant has no pool4, same positions).
- ResNet50 [code]: after block 0 of layer3 and after blocks 0 and 2 of layer4
  (``_ADL_POSITION = [[], [], [], [0], [0, 2]]``); the last one is F.
- InceptionV3 [code]: after Mixed_5d, after Mixed_6e and after SPG_A3_2b (= F).
- EfficientNet-Lite0 [ours, same spirit: two positions at the last resolution, then F]: after
  the 80-channel stage (``blocks.3``, the first stage at the final 14x14 resolution, as
  ResNet's layer3.0), after the 192-channel stage (``blocks.5``, the last wide stage, as
  layer4.0 / Mixed_6e) and after the 1x1 head conv (``head`` = F, as layer4.2 / SPG_A3_2b).
- tiny CNN [ours]: after ``stage2`` (stride 8) and after ``stage3`` (= F).

With CREAM: F carries the last ADL layer in training (drop mask or importance map), so the
embeddings follow the features the classifier is trained on; the importance map only rescales
pixels (their direction, which the cosine E-step compares, is unchanged), the drop mask zeroes
the peak region (zero vectors add nothing to the background sum).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from wsol.methods.cam import CAM
from wsol.methods.registry import register_method
from wsol.models.base import WSOLBackbone


class ADLayer(nn.Module):
    """One attention-based dropout layer (module docstring); identity in eval mode."""

    def __init__(self, drop_rate: float = 0.75, threshold: float = 0.9) -> None:
        super().__init__()
        if not 0.0 <= drop_rate <= 1.0:
            raise ValueError(f"adl: drop_rate must be in [0, 1], got {drop_rate}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"adl: threshold must be in [0, 1], got {threshold}")
        self.drop_rate = float(drop_rate)
        self.threshold = float(threshold)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        attention = x.mean(dim=1, keepdim=True)
        peak = attention.flatten(1).max(dim=1).values.view(-1, 1, 1, 1)
        drop_mask = (attention < self.threshold * peak).to(x.dtype)
        use_drop = bool((torch.rand(()) + self.drop_rate).floor())
        return x * (drop_mask if use_drop else torch.sigmoid(attention))

    def extra_repr(self) -> str:
        return f"drop_rate={self.drop_rate}, threshold={self.threshold}"


def default_positions(backbone: WSOLBackbone) -> list[str]:
    """ADL positions (module paths) for ``backbone``'s family (module docstring)."""
    family = backbone.family
    if family == "vgg16":
        return [backbone.layer_path("pool", 2), backbone.layer_path("conv", 9),  # type: ignore[attr-defined]
                backbone.layer_path("conv", 12)]  # type: ignore[attr-defined]
    if family in ADL_POSITIONS:
        return list(ADL_POSITIONS[family])
    raise ValueError(f"adl: no default positions for backbone {type(backbone).__name__} "
                     f"(family {family!r}); pass positions=[module paths]")


#: Module paths after which ADL layers go, per backbone family (VGG16's are computed from its
#: layer list by :func:`default_positions`: pool3, conv4_3's ReLU, conv5_3's ReLU).
ADL_POSITIONS: dict[str, tuple[str, ...]] = {
    "resnet50": ("layer3.0", "layer4.0", "layer4.2"),
    "inception_v3": ("Mixed_5d", "Mixed_6e", "SPG_A3_2b"),
    "efficientnet_lite0": ("blocks.3", "blocks.5", "head"),
    "tiny_cnn": ("stage2", "stage3"),
}


@register_method
class ADL(CAM):
    """CAM with attention-based dropout layers inserted in the backbone.

    Args:
        backbone: a backbone with a known family, or any backbone with ``positions`` given.
        drop_rate: probability of applying the drop mask instead of the importance map (0.75).
        threshold: drop-mask threshold relative to the attention's maximum (0.9).
        positions: module paths of the backbone after which ADL goes (default: per family).
    """

    name = "adl"

    def __init__(self, backbone: WSOLBackbone, drop_rate: float = 0.75, threshold: float = 0.9,
                 positions: Sequence[str] | None = None) -> None:
        super().__init__(backbone)
        paths = default_positions(backbone) if positions is None else list(positions)
        if not paths or not all(isinstance(p, str) for p in paths):
            raise ValueError(f"adl: positions must be a non-empty list of module paths, "
                             f"got {positions!r}")
        self.positions = paths
        self.adl_layers = nn.ModuleList(ADLayer(drop_rate, threshold) for _ in paths)
        self._handles = [backbone.insert_after(p, layer)
                         for p, layer in zip(paths, self.adl_layers)]

    def extra_repr(self) -> str:
        return f"method={self.name}, positions={self.positions}"
