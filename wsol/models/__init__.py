"""Backbones (one file per family) behind a registry; see :mod:`wsol.models.base` for the contract."""

from wsol.models import efficientnet, inception, resnet, tiny, vgg  # noqa: F401  (registration)
from wsol.models.base import WSOLBackbone
from wsol.models.registry import create_model, list_models, register_model
from wsol.models.weights import LoadReport, PretrainedWeightsError

__all__ = ["LoadReport", "PretrainedWeightsError", "WSOLBackbone", "create_model", "list_models",
           "register_model"]
