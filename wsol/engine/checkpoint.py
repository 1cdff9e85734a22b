"""Checkpoints: everything needed to resume a run or to use its model.

A checkpoint is a dict of tensors and plain Python values saved atomically with
``torch.save``, one format for every kind of model::

    {"format": "wsol-checkpoint", "kind": "classifier" | "regressor", "wsol_version",
     "method": name, "config": resolved config, "num_classes", "class_names",
     "state_dict": model state (backbone + heads + buffers such as CREAM's context embeddings),
     "epoch": completed epochs, "best_metric", "best_epoch", "history": per-epoch metric rows,
     "optimizer", "scheduler", "rng": {python, numpy, torch, cuda} (tensors and ints)}

``optimizer``/``scheduler``/``rng``/``history`` are present in ``last.pt`` only. Every file is
read with ``torch.load(weights_only=True)``: a checkpoint that holds any other pickled object
is refused before anything in it can run.
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
#: What a checkpoint holds: ``"classifier"`` (a WSOL method) or ``"regressor"`` (a box regressor).
KINDS = ("classifier", "regressor")




def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the module itself)."""
    return model.module if hasattr(model, "module") else model


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) RNG states as tensors and plain types only, so that a
    checkpoint loads with ``torch.load(weights_only=True)``."""
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64),
                   "gauss": gauss},
        "numpy": {"name": str(np_name), "keys": torch.from_numpy(np_keys.astype(np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss),
                  "cached_gaussian": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    config: dict,
    kind: str = "classifier",
    class_names: list[str] | None = None,
    epoch: int = 0,
    best_metric: float | None = None,
    best_epoch: int | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    include_rng: bool = False,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (see the module docstring for its content).

    ``extra`` holds further plain-data entries (the training loop stores the per-epoch metric
    rows under ``"history"`` so that ``metrics.csv`` can always be rebuilt)."""
    if kind not in KINDS:
        raise ValueError(f"checkpoint kind must be one of {KINDS}, got {kind!r}")
    inner = unwrap(model)
    state: dict[str, Any] = {
        "format": FORMAT,
        "kind": kind,
        "wsol_version": wsol.__version__,
        "method": getattr(inner, "name", kind),
        "config": config,
        "num_classes": getattr(inner, "num_classes", None),
        "class_names": class_names,
        "state_dict": inner.state_dict(),
        "epoch": epoch,
        "best_metric": best_metric,
        "best_epoch": best_epoch,
        **(extra or {}),
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
                         error: type[Exception] | None = None,
                         what: str = "checkpoint") -> object:
    """``torch.load(weights_only=True)`` a file: tensors and plain containers only, so a file
    holding any other pickled object (code) is refused without running anything. A missing,
    unreadable or non-plain-data file becomes ``error`` naming it."""
    error = error or CheckpointError
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise error(f"{what} {path} is not a plain-data checkpoint (loaded with "
                    f"weights_only=True; nothing in it was run): {first}") from None


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    kind: str | None = "classifier") -> dict:
    """Read and validate a checkpoint file; ``kind`` (None: any) must match its ``kind``."""
    state = read_checkpoint_file(path, map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{Path(path)} is not a wsol checkpoint (no 'format: {FORMAT}' entry)")
    found = state.get("kind", "classifier")
    if kind is not None and found != kind:
        hint = {"regressor": " (a box regressor: use it with `wsol regressor evaluate "
                             "--regressor`)",
                "classifier": " (a classifier: pass it as --classifier)"}.get(found, "")
        raise CheckpointError(f"{Path(path)} holds a {found} checkpoint, expected a {kind} "
                              f"one{hint}")
    return state


def load_state_checked(module: nn.Module, state_dict: dict, path: str | os.PathLike,
                       what: str) -> None:
    """``module.load_state_dict(state_dict)`` (strict) with a :class:`CheckpointError` naming
    the file and the first differing keys or shapes instead of a size-mismatch traceback."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state_dict and hasattr(state_dict[k], "shape")
              and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"shape mismatch {shapes[:3]}")
        if missing:
            parts.append(f"missing keys {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}")
        raise CheckpointError(f"checkpoint {path} does not fit {what}: {'; '.join(parts)}")
    module.load_state_dict(state_dict)


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
    load_state_checked(method, state["state_dict"], path,
                       f"method {config['method']['name']!r} on {config['model']['name']!r}")
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
