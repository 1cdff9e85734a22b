"""Run configuration: documented defaults, YAML files, ``key=value`` overrides.

A thin layer over plain dictionaries: the library API never needs it (every class takes plain
keyword arguments); the CLI resolves a config here and saves it as ``config.yaml`` next to the
results. Overrides are type-checked against the defaults (an int may stand for a float; ``null``
is accepted where the default is ``None``). ``model`` and ``method`` sections are open: keys
other than the reserved ones are passed to the model / method constructor as keyword arguments,
which validate them.
"""

from __future__ import annotations

import copy
import re
import os
from pathlib import Path
from typing import Any

import yaml
from wsol.errors import ConfigError
from wsol.utils.precision import check_amp, check_channels_last
from wsol.utils.streams import check_chunk_size, check_streams

#: Every known key with its default and meaning.
DEFAULTS: dict[str, Any] = {
    "seed": 0,  # base seed; rank r of a distributed run uses seed + r for its own randomness
    "deterministic": False,  # torch.use_deterministic_algorithms + cudnn.deterministic
    "device": "auto",  # auto | cpu | cuda | cuda:N
    "run_dir": None,  # where checkpoints, metrics.csv, config.yaml and results.json go
    "model": {
        "name": "tiny_cnn",  # see `wsol models` / wsol.models.list_models()
        "pretrained": False,  # false | true (weights available on this machine) | path to a checkpoint
        "freeze_stages": 0,  # freeze the first N stages of the backbone (CPU budgets)
    },
    "method": {
        "name": "cam",  # cam | cream | bcam; other keys are the method's keyword arguments
    },
    "data": {
        "root": None,  # image root: image ids in the metadata are relative to it
        "metadata": None,  # metadata root holding <split>/image_ids.txt ... (wsolevaluation layout)
        "mask_root": None,  # root of mask PNGs for mask-format splits (OpenImages)
        "mask_metadata": None,  # optional second metadata root with mask-format splits
        "train_split": "train",
        "val_split": "val",  # the split used for model selection (null: keep the last epoch)
        "test_splits": ["test"],
        "resize_size": 256,  # train: resize to (R, R), random crop C, flip
        "crop_size": 224,
        "image_size": 224,  # eval: resize to (S, S); maps are evaluated at S x S
        "batch_size": 32,
        "eval_batch_size": 32,
        "num_workers": 2,
        "pin_memory": "auto",  # auto: on when the device is CUDA
        "persistent_workers": True,
        "class_names": None,  # optional file with one class name per line
        # box regressor runs (`wsol regressor train`):
        "val_metadata": None,  # split dir with real boxes: val box accuracy per epoch
        "val_root": None,  # image root of val_metadata (default: data.root)
        "crop_scale": [0.2, 1.0],  # random-resized-crop area range (PSOL)
        "flip_prob": 0.5,
    },
    "regressor": {  # CREAM + regressor (the PSOL recipe); used by `wsol regressor train`
        "hidden": 512,  # MLP width [inferred]; 0 = a single linear layer
        "dropout": 0.0,
        "loss_weight": 50.0,  # PSOL: 50 * MSE
    },
    "optim": {
        "lr": 1e-3,
        "new_layer_lr_mult": 10.0,  # new layers (classifier, heads) train at lr x this
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 1e-4,
        "epochs": 50,
        "lr_decay_every": 15,  # step decay: lr x lr_decay_factor every N epochs
        "lr_decay_factor": 0.1,
    },
    "train": {
        "eval_every": 1,  # evaluate on the val split every N epochs (and after the last)
        "select_metric": "MaxBoxAccV2",  # val metric that picks best.pt (any key of results)
        "select_stage": None,  # map stage validation scores (CREAM: cam); null = method.stage
        # auto | false | bf16 (CPU and CUDA autocast) | fp16 (CUDA, GradScaler) | true = bf16;
        # auto: bf16 where the hardware has it (wsol.utils.precision), resolved at the start
        "amp": "auto",
        "channels_last": "auto",  # auto | true | false: NHWC for the model and the input batches
        "check_every": 50,  # check the summed loss for NaN/inf every N steps (no per-step sync)
        "max_steps_per_epoch": None,  # cap for smoke tests
    },
    "eval": {
        "cam_curve_interval": 0.001,  # thresholds np.arange(0, 1, interval)
        "iou_thresholds": [30, 50, 70],
        "multi_contour": True,  # MaxBoxAccV2 protocol (all contours); false = largest contour
        "normalization": "minmax",  # minmax | max | pas | ivr
        "amp": "auto",  # auto | false | bf16 | fp16 | true (= bf16): the evaluation forward
        "channels_last": "auto",  # auto | true | false: NHWC for the evaluation forward
        "threads": None,  # box-counting threads (null: min(4, cores)); overlap the next forward
        "streams": "auto",  # auto | N: CPU inference streams (wsol.utils.streams)
        "chunk_size": "auto",  # auto | N: images per forward call (auto: 4 on a CPU in bf16)
    },
}

