"""WSOL methods behind a registry; see :mod:`wsol.methods.base`.

CAM, CREAM (CREAM on CAM), B-CAM, and the wsolevaluation zoo HaS, ACoL, SPG, ADL, CutMix; any
of the zoo methods takes ``cream=True`` for CREAM on top (:mod:`wsol.methods.cream`).
"""

from wsol.methods import acol  # noqa: F401
from wsol.methods import adl  # noqa: F401
from wsol.methods import bcam  # noqa: F401
from wsol.methods import cam  # noqa: F401  (registers "cam")
from wsol.methods import cream  # noqa: F401
from wsol.methods import cream_free  # noqa: F401  (registers "cream_free": training-free CREAM)
from wsol.methods import cutmix  # noqa: F401
from wsol.methods import has  # noqa: F401
from wsol.methods import spg  # noqa: F401
from wsol.methods.base import WSOLMethod
from wsol.methods.registry import build_method, list_methods, register_method

__all__ = ["WSOLMethod", "build_method", "list_methods", "register_method"]
