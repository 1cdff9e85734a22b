"""A tiny CNN for tests and the demo: four conv-BN-ReLU stages, output stride 16.

``width`` sets the channel count of the first stage; the stages have ``w, 2w, 4w, 8w`` channels,
so the feature map F is ``(B, 8w, H/16, W/16)`` (14x14 at 224, 4x4 at 64). It has no
pretrained weights; CAM is Eq.1 on F like every other backbone.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from wsol.models.base import WSOLBackbone
from wsol.models.layers import ConvBNReLU, init_new_layers
from wsol.models.registry import register_model
from wsol.models.weights import checkpoint_path, load_pretrained, read_state_dict


class TinyCNN(WSOLBackbone):
    """``stem (3x3 s2) -> 3 x [3x3 s2 conv, 3x3 conv] -> GAP -> Linear(8w, C)``.

    ``large_feature_map=True`` makes the last stage stride 1 (output stride 8, 28x28 at 224).
    """

    def __init__(self, num_classes: int = 10, width: int = 16,
                 large_feature_map: bool = False) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"tiny_cnn: width must be >= 1, got {width}")
        self.num_classes = num_classes
        w = width
        self.stem = ConvBNReLU(3, w, 3, stride=2, padding=1)
        self.stage1 = nn.Sequential(ConvBNReLU(w, 2 * w, 3, stride=2, padding=1),
                                    ConvBNReLU(2 * w, 2 * w, 3, padding=1))
        self.stage2 = nn.Sequential(ConvBNReLU(2 * w, 4 * w, 3, stride=2, padding=1),
                                    ConvBNReLU(4 * w, 4 * w, 3, padding=1))
        last_stride = 1 if large_feature_map else 2
        self.stage3 = nn.Sequential(ConvBNReLU(4 * w, 8 * w, 3, stride=last_stride, padding=1),
                                    ConvBNReLU(8 * w, 8 * w, 3, padding=1))
        self.feature_dim = 8 * w
        self.classifier = nn.Linear(self.feature_dim, num_classes)
        init_new_layers([self], conv_init="he")

    family = "tiny_cnn"

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stage3(self.stage2(self.stage1(self.stem(x))))

    def stages(self) -> list[nn.Module]:
        return [self.stem, self.stage1, self.stage2, self.stage3]


@register_model("tiny_cnn")
def tiny_cnn(num_classes: int, pretrained: bool | str | Path = False, *, width: int = 16,
             large_feature_map: bool = False) -> TinyCNN:
    """Tiny CNN; ``pretrained`` may only be a path to a state dict of this model."""
    model = TinyCNN(num_classes=num_classes, width=width, large_feature_map=large_feature_map)
    path = checkpoint_path(pretrained, "tiny_cnn")
    if path is not None:
        load_pretrained(model, read_state_dict(path), remap=lambda k: k, source=str(path))
    return model
