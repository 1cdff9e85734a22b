"""ResNet50 in the wsolevaluation CAM variant (method-spec §5).

torchvision's ResNet50 layout (Bottleneck v1.5: the stride sits on the 3x3 conv) with layer3 at
stride 2 and layer4 at stride 1, so F = layer4's output is ``(B, 2048, 14, 14)`` at 224;
``large_feature_map=True`` puts layer3 at stride 1 too (28x28). GAP + ``Linear(2048, C)``.

Pretrained: a torchvision ``resnet50`` state dict; the key names are the same except the
classifier, which torchvision calls ``fc`` and which is dropped (``keep_imagenet_head=True``
with ``num_classes=1000`` loads it into ``classifier`` instead, as wsolevaluation does for
ILSVRC). Changing the strides changes no weight shape, so every other tensor loads.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from wsol.models.base import WSOLBackbone
from wsol.models.layers import init_new_layers
from wsol.models.registry import register_model
from wsol.models.weights import checkpoint_path, load_pretrained, read_state_dict


class Bottleneck(nn.Module):
    """``1x1 -> 3x3 (stride) -> 1x1 (x4 channels)``, BN after each, ReLU(out + shortcut)."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


def _make_layer(in_channels: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [Bottleneck(in_channels, planes, stride)]
    layers += [Bottleneck(planes * Bottleneck.expansion, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNet50CAM(WSOLBackbone):
    """ResNet50-CAM: ``stem -> layer1..4 (strides 1, 2, 2|1, 1) -> GAP -> Linear(2048, C)``."""

    def __init__(self, num_classes: int = 1000, large_feature_map: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = _make_layer(64, 64, 3, stride=1)
        self.layer2 = _make_layer(256, 128, 4, stride=2)
        self.layer3 = _make_layer(512, 256, 6, stride=1 if large_feature_map else 2)
        self.layer4 = _make_layer(1024, 512, 3, stride=1)
        self.feature_dim = 2048
        self.classifier = nn.Linear(2048, num_classes)
        init_new_layers([self], conv_init="xavier")

    family = "resnet50"

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def new_modules(self) -> list[nn.Module]:
        """layer4 (pretrained, but trained at the higher rate as in wsolevaluation) and fc."""
        return [self.layer4, self.classifier]

    def stages(self) -> list[nn.Module]:
        return [nn.ModuleList([self.conv1, self.bn1]), self.layer1, self.layer2, self.layer3,
                self.layer4]


@register_model("resnet50")
def resnet50(num_classes: int, pretrained: bool | str | Path = False, *,
             large_feature_map: bool = False, keep_imagenet_head: bool = False,
             strict: bool = True) -> ResNet50CAM:
    """ResNet50-CAM; ``pretrained`` is a path to a torchvision resnet50 checkpoint."""
    if keep_imagenet_head and num_classes != 1000:
        raise ValueError(f"resnet50: keep_imagenet_head needs num_classes=1000, got {num_classes}")
    model = ResNet50CAM(num_classes=num_classes, large_feature_map=large_feature_map)
    path = checkpoint_path(pretrained, "resnet50")
    if path is not None:
        def remap(key: str) -> str | None:
            if key.startswith("fc."):
                return "classifier." + key[3:] if keep_imagenet_head else None
            return key

        load_pretrained(model, read_state_dict(path), remap=remap, source=str(path),
                        new_prefixes=() if keep_imagenet_head else ("classifier.",),
                        strict=strict)
    return model
