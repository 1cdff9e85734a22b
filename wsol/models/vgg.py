"""VGG16 in the wsolevaluation CAM variant (method-spec §5).

torchvision's ``vgg16`` feature layers without the 5th max-pool, then ``conv6`` (3x3,
512 -> 1024) + ReLU, GAP and ``Linear(1024, C)``: F is ``(B, 1024, 14, 14)`` at 224.
``large_feature_map=True`` also removes the 4th max-pool (28x28). The wsolevaluation code names
the classifier ``fc``; here it is ``classifier`` (the contract's name). Its CAM averages over
channels (``mean_k``); Eq.1 here sums, which differs by the constant 1/1024 only.

Pretrained: a torchvision ``vgg16`` state dict. Its ``features.<i>`` convolutions are matched in
order to ours (the indices shift after the removed 4th pool of the large variant); its
``classifier.*`` (the ImageNet MLP) is dropped; ``conv6`` and ``classifier`` are new.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from wsol.models.base import WSOLBackbone
from wsol.models.layers import init_new_layers
from wsol.models.registry import register_model
from wsol.models.weights import checkpoint_path, load_pretrained, read_state_dict

#: torchvision vgg16 ``features`` indices of the 13 convolutions.
TORCHVISION_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


class VGG16CAM(WSOLBackbone):
    """VGG16-CAM: ``features -> conv6 -> ReLU -> GAP -> Linear(1024, C)``."""

    def __init__(self, num_classes: int = 1000, large_feature_map: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        cfg: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512]
        cfg += [512, 512, 512] if large_feature_map else ["M", 512, 512, 512]
        layers: list[nn.Module] = []
        self._stage_ends: list[int] = []  # index after each max-pool: stage boundaries
        in_ch = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                self._stage_ends.append(len(layers))
            else:
                layers += [nn.Conv2d(in_ch, int(v), 3, padding=1), nn.ReLU(inplace=True)]
                in_ch = int(v)
        self._stage_ends.append(len(layers))
        self.features = nn.Sequential(*layers)
        self.conv6 = nn.Conv2d(512, 1024, 3, padding=1)
        self.relu6 = nn.ReLU(inplace=False)
        self.feature_dim = 1024
        self.classifier = nn.Linear(1024, num_classes)
        init_new_layers([self], conv_init="he")

    family = "vgg16"

    def forward_features(self, x: Tensor) -> Tensor:
        return self.relu6(self.conv6(self.features(x)))

    def forward_trunk(self, x: Tensor) -> Tensor:
        """conv5_3 + ReLU (512 channels): the torchvision layers, without conv6."""
        return self.features(x)

    @property
    def trunk_dim(self) -> int:
        return 512

    def cam_head_modules(self) -> list[nn.Module]:
        return [self.conv6, self.classifier]

    def layer_path(self, kind: str, index: int) -> str:
        """Path of the ``index``-th (0-based) ``"conv"`` (its ReLU's output) or ``"pool"`` layer
        of ``features``, e.g. ``layer_path("conv", 9)`` = conv4_3's ReLU."""
        if kind == "conv":
            return f"features.{self.conv_indices()[index] + 1}"
        if kind == "pool":
            pools = [i for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d)]
            return f"features.{pools[index]}"
        raise ValueError(f"layer_path: kind must be 'conv' or 'pool', got {kind!r}")

    def new_modules(self) -> list[nn.Module]:
        """conv6 and the classifier (spec §5)."""
        return [self.conv6, self.classifier]

    def stages(self) -> list[nn.Module]:
        """The conv blocks between max-pools (5, or 4 in the large variant), then conv6."""
        starts = [0] + self._stage_ends[:-1]
        blocks: list[nn.Module] = [self.features[a:b] for a, b in zip(starts, self._stage_ends)]
        return blocks + [nn.Sequential(self.conv6, self.relu6)]

    def conv_indices(self) -> list[int]:
        return [i for i, m in enumerate(self.features) if isinstance(m, nn.Conv2d)]


def torchvision_key_map(model: VGG16CAM) -> dict[str, str]:
    """torchvision vgg16 ``features.*`` key -> our key (convolutions matched in order)."""
    mapping = {}
    for tv, ours in zip(TORCHVISION_CONV_INDICES, model.conv_indices(), strict=True):
        for p in ("weight", "bias"):
            mapping[f"features.{tv}.{p}"] = f"features.{ours}.{p}"
    return mapping


@register_model("vgg16")
def vgg16(num_classes: int, pretrained: bool | str | Path = False, *,
          large_feature_map: bool = False, strict: bool = True) -> VGG16CAM:
    """VGG16-CAM; ``pretrained`` is a path to a torchvision vgg16 checkpoint (none ship here)."""
    model = VGG16CAM(num_classes=num_classes, large_feature_map=large_feature_map)
    path = checkpoint_path(pretrained, "vgg16")
    if path is not None:
        mapping = torchvision_key_map(model)

        def remap(key: str) -> str | None:
            if key.startswith("classifier."):
                return None
            return mapping.get(key, key)

        load_pretrained(model, read_state_dict(path), remap=remap, source=str(path),
                        new_prefixes=("conv6.", "classifier."), strict=strict)
    return model
