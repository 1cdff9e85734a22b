"""Reading evaluation results back: BoxAcc curves and the best box threshold.

An evaluation's ``results.json`` (``wsol evaluate``, ``wsol evaluate-maps``, training's final
evaluation) records ``thresholds``, ``box_acc_curves`` (BoxAcc(delta, t) in %, per IoU
threshold delta, method-spec §4) and ``best_threshold_by_iou``. This module is the one parser of
those keys; localization, the regressor's pseudo boxes and the report use it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsol.errors import UserError

__all__ = ["BOX_METRICS", "CLASSIFICATION_METRICS", "MASK_METRICS", "BoxAccCurves", "metric_names",
           "threshold_from_file", "threshold_from_results"]


@dataclass(frozen=True)
class BoxAccCurves:
    """BoxAcc (%) per threshold for each IoU threshold (keys ``"30"``, ``"50"``, ``"70"``)."""

    thresholds: np.ndarray
    by_iou: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        for iou, curve in self.by_iou.items():
            if curve.shape != self.thresholds.shape:
                raise ValueError(f"BoxAcc curve for IoU {iou} has {curve.size} values but there "
                                 f"are {self.thresholds.size} thresholds")

    @classmethod
    def from_results(cls, results: Mapping) -> BoxAccCurves | None:
        """Read ``box_acc_curves`` and ``thresholds`` from an evaluation's results dict; None
        when the curves are absent. Without ``thresholds`` the curve's T points are taken at
        ``np.arange(0, 1, 1 / T)`` (the evaluator's threshold grid)."""
        raw = results.get("box_acc_curves")
        if not isinstance(raw, Mapping) or not raw:
            return None
        by_iou = {str(k): np.asarray(v, dtype=np.float64) for k, v in raw.items()}
        n = next(iter(by_iou.values())).size
        thresholds = results.get("thresholds")
        t = (np.asarray(thresholds, dtype=np.float64) if thresholds is not None
             else np.arange(n, dtype=np.float64) / n)
        return cls(thresholds=t, by_iou=by_iou)

    def best_threshold(self, iou: str = "50") -> float:
        """The threshold of the (first) maximum of the curve at ``iou``."""
        if iou not in self.by_iou:
            raise ValueError(f"no BoxAcc curve for IoU {iou}; available: {sorted(self.by_iou)}")
        return float(self.thresholds[int(np.argmax(self.by_iou[iou]))])


def threshold_from_results(results: Mapping, iou: str = "50", source: str = "results") -> float:
    """The best box threshold recorded in an evaluation's results.

    Looks for ``best_threshold_by_iou[iou]``, then ``best_threshold``, then the argmax of
    ``box_acc_curves[iou]`` over ``thresholds``. Raises :class:`~wsol.errors.UserError` naming
    ``source`` if none is there or the value is not in [0, 1).
    """
    by_iou = results.get("best_threshold_by_iou")
    value: float | None = None
    if isinstance(by_iou, Mapping) and str(iou) in by_iou:
        value = float(by_iou[str(iou)])
    elif isinstance(results.get("best_threshold"), (int, float)):
        value = float(results["best_threshold"])
    else:
        curves = BoxAccCurves.from_results(results)
        if curves is not None and str(iou) in curves.by_iou:
            value = curves.best_threshold(str(iou))
    if value is None:
        raise UserError(f"{source}: no best threshold for IoU {iou} (looked for "
                        f"best_threshold_by_iou, best_threshold, box_acc_curves); keys present: "
                        f"{', '.join(sorted(results)) or 'none'}")
    if not 0.0 <= value < 1.0:
        raise UserError(f"{source}: threshold {value} is not in [0, 1)")
    return value


def threshold_from_file(path: str | os.PathLike, iou: str = "50",
                        refuse_splits: Sequence[str] = ()) -> tuple[float, dict]:
    """:func:`threshold_from_results` of a results JSON file, refusing results of a split in
    ``refuse_splits`` (a threshold must be chosen on val, never on test). Returns
    ``(t, {"split", "multi_contour", "path"})``."""
    from wsol.utils.io import read_json_object

    path = Path(path)
    results = read_json_object(path, "--threshold-from")
    split = results.get("split")
    if split is not None and (split in refuse_splits or str(split).split(":")[-1] in refuse_splits):
        raise UserError(f"--threshold-from: {path} holds results of split {split!r}; the "
                        "threshold must be chosen on the val split, never on test")
    t = threshold_from_results(results, iou, source=str(path))
    settings = results.get("settings") or {}
    return t, {"split": split, "multi_contour": settings.get("multi_contour"), "path": str(path)}


#: Scalar metrics an evaluation reports, by the split's localization type (method-spec §4).
CLASSIFICATION_METRICS = ("top1_cls", "top5_cls")
BOX_METRICS = ("MaxBoxAcc", "MaxBoxAccV2", "gt_known_loc", "top1_loc", "top5_loc")
MASK_METRICS = ("PxAP", "pIoU")


def metric_names(localization_type: str | None,
                 iou_thresholds: Sequence[int] = (30, 50, 70)) -> list[str]:
    """The scalar result keys of an evaluation of a split with ``localization_type``
    (``"boxes"``, ``"masks"`` or None): what ``train.select_metric`` may name."""
    names = list(CLASSIFICATION_METRICS)
    if localization_type == "boxes":
        names += [m for m in BOX_METRICS if m != "MaxBoxAcc" or 50 in iou_thresholds]
    elif localization_type == "masks":
        names += list(MASK_METRICS)
    return names
