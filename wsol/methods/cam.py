"""CAM (Zhou et al. 2016): the baseline every method here is measured against.

Training is plain cross-entropy on the GAP + FC logits (Eq.2); the localization map for class
c is Eq.1, ``M_c = sum_k w^c_k F_k`` at feature resolution.
"""

from __future__ import annotations

from torch import Tensor

from wsol.methods.base import WSOLMethod
from wsol.methods.registry import register_method


@register_method
class CAM(WSOLMethod):
    """Class activation mapping."""

    name = "cam"

    def localization_maps(self, outputs: dict[str, Tensor], classes: Tensor) -> Tensor:
        """Eq.1 for ``classes[b]`` of each image: ``(B, h, w)``."""
        return self.backbone.class_activation_maps(outputs["features"], classes)