_OPEN_SECTIONS = ("model", "method")




def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


_FLOAT_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _float_from_text(text: str) -> Any:
    """YAML 1.1 (PyYAML) reads ``1e-3`` as a string (it wants ``1.0e-3``): accept it as a
    number where a number is expected."""
    return float(text) if _FLOAT_TEXT.match(text.strip()) else text


#: Keys that take either a boolean or a string (a path).
_BOOL_OR_PATH = {"model.pretrained"}
#: Keys with a check of their own (:mod:`wsol.utils.precision`, :mod:`wsol.utils.streams`; neither
#: imports torch at module level).
_PRECISION_KEYS = {"train.amp": check_amp, "eval.amp": check_amp,
                   "train.channels_last": check_channels_last,
                   "eval.channels_last": check_channels_last, "eval.streams": check_streams,
                   "eval.chunk_size": check_chunk_size}


def _check_type(key: str, default: Any, value: Any, source: str) -> Any:
    if default is None or value is None:
        return value
    if key in _PRECISION_KEYS:
        try:
            _PRECISION_KEYS[key](value, key)
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        return value
    if key in _BOOL_OR_PATH:
        if not isinstance(value, (bool, str)):
            raise ConfigError(f"{source}: {key} must be true, false or a path, got {value!r}")
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, str):
            value = _float_from_text(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: {key} must be a number, got {value!r}")
        return float(value)
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
        return value
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {key} must be a string, got {value!r}")
        return value
    if isinstance(default, list):
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key} must be a list, got {value!r}")
        return value
    return value


def merge_config(base: dict, update: dict, defaults: dict | None, prefix: str = "",
                 source: str = "config") -> None:
    """Merge ``update`` into ``base`` in place, checking keys and types against ``defaults``."""
    for key, value in update.items():
        full = f"{prefix}{key}"
        open_section = prefix.rstrip(".") in _OPEN_SECTIONS
        if defaults is not None and key not in defaults and not open_section:
            known = ", ".join(sorted(defaults))
            raise ConfigError(f"{source}: unknown key {full!r} (known here: {known})")
        default = defaults.get(key) if defaults is not None else None
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {full} must be a mapping, got {value!r}")
            merge_config(base.setdefault(key, {}), value, default, f"{full}.", source)
        else:
            base[key] = _check_type(full, default, value, source)


def set_key(config: dict, dotted: str, value: Any, source: str = "override",
            defaults: dict | None = None) -> None:
    """Set ``a.b.c = value`` in ``config`` with the same checks as a YAML file."""
    parts = dotted.split(".")
    nested: dict = value
    for part in reversed(parts):
        nested = {part: nested}
    merge_config(config, nested, DEFAULTS if defaults is None else defaults, "", source)


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """``["optim.lr=0.01", "method.name=cream"]`` -> ``[("optim.lr", 0.01), ...]``."""
    out = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. optim.lr=0.01)")
        key, _, text = item.partition("=")
        out.append((key.strip(), _parse_value(text)))
    return out


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None,
                defaults: dict | None = None, base: dict | None = None) -> dict:
    """``defaults`` (:data:`DEFAULTS`) <- ``base`` <- YAML file <- ``key=value`` overrides.

    ``base`` is a previously resolved config (a run's ``config.yaml`` when resuming). Relative
    ``data.*`` paths in a YAML file are taken relative to the current directory.
    """
    defaults = DEFAULTS if defaults is None else defaults
    config = copy.deepcopy(defaults)
    if base is not None:
        merge_config(config, base, defaults, "", "base config")
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        merge_config(config, loaded, defaults, "", str(path))
    for key, value in parse_overrides(overrides or []):
        set_key(config, key, value, source=f"override {key}={value}", defaults=defaults)
    return config


def method_kwargs(config: dict) -> dict:
    """Keyword arguments of the configured method (its section minus ``name``)."""
    return {k: v for k, v in config["method"].items() if k != "name"}


def model_kwargs(config: dict) -> dict:
    """Keyword arguments of the configured backbone (minus the reserved keys)."""
    reserved = {"name", "pretrained", "freeze_stages"}
    return {k: v for k, v in config["model"].items() if k not in reserved}


def dump_config(config: dict) -> str:
    return yaml.safe_dump(config, sort_keys=False)


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists and scalars are leaves)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_dir() -> Path:
    """The configs shipped in the package (``wsol/configs/*.yaml``)."""
    return Path(__file__).resolve().parent / "configs"


def list_configs() -> list[str]:
    """Names of the shipped configs (``wsol train --config NAME``)."""
    return sorted(p.stem for p in config_dir().glob("*.yaml"))


def resolve_config_path(name: str | os.PathLike) -> Path:
    """A config file path: an existing file as given, else a shipped config of that name
    (with or without ``.yaml``)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = config_dir() / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
    if shipped.is_file():
        return shipped
    raise ConfigError(f"config file {name} does not exist (and is not a shipped config; "
                      "see `wsol config list`)")
