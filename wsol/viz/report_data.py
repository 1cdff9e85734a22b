"""What ``wsol report`` reads: run directories and results JSON files, as table rows.

Inputs are run directories (``wsol train``) or results JSON files (``wsol evaluate``,
``wsol evaluate-maps``, training's ``results.json``). Every results file becomes one
:class:`ResultRow`:

- a run directory gives its training result (``results.json``: the selected checkpoint on the
  first test split) and every ``wsol evaluate`` result under ``eval/`` (any depth) or next to
  the run's files, except copies of the training result (the final evaluation writes
  ``eval/<split>/results.json`` as well: a file whose every entry equals the training
  result's is the same evaluation);
- a JSON file given directly is a row of its own; its run is the directory of the checkpoint it
  names (``<run>/checkpoints/x.pt`` -> ``<run>``) when that is a run directory.

A row knows what produced it (training, ``wsol evaluate`` with its overrides, a mask
evaluation, a ``cream fit`` plug-in) from the file's contents, not its name; every key is
optional, and what is missing becomes ``None`` (shown as a dash) or a note.
"""

from __future__ import annotations

import csv
import functools
import inspect
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsol.errors import RunDirError
from wsol.utils.io import read_json_object

__all__ = [
    "INFERENCE_KEYS",
    "METRIC_KEYS",
    "ResultRow",
    "RunSummary",
    "checkpoint_meta",
    "collect_rows",
    "load_results_file",
    "load_run",
    "method_title",
    "round_floats",
    "unique_names",
]

#: Keys of which at least one makes a JSON object a results file.
METRIC_KEYS = ("top1_cls", "top1_loc", "gt_known_loc", "MaxBoxAcc", "MaxBoxAccV2", "PxAP",
               "box_acc_curves")

#: The inference-time options of each method shown in the table (method-spec §2-3): CREAM's
#: map stage and EM settings, B-CAM's map type. CAM has none.
INFERENCE_KEYS: dict[str, tuple[str, ...]] = {
    "cream": ("stage", "iterations", "tau", "feature_normalization", "pi_init"),
    "bcam": ("map_type", "mask_normalization"),
}

_METHOD_NAMES = {"cam": "CAM", "cream": "CREAM", "bcam": "B-CAM"}


def round_floats(value: Any, digits: int = 10) -> Any:
    """``value`` with every float rounded to ``digits`` significant digits (so that
    ``0.34600000000000003`` prints as ``0.346``), in nested dicts/lists/tuples."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, Mapping):
        return {k: round_floats(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(round_floats(v, digits) for v in value)
    return value


def _read_json(path: Path) -> dict:
    try:
        return read_json_object(path)
    except ValueError as exc:
        raise RunDirError(str(exc)) from None


def is_results(obj: Mapping) -> bool:
    """Whether a JSON object looks like an evaluation's results (has a metric key)."""
    return any(k in obj for k in METRIC_KEYS)


@functools.lru_cache(maxsize=64)
def _checkpoint_meta(path: str, mtime: float) -> dict:
    from wsol.engine.checkpoint import load_checkpoint

    state = load_checkpoint(path, map_location="cpu")
    return {k: state.get(k) for k in ("method", "config", "num_classes", "class_names", "epoch",
                                      "best_epoch", "best_metric")}


def checkpoint_meta(path: Path | None) -> dict | None:
    """``method``, ``config``, ``num_classes``, ``class_names``, ``epoch``, ``best_epoch`` of a
    checkpoint (read once per file); None when there is no such readable checkpoint."""
    from wsol.errors import WsolError

    if path is None or not path.is_file():
        return None
    try:
        return _checkpoint_meta(str(path.resolve()), path.stat().st_mtime)
    except (WsolError, ValueError, OSError):
        return None


