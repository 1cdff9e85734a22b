"""InceptionV3 in the wsolevaluation CAM variant (the SPG head; method-spec §5).

torchvision's InceptionV3 up to ``Mixed_6e`` with three changes that keep the resolution:
``Conv2d_1a_3x3`` has padding 1, the two stem max-pools have padding 1 (ceil mode), and
``Mixed_6a`` has stride 1 / padding 1; one 3x3 stride-2 max-pool (ceil mode) after ``Mixed_5d``
gives 14x14 at 224 (``large_feature_map=True`` skips it: 28x28). ``Mixed_7*`` are dropped.
Head: dropout 0.5 -> ``SPG_A3_1b`` (3x3, 768 -> 1024) + ReLU -> dropout 0.5 -> ``SPG_A3_2b``
(3x3, 1024 -> 1024) + ReLU = F ``(B, 1024, 14, 14)`` -> dropout 0.5 -> ``SPG_A4`` (1x1 conv,
1024 -> C) -> GAP. ``SPG_A4`` is ``self.classifier`` here. The reference's CAM is the SPG_A4 map
including its bias; Eq.1 here omits the bias, a per-class constant that min-max normalization
removes.

Input normalization: ImageNet mean/std, as wsolevaluation feeds this model (torchvision's own
``transform_input`` is not applied).

Pretrained: a torchvision ``inception_v3`` state dict; key names are the same. ``AuxLogits.*``,
``Mixed_7*`` and ``fc.*`` are dropped; the SPG head is new.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from wsol.models.base import WSOLBackbone
from wsol.models.layers import ConvBNReLU, init_new_layers
from wsol.models.registry import register_model
from wsol.models.weights import checkpoint_path, load_pretrained, read_state_dict

_EPS = 1e-3  # BatchNorm eps of the TensorFlow-ported InceptionV3


def _conv(cin: int, cout: int, k: int | tuple[int, int], stride: int = 1,
          padding: int | tuple[int, int] = 0) -> ConvBNReLU:
    return ConvBNReLU(cin, cout, k, stride=stride, padding=padding, bn_eps=_EPS)


class InceptionA(nn.Module):
    """35x35 block: 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avgpool -> 1x1 (64+64+96+pool_ch)."""

    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = _conv(cin, 64, 1)
        self.branch5x5_1 = _conv(cin, 48, 1)
        self.branch5x5_2 = _conv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _conv(cin, 64, 1)
        self.branch3x3dbl_2 = _conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _conv(96, 96, 3, padding=1)
        self.branch_pool = _conv(cin, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    """Grid reduction block (``Mixed_6a``) with configurable stride/padding: 384+96+cin."""

    def __init__(self, cin: int, stride: int = 2, padding: int = 0) -> None:
        super().__init__()
        self.stride, self.padding = stride, padding
        self.branch3x3 = _conv(cin, 384, 3, stride=stride, padding=padding)
        self.branch3x3dbl_1 = _conv(cin, 64, 1)
        self.branch3x3dbl_2 = _conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _conv(96, 96, 3, stride=stride, padding=padding)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, 3, stride=self.stride, padding=self.padding)
        return torch.cat([b3, bd, bp], 1)


class InceptionC(nn.Module):
    """17x17 block with factorized 7x7 convolutions: 192 x 4 channels."""

    def __init__(self, cin: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = _conv(cin, 192, 1)
        self.branch7x7_1 = _conv(cin, c7, 1)
        self.branch7x7_2 = _conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = _conv(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _conv(cin, c7, 1)
        self.branch7x7dbl_2 = _conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _conv(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = _conv(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                     self.branch7x7dbl_5):
            bd = conv(bd)
        bp = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionV3CAM(WSOLBackbone):
    """InceptionV3-CAM with the SPG head (see the module docstring)."""

    def __init__(self, num_classes: int = 1000, large_feature_map: bool = False,
                 dropout: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"inception_v3: dropout must be in [0, 1), got {dropout}")
        self.num_classes = num_classes
        self.large_feature_map = large_feature_map
        self.dropout = dropout
        self.Conv2d_1a_3x3 = _conv(3, 32, 3, stride=2, padding=1)
        self.Conv2d_2a_3x3 = _conv(32, 32, 3)
        self.Conv2d_2b_3x3 = _conv(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _conv(64, 80, 1)
        self.Conv2d_4a_3x3 = _conv(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288, stride=1, padding=1)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.SPG_A3_1b = nn.Sequential(nn.Conv2d(768, 1024, 3, padding=1), nn.ReLU(inplace=True))
        self.SPG_A3_2b = nn.Sequential(nn.Conv2d(1024, 1024, 3, padding=1), nn.ReLU(inplace=True))
        self.feature_dim = 1024
        self.classifier = nn.Conv2d(1024, num_classes, 1)  # wsolevaluation's SPG_A4
        init_new_layers([self], conv_init="xavier")

    def _stem(self, x: Tensor) -> Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        return F.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True)

    family = "inception_v3"

    def forward_trunk(self, x: Tensor) -> Tensor:
        """Mixed_6e's output (768 channels): the torchvision layers, without the SPG_A3 head."""
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(self._stem(x))))
        if not self.large_feature_map:
            x = F.max_pool2d(x, 3, stride=2, ceil_mode=True)
        x = self.Mixed_6a(x)
        return self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))

    @property
    def trunk_dim(self) -> int:
        return 768

    def cam_head_modules(self) -> list[nn.Module]:
        return [self.SPG_A3_1b, self.SPG_A3_2b, self.classifier]

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.SPG_A3_1b(F.dropout(self.forward_trunk(x), self.dropout, self.training))
        return self.SPG_A3_2b(F.dropout(x, self.dropout, self.training))

    def forward_head(self, features: Tensor) -> Tensor:
        """Dropout (train mode only) on F, then Eq.2 (GAP + the 1x1-conv classifier)."""
        return super().forward_head(F.dropout(features, self.dropout, self.training))

    def new_modules(self) -> list[nn.Module]:
        """The SPG head: SPG_A3_1b, SPG_A3_2b and the classifier (SPG_A4)."""
        return [self.SPG_A3_1b, self.SPG_A3_2b, self.classifier]

    def stages(self) -> list[nn.Module]:
        stem = nn.ModuleList([self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3,
                              self.Conv2d_3b_1x1, self.Conv2d_4a_3x3])
        mixed5 = nn.ModuleList([self.Mixed_5b, self.Mixed_5c, self.Mixed_5d])
        mixed6 = nn.ModuleList([self.Mixed_6a, self.Mixed_6b, self.Mixed_6c, self.Mixed_6d,
                                self.Mixed_6e])
        return [stem, mixed5, mixed6, nn.ModuleList([self.SPG_A3_1b, self.SPG_A3_2b])]


#: torchvision inception_v3 key prefixes that this variant drops by design.
DROPPED_PREFIXES = ("AuxLogits.", "Mixed_7a.", "Mixed_7b.", "Mixed_7c.", "fc.")


@register_model("inception_v3")
def inception_v3(num_classes: int, pretrained: bool | str | Path = False, *,
                 large_feature_map: bool = False, dropout: float = 0.5,
                 strict: bool = True) -> InceptionV3CAM:
    """InceptionV3-CAM; ``pretrained`` is a path to a torchvision inception_v3 checkpoint."""
    model = InceptionV3CAM(num_classes=num_classes, large_feature_map=large_feature_map,
                           dropout=dropout)
    path = checkpoint_path(pretrained, "inception_v3")
    if path is not None:
        load_pretrained(model, read_state_dict(path),
                        remap=lambda k: None if k.startswith(DROPPED_PREFIXES) else k,
                        source=str(path), strict=strict,
                        new_prefixes=("SPG_A3_1b.", "SPG_A3_2b.", "classifier."))
    return model
