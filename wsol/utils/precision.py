"""Numeric precision of a forward pass: autocast (``amp``) and memory format, with ``auto``.

``amp`` values (``train.amp``, ``eval.amp``, :class:`wsol.Localizer`):

- ``false``: float32;
- ``bf16`` (or ``true``): bfloat16 autocast, on the CPU and on CUDA (float16 on a GPU without
  bf16 support);
- ``fp16``: float16 autocast on CUDA (training adds the GradScaler); on the CPU it is refused;
- ``auto`` (the default): the fastest setting whose metrics were measured to hold
  (``benchmarks/results/cub10_amp.json``: within 0.3 MaxBoxAccV2 points on the CUB subset):
  bf16 on a CPU with native bf16 arithmetic (AVX512-BF16 or AMX), bf16 on a CUDA GPU that
  supports it and fp16 on an older one; float32 on any other CPU, where bf16 is emulated and
  slower.

``channels_last`` values: ``false``, ``true`` or ``auto`` (the default): NHWC where it was
measured faster, i.e. on a CPU with native bf16 and on CUDA GPUs with tensor cores
(compute capability 7.0 or newer); contiguous NCHW elsewhere.

Nothing here changes a number in float32: ``auto`` resolves to float32 and NCHW on hardware
without bf16 (or tensor cores), and every result records the precision it ran in.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # torch is imported where used: the config layer checks values without it
    import torch
    from torch import nn

AMP_VALUES = (False, True, "bf16", "fp16", "auto")
Amp = Literal[False, "bf16", "fp16"]


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 arithmetic in hardware: the ``avx512_bf16`` or ``amx_bf16``
    flag of ``/proc/cpuinfo`` (Linux). Elsewhere (no such file) False: CPU autocast would then
    emulate bf16, which is slower than float32."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        return False
    return False


def check_amp(value: object, key: str) -> None:
    """Raise ValueError naming ``key`` unless ``value`` is one of :data:`AMP_VALUES`."""
    if isinstance(value, bool) or value in AMP_VALUES[2:]:
        return
    raise ValueError(f"{key} must be false, true, bf16, fp16 or auto, got {value!r}")


def check_channels_last(value: object, key: str) -> None:
    """Raise ValueError naming ``key`` unless ``value`` is true, false or ``auto``."""
    if isinstance(value, bool) or value == "auto":
        return
    raise ValueError(f"{key} must be true, false or auto, got {value!r}")


def resolve_amp(amp: bool | str | None, device: torch.device | str) -> Amp:
    """The autocast dtype name that ``amp`` means on ``device``: ``False``, ``"bf16"`` or
    ``"fp16"`` (see the module docstring for ``auto``)."""
    import torch

    device = torch.device(device)
    if not amp:
        return False
    check_amp(amp, "amp")
    if amp == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if device.type == "cpu" and cpu_has_native_bf16():
            return "bf16"
        return False
    if amp is True or amp == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return "fp16"
        return "bf16"
    if device.type != "cuda":  # what is left is fp16
        raise ValueError(f"amp='fp16' needs a CUDA device, got {device.type}; use bf16")
    return "fp16"


def resolve_channels_last(channels_last: bool | str | None, device: torch.device | str) -> bool:
    """Whether ``channels_last`` means NHWC on ``device`` (``auto``: see the module docstring)."""
    import torch

    device = torch.device(device)
    if channels_last is None:
        return False
    check_channels_last(channels_last, "channels_last")
    if channels_last != "auto":
        return bool(channels_last)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.cuda.get_device_capability(index) >= (7, 0)
    return device.type == "cpu" and cpu_has_native_bf16()


def autocast_context(device: torch.device | str, amp: bool | str | None):
    """The autocast context of ``amp`` on ``device`` (a no-op context for float32)."""
    import torch

    device = torch.device(device)
    resolved = resolve_amp(amp, device)
    if not resolved:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if resolved == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def precision_record(amp: bool | str | None, channels_last: bool | str | None,
                     device: torch.device | str) -> dict:
    """What a result records about its forward pass: ``{"amp": False|"bf16"|"fp16",
    "channels_last": bool}`` as resolved on ``device``."""
    return {"amp": resolve_amp(amp, device),
            "channels_last": resolve_channels_last(channels_last, device)}


def is_channels_last(module: nn.Module) -> bool:
    """Whether ``module``'s 4-d weights are in NHWC (its first 4-d parameter is)."""
    import torch

    for p in module.parameters():
        if p.ndim == 4:
            return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    return False


@contextlib.contextmanager
def memory_format(module: nn.Module, channels_last: bool) -> Iterator[None]:
    """Run the block with ``module``'s 4-d weights in NHWC when ``channels_last`` (values are
    unchanged); the previous format is restored afterwards, so a model that trains in NHWC is
    left in NHWC by a validation pass."""
    import torch

    if not channels_last or is_channels_last(module):
        yield
        return
    module.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        module.to(memory_format=torch.contiguous_format)
