"""Small building blocks and weight initialization shared by the backbones."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn


def init_new_layers(modules: Iterable[nn.Module], conv_init: str = "he") -> None:
    """Initialize freshly added layers as wsolevaluation does.

    Conv: ``he`` = Kaiming normal (fan_out, ReLU) or ``xavier`` = Xavier uniform, bias 0;
    Linear: N(0, 0.01), bias 0; BatchNorm: weight 1, bias 0.
    """
    if conv_init not in ("he", "xavier"):
        raise ValueError(f"conv_init must be 'he' or 'xavier', got {conv_init!r}")
    for module in modules:
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                if conv_init == "he":
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                else:
                    nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


class ConvBNReLU(nn.Sequential):
    """``Conv2d(bias=False) -> BatchNorm2d -> ReLU``; keys ``conv.*`` and ``bn.*``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int = 1, padding: int | tuple[int, int] = 0, bn_eps: float = 1e-5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps)
        self.relu = nn.ReLU(inplace=True)
