"""wsol: weakly supervised object localization (CAM, CREAM, B-CAM) and the wsolevaluation protocol."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Loaded on first access so that ``import wsol`` stays light (no torch import).
# ``wsol.localize(method, images)`` is :func:`wsol.localization.pipeline.localize`.
_LAZY = {"localize": ("wsol.localization.pipeline", "localize"),
         "compute_maps": ("wsol.localization.pipeline", "compute_maps"),
         "LocalizationResult": ("wsol.localization.pipeline", "LocalizationResult"),
         "Localizer": ("wsol.api", "Localizer")}

__all__ = ["LocalizationResult", "Localizer", "__version__", "compute_maps", "localize"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'wsol' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    return module if attr is None else getattr(module, attr)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
