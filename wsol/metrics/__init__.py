"""Localization and classification metrics as count accumulators (mergeable by addition).

- :class:`BoxAccumulator`: BoxAcc curves, MaxBoxAcc (v1), MaxBoxAccV2, Top-1/5 Loc, GT-known Loc.
- :class:`MaskAccumulator`: PxAP, pIoU, the pixel PR curve.
- :class:`ClassificationAccumulator`: top-1 / top-5 accuracy.
- :class:`LocalizationEvaluator`: one split's GT in evaluation geometry + the above.
"""

from wsol.metrics.boxes import BoxAccumulator
from wsol.metrics.classification import ClassificationAccumulator, topk_correct
from wsol.metrics.counts import CountAccumulator, MetricError
from wsol.metrics.evaluator import LocalizationEvaluator, gt_boxes_in_eval_geometry
from wsol.metrics.masks import MaskAccumulator, load_gt_mask

__all__ = [
    "BoxAccumulator",
    "ClassificationAccumulator",
    "CountAccumulator",
    "LocalizationEvaluator",
    "MaskAccumulator",
    "MetricError",
    "gt_boxes_in_eval_geometry",
    "load_gt_mask",
    "topk_correct",
]