@dataclass
class RunSummary:
    """A run directory: its config, per-epoch metrics and the result rows found in it."""

    path: Path
    name: str
    config: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)  # the training's results.json
    epochs: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rows: list[ResultRow] = field(default_factory=list)

    @property
    def method(self) -> str:
        return str((self.config.get("method") or {}).get("name") or self.results.get("method")
                   or "?")

    @property
    def model(self) -> str:
        return str((self.config.get("model") or {}).get("name") or self.results.get("model")
                   or "?")

    def checkpoint(self) -> Path | None:
        """``checkpoints/best.pt``, else ``checkpoints/last.pt``, else None."""
        for name in ("best.pt", "last.pt"):
            path = self.path / "checkpoints" / name
            if path.is_file():
                return path
        return None


@dataclass
class ResultRow:
    """One results file: a row of the metrics table, a line in the curves, a grid column."""

    label: str
    results: dict
    source: str  # "training", "evaluate", "cream fit + evaluate", "results file"
    path: Path | None = None
    run: RunSummary | None = None
    checkpoint: Path | None = None
    notes: list[str] = field(default_factory=list)

    # -- what the results say -------------------------------------------------------------
    @property
    def meta(self) -> dict | None:
        """The checkpoint's :func:`checkpoint_meta` (None without a readable checkpoint)."""
        return checkpoint_meta(self.checkpoint)

    @property
    def config(self) -> dict:
        """The config the results were produced with: the checkpoint's (else the run's), with
        the evaluation's ``key=value`` overrides applied to its ``method`` and ``eval``
        sections."""
        import copy

        meta = self.meta
        base = (meta or {}).get("config") or (self.run.config if self.run else {}) or {}
        config = copy.deepcopy(base)
        for key, value in self.overrides.items():
            parts = key.split(".")
            if len(parts) == 2 and parts[0] in ("method", "eval"):
                config.setdefault(parts[0], {})[parts[1]] = value
        return config

    @property
    def overrides(self) -> dict[str, Any]:
        """The evaluation's ``key=value`` overrides (``wsol evaluate ... method.stage=x``)."""
        import yaml

        out: dict[str, Any] = {}
        for item in self.results.get("overrides") or []:
            if isinstance(item, str) and "=" in item:
                key, text = item.split("=", 1)
                try:
                    out[key.strip()] = yaml.safe_load(text)
                except yaml.YAMLError:
                    out[key.strip()] = text
        return out

    @property
    def method(self) -> str:
        meta = self.meta or {}
        return str(self.results.get("method") or meta.get("method")
                   or (self.config.get("method") or {}).get("name")
                   or (self.run.method if self.run else "?"))

    @property
    def model(self) -> str:
        return str(self.results.get("model") or (self.config.get("model") or {}).get("name")
                   or (self.run.model if self.run else "?"))

    @property
    def split(self) -> str | None:
        split = self.results.get("split")
        return str(split) if split is not None else None

    @property
    def eval_type(self) -> str:
        return str(self.results.get("eval_type") or "prob")

    @property
    def num_images(self) -> int | None:
        n = self.results.get("num_images")
        return int(n) if isinstance(n, (int, float)) and not isinstance(n, bool) else None

    @property
    def num_classes(self) -> int | None:
        """The checkpoint's class count (None without a readable checkpoint)."""
        meta = self.meta
        if meta and isinstance(meta.get("num_classes"), int):
            return int(meta["num_classes"])
        return None

    @property
    def class_names(self) -> list[str] | None:
        meta = self.meta
        names = meta.get("class_names") if meta else None
        return [str(n) for n in names] if isinstance(names, (list, tuple)) and names else None

    @property
    def is_plugin(self) -> bool:
        """A CREAM checkpoint made by ``wsol cream fit`` from a CAM-style run: the results are
        CREAM's while the run that trained the weights trained another method."""
        if self.method != "cream":
            return False
        trained = self.trained_method
        return trained is not None and trained != "cream"

    @property
    def trained_method(self) -> str | None:
        """The method the weights were trained with: the run's config; for a checkpoint outside
        a run, the config.yaml of the run directory its config names (``run_dir``)."""
        if self.run is not None and self.run.config:
            return self.run.method
        run_dir = (self.config or {}).get("run_dir")
        if run_dir and (Path(run_dir) / "config.yaml").is_file():
            import yaml

            try:
                cfg = yaml.safe_load((Path(run_dir) / "config.yaml").read_text()) or {}
            except (OSError, yaml.YAMLError):
                return None
            return (cfg.get("method") or {}).get("name")
        return None

    def inference_settings(self) -> dict[str, Any]:
        """The method's inference options (:data:`INFERENCE_KEYS`) as evaluated: the config's
        method section with the overrides, the constructor's defaults where unset."""
        method = self.method
        keys = INFERENCE_KEYS.get(method, ())
        if not keys:
            return {}
        section = {k: v for k, v in (self.config.get("method") or {}).items() if k != "name"}
        defaults = _constructor_defaults(method)
        return {k: round_floats(section.get(k, defaults.get(k))) for k in keys
                if k in section or k in defaults}

    def protocol_settings(self) -> dict[str, Any]:
        """Evaluation protocol options of the results (normalization, contours, threshold step,
        image size)."""
        settings = self.results.get("settings") or {}
        out: dict[str, Any] = {}
        if self.results.get("normalization"):
            out["normalization"] = self.results["normalization"]
        for key in ("multi_contour", "cam_curve_interval", "image_size"):
            if key in settings:
                out[key] = round_floats(settings[key])
        return out

    def title(self) -> str:
        """What the row's maps are, e.g. ``CREAM (stage calibrated)``, ``B-CAM (mask)``."""
        return method_title(self.method, self.inference_settings(), self.eval_type,
                            plugin=self.is_plugin)

    def checkpoint_text(self) -> str:
        """Which checkpoint was evaluated: ``epoch 8 of 10, best val MaxBoxAccV2`` (selected on
        a split by a metric), ``epoch 10 of 10 (last)``, or an em dash when unknown."""
        epoch = self.results.get("epoch")
        if epoch is None and self.meta:
            epoch = self.meta.get("epoch")
        if not isinstance(epoch, (int, float)):
            return "\u2014"
        config = self.config
        total = len(self.run.epochs) if self.run is not None and self.run.epochs else \
            (config.get("optim") or {}).get("epochs")
        text = f"epoch {int(epoch)}" + (f" of {int(total)}" if total else "")
        on = self.results.get("selected_on", (config.get("data") or {}).get("val_split"))
        metric = self.results.get("select_metric",
                                  (config.get("train") or {}).get("select_metric"))
        if (self.checkpoint is not None and self.checkpoint.name == "last.pt") or not on:
            return f"{text} (last)"
        return f"{text}, best {on} {metric}" if metric else text


