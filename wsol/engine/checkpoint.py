"""Checkpoints: everything needed to resume a run or to use its model.

A checkpoint is a dict saved atomically with ``torch.save``::

    {"format": "wsol-checkpoint", "wsol_version", "method": name, "config": resolved config,
     "num_classes", "class_names", "state_dict": method state (backbone + heads + buffers such as
     CREAM's context embeddings), "epoch": completed epochs, "best_metric", "best_epoch",
     "optimizer", "scheduler", "rng": {python, numpy, torch, cuda}}

``optimizer``/``scheduler``/``rng`` are present in training checkpoints only.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import wsol
from wsol.methods import WSOLMethod
from wsol.utils.io import atomic_torch_save
from wsol.errors import CheckpointError

FORMAT = "wsol-checkpoint"




def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the module itself)."""
    return model.module if hasattr(model, "module") else model


def capture_rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    path: str | os.PathLike,
    method: nn.Module,
    *,
    config: dict,
    class_names: list[str] | None = None,
    epoch: int = 0,
    best_metric: float | None = None,
    best_epoch: int | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    include_rng: bool = False,
) -> Path:
    """Write a checkpoint atomically (see the module docstring for its content)."""
    inner = unwrap(method)
    state: dict[str, Any] = {
        "format": FORMAT,
        "wsol_version": wsol.__version__,
        "method": inner.name,
        "config": config,
        "num_classes": inner.num_classes,
        "class_names": class_names,
        "state_dict": inner.state_dict(),
        "epoch": epoch,
        "best_metric": best_metric,
        "best_epoch": best_epoch,
    }
    state.update(training_state(optimizer, scheduler, include_rng))
    return atomic_torch_save(path, state)


def training_state(optimizer: torch.optim.Optimizer | None = None, scheduler: Any | None = None,
                   include_rng: bool = False) -> dict[str, Any]:
    """The resume-only part of a checkpoint: optimizer, schedule and RNG states (when given)."""
    state: dict[str, Any] = {}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    if include_rng:
        state["rng"] = capture_rng_state()
    return state


def read_checkpoint_file(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                         error: type[ValueError] | None = None,
                         what: str = "checkpoint") -> object:
    """``torch.load`` a file, turning a missing or unreadable file into ``error`` naming it."""
    error = error or CheckpointError
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise error(f"{what} {path} could not be read: {exc}") from None


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read and validate a checkpoint file."""
    state = read_checkpoint_file(path, map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{Path(path)} is not a wsol checkpoint (no 'format: {FORMAT}' entry)")
    return state


def load_method(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                method_overrides: dict | None = None,
                overrides: list[str] | None = None) -> tuple[WSOLMethod, dict]:
    """Rebuild the method of a checkpoint and load its weights (eval mode).

    Returns ``(method, info)`` where info has ``config``, ``class_names``, ``epoch``, ``method``,
    ``num_classes``, ``best_metric``, ``best_epoch`` and ``path``. ``method_overrides`` changes
    inference-time options of the method (e.g. ``{"stage": "calibrated"}`` for CREAM) without
    touching the weights;
    ``overrides`` are ``key=value`` strings applied to the saved config (``data.root=...``,
    ``method.iterations=3``, ``eval.cam_curve_interval=0.01``).
    """
    import copy

    from wsol.config import parse_overrides, set_key
    from wsol.engine.build import build_from_config

    state = load_checkpoint(path, map_location)
    config = copy.deepcopy(state["config"])
    for key, value in (method_overrides or {}).items():
        set_key(config, f"method.{key}", value, source=f"method override {key}")
    for key, value in parse_overrides(overrides or []):
        set_key(config, key, value, source=f"override {key}={value}")
    method = build_from_config(config, num_classes=state["num_classes"], pretrained=False)
    missing, unexpected = method.load_state_dict(state["state_dict"], strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not match method {config['method']['name']!r} on "
            f"{config['model']['name']!r}: missing keys {missing[:5]}, unexpected {unexpected[:5]}")
    method.to(map_location).eval()
    info = {
        "config": config,
        "class_names": state.get("class_names"),
        "epoch": state.get("epoch"),
        "method": state.get("method"),
        "num_classes": state["num_classes"],
        "best_metric": state.get("best_metric"),
        "best_epoch": state.get("best_epoch"),
        "path": str(path),
    }
    return method, info
