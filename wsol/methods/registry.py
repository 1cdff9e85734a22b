"""Method registry: ``build_method(name, backbone, **kwargs)``, ``list_methods()``.

Contract: a registered class subclasses :class:`wsol.methods.base.WSOLMethod` and takes the
backbone as first argument, then plain keyword arguments (the method's hyperparameters).
"""

from __future__ import annotations

from wsol.methods.base import WSOLMethod
from wsol.models.base import WSOLBackbone

_METHODS: dict[str, type[WSOLMethod]] = {}


def register_method(cls: type[WSOLMethod]) -> type[WSOLMethod]:
    if cls.name in _METHODS:
        raise ValueError(f"method {cls.name!r} registered twice")
    _METHODS[cls.name] = cls
    return cls


def list_methods() -> list[str]:
    import wsol.methods  # noqa: F401

    return sorted(_METHODS)


def build_method(name: str, backbone: WSOLBackbone, **kwargs) -> WSOLMethod:
    import wsol.methods  # noqa: F401

    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(sorted(_METHODS))}")
    return _METHODS[name](backbone, **kwargs)
