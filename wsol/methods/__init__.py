"""WSOL methods (CAM, CREAM, B-CAM) behind a registry; see :mod:`wsol.methods.base`."""

from wsol.methods import bcam  # noqa: F401
from wsol.methods import cam  # noqa: F401  (registers "cam")
from wsol.methods import cream  # noqa: F401
from wsol.methods.base import WSOLMethod
from wsol.methods.registry import build_method, list_methods, register_method

__all__ = ["WSOLMethod", "build_method", "list_methods", "register_method"]
