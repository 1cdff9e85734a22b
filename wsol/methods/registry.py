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
    """Build method ``name`` on ``backbone`` with its keyword arguments.

    ``cream=True`` (config ``method.cream: true``) adds CREAM to the method
    (:func:`wsol.methods.cream.with_cream`); CREAM's own keywords (``tau``, ``stage``, ...,
    :data:`wsol.methods.cream.CREAM_OPTIONS`) then sit next to the method's.
    """
    import wsol.methods  # noqa: F401

    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(sorted(_METHODS))}")
    cls = _METHODS[name]
    cream = kwargs.pop("cream", False)
    if not isinstance(cream, bool):
        raise ValueError(f"method {name!r}: cream must be true or false, got {cream!r}")
    if cream:
        if cls.with_cream:
            raise ValueError(f"method {name!r} already is CREAM (on CAM); cream: true adds "
                             "CREAM to the other methods (e.g. name: has, cream: true)")
        from wsol.methods.cream import with_cream

        cls = with_cream(cls)
    return cls(backbone, **kwargs)
