"""Backbones (one file per family) behind a registry; see :mod:`wsol.models.base` for the contract."""

from wsol.models.base import WSOLBackbone
from wsol.models.registry import create_model, list_models, register_model

__all__ = ["WSOLBackbone", "create_model", "list_models", "register_model"]