@functools.lru_cache(maxsize=8)
def _constructor_defaults(method: str) -> dict[str, Any]:
    classes: dict[str, Any] = {}
    try:
        from wsol.methods.bcam import BCAM
        from wsol.methods.cream import CREAM

        classes = {"cream": CREAM, "bcam": BCAM}
    except ImportError:  # pragma: no cover - the methods package always imports
        return {}
    cls = classes.get(method)
    if cls is None:
        return {}
    return {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def method_title(method: str, settings: Mapping[str, Any], eval_type: str = "prob",
                 plugin: bool = False) -> str:
    """A short human title of a method's maps: ``CAM``, ``CREAM (stage fused)``, ``CREAM
    plug-in (stage calibrated)``, ``B-CAM (gradient map)``, ``B-CAM (mask)``."""
    name = _METHOD_NAMES.get(method, method)
    if method == "cream":
        name = "CREAM plug-in" if plugin else "CREAM"
        stage = settings.get("stage")
        return f"{name} (stage {stage})" if stage else name
    if method == "bcam":
        if eval_type == "mask":
            return f"{name} (mask)"
        map_type = settings.get("map_type")
        return f"{name} ({map_type} map)" if map_type else name
    return name if eval_type != "mask" else f"{name} (mask)"


def _settings_label(row: ResultRow, run_checkpoint: Path | None) -> str:
    """What distinguishes an evaluation of a run from its training result: its overrides
    (data paths left out), a mask evaluation, another split, another checkpoint."""
    parts = []
    for key, value in row.overrides.items():
        if key.startswith("data."):
            continue
        short = key.split(".", 1)[1] if key.startswith("method.") else key
        parts.append(f"{short}={round_floats(value)}")
    if row.eval_type == "mask":
        parts.append("mask")
    if row.split and row.split != "test":
        parts.append(row.split)
    if row.checkpoint is not None and (run_checkpoint is None
                                       or row.checkpoint.resolve() != run_checkpoint.resolve()):
        parts.append(row.checkpoint.name if row.checkpoint.stem not in ("best",)
                     else row.checkpoint.parent.name + "/" + row.checkpoint.name)
    if row.is_plugin:
        parts.insert(0, "cream fit")
    return ", ".join(str(p) for p in parts)


def _resolve_checkpoint(results: Mapping, near: Sequence[Path]) -> Path | None:
    """The checkpoint a results file names: as written (absolute, or relative to the working
    directory), else relative to each of ``near`` (the file's folder and its parents)."""
    text = results.get("checkpoint")
    if not isinstance(text, str) or not text:
        return None
    path = Path(text)
    if path.is_file():
        return path
    if not path.is_absolute():
        for base in near:
            if (base / path).is_file():
                return base / path
    return None


def _source(results: Mapping, plugin: bool) -> str:
    if plugin:
        return "cream fit + evaluate"
    if "selected_on" in results or "select_metric" in results:
        return "training"
    if "overrides" in results:
        return "evaluate"
    return "results file"


def _is_copy(candidate: Mapping, of: Mapping) -> bool:
    """Every entry of ``candidate`` equals ``of``'s (training's per-split copy)."""
    return bool(of) and all(k in of and of[k] == v for k, v in candidate.items())


def _run_result_files(path: Path) -> list[Path]:
    files = sorted(p for p in (path / "eval").rglob("*.json") if p.is_file()) \
        if (path / "eval").is_dir() else []
    files += sorted(p for p in path.glob("*.json") if p.is_file() and p.name != "results.json"
                    and not p.name.startswith("."))
    return files


def load_run(run_dir: str | os.PathLike, name: str | None = None) -> RunSummary:
    """Read ``config.yaml``, ``metrics.csv``, ``results.json`` and the ``eval/`` results of a
    run (see the module docstring); raises :class:`RunDirError` when none of them is there."""
    import yaml

    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirError(f"{path}: run directory does not exist")
    run = RunSummary(path=path, name=name or path.resolve().name)
    config_path = path / "config.yaml"
    if config_path.is_file():
        try:
            run.config = yaml.safe_load(config_path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise RunDirError(f"{config_path}: not valid YAML ({exc})") from None
        if not isinstance(run.config, dict):
            raise RunDirError(f"{config_path}: not a mapping")
    metrics_path = path / "metrics.csv"
    if metrics_path.is_file():
        with open(metrics_path, newline="", encoding="utf-8") as f:
            run.epochs = list(csv.DictReader(f))
    if (path / "results.json").is_file():
        run.results = _read_json(path / "results.json")
    own_ckpt = run.checkpoint()
    if run.results:
        ckpt = _resolve_checkpoint(run.results, [path, path.parent]) or own_ckpt
        row = ResultRow(label=run.name, results=run.results, source="training",
                        path=path / "results.json", run=run, checkpoint=ckpt)
        row.source = _source(run.results, row.is_plugin)
        run.rows.append(row)
    for file in _run_result_files(path):
        results = _read_json(file)
        if not is_results(results) or _is_copy(results, run.results):
            continue
        ckpt = _resolve_checkpoint(results, [file.parent, path, path.parent]) or (
            own_ckpt if "checkpoint" not in results else None)
        row = ResultRow(label=run.name, results=results, source="evaluate", path=file, run=run,
                        checkpoint=ckpt)
        if "checkpoint" in results and ckpt is None:
            row.notes.append(f"checkpoint {results['checkpoint']} not found")
        row.source = _source(results, row.is_plugin)
        extra = _settings_label(row, own_ckpt) or file.stem
        row.label = f"{run.name} · {extra}"
        run.rows.append(row)
    if not run.results:
        run.notes.append("no results.json (no final evaluation)" if not run.rows else
                         "no results.json (training did not finish its final evaluation)")
    if not (config_path.is_file() or run.rows or run.epochs):
        raise RunDirError(f"{path}: not a wsol run directory (no config.yaml, results.json, "
                          f"eval/*.json or metrics.csv)")
    return run


def load_results_file(path: str | os.PathLike, name: str | None = None) -> ResultRow:
    """A results JSON file given on the command line as one row (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"{path}: results file does not exist")
    results = _read_json(path)
    if not is_results(results):
        raise RunDirError(f"{path}: not a results file (none of the keys "
                          f"{', '.join(METRIC_KEYS)})")
    ckpt = _resolve_checkpoint(results, [path.parent, *path.parent.parents][:4])
    run = None
    if ckpt is not None and ckpt.parent.name == "checkpoints" and (
            ckpt.parent.parent / "config.yaml").is_file():
        run = load_run(ckpt.parent.parent)
        run.rows = []
    row = ResultRow(label=name or path.stem, results=results, source="results file", path=path,
                    run=run, checkpoint=ckpt)
    if "checkpoint" in results and ckpt is None:
        row.notes.append(f"checkpoint {results['checkpoint']} not found")
    row.source = _source(results, row.is_plugin)
    return row


def unique_names(paths: Sequence[Path]) -> list[str]:
    """Short display names: the directory name, with parents added until they are distinct. A
    results file is named by its folder, plus its stem unless that is ``results*``
    (``cam-plugin`` for ``cam-plugin/results_test.json``, ``x/calibrated`` for
    ``x/calibrated.json``)."""
    def parts_of(p: Path, keep_stem: bool) -> tuple[str, ...]:
        r = p.resolve()
        if p.suffix != ".json":
            return r.parts
        return r.with_suffix("").parts if keep_stem else r.parent.parts

    for keep_all in (False, True):
        parts = [parts_of(p, keep_all or not p.stem.startswith("results")) for p in paths]
        for depth in range(1, max((len(p) for p in parts), default=1) + 1):
            names = ["/".join(p[-depth:]) for p in parts]
            if len(set(names)) == len(names):
                if keep_all or len(set(parts)) == len(parts):
                    return names
                break
    return [str(p) for p in paths]


def collect_rows(inputs: Sequence[str | os.PathLike]) -> tuple[list[RunSummary], list[ResultRow]]:
    """Runs (directories) and rows (every results file) of the command-line inputs, in order;
    a results file given twice (directly and inside a run) is one row."""
    paths = [Path(p) for p in inputs]
    for p in paths:
        if not p.exists():
            raise RunDirError(f"{p}: no such run directory or results file")
    runs: list[RunSummary] = []
    rows: list[ResultRow] = []
    seen: set[Path] = set()
    for p, name in zip(paths, unique_names(paths)):
        if p.is_dir():
            run = load_run(p, name)
            runs.append(run)
            new = [r for r in run.rows if r.path is None or r.path.resolve() not in seen]
        else:
            new = [load_results_file(p, name)]
        for r in new:
            if r.path is not None:
                seen.add(r.path.resolve())
        rows += new
    labels = [r.label for r in rows]
    for k, r in enumerate(rows):  # distinct labels: the file stem disambiguates
        if labels.count(r.label) > 1 and r.path is not None:
            r.label = f"{r.label} ({r.path.stem})" if labels[:k].count(labels[k]) else r.label
    return runs, rows
