"""The wsolevaluation protocol for one split: GT in evaluation geometry + the accumulators.

Evaluation geometry (method-spec §4): images are resized to ``S x S`` (``image_size``, 224) without
cropping. GT boxes become ``int(x * S / W)`` per coordinate (:func:`resize_boxes`); GT masks are
read, nearest-resized to ``S``, binarized ``> 0.5``, with ``ignore = ignore & ~foreground``
(:func:`load_gt_mask`). Maps handed to :meth:`LocalizationEvaluator.update` must already be in
that geometry and normalized to [0, 1] (:func:`wsol.localization.postprocess_maps`).

Definitions reported by :meth:`LocalizationEvaluator.compute` (all in %):

- ``MaxBoxAcc``: ``max_t BoxAcc(50, t)``, largest contour (v1);
- ``MaxBoxAccV2``: mean over the IoU thresholds of ``max_t BoxAcc(delta, t)``, all contours (v2);
- ``max_box_acc_by_iou``, ``box_acc_curves``, ``best_threshold_by_iou``: per IoU threshold, in the
  evaluator's contour mode (``multi_contour``);
- ``gt_known_loc``: ``max_box_acc_by_iou["50"]`` (class ignored; the threshold is optimized);
- ``top1_loc`` / ``top5_loc``: ``max_t`` of the share of images whose box is correct at IoU 50
  at threshold ``t`` *and* whose GT class is the top-1 prediction / among the top 5 (per IoU
  threshold in ``top1_loc_by_iou`` / ``top5_loc_by_iou``); None without class predictions;
- mask splits: ``PxAP``, ``pIoU``, ``pr_curve`` (see :mod:`wsol.metrics.masks`);
- ``top1_acc`` / ``top5_acc``: classification accuracy when predictions were given.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from wsol.data.metadata import Metadata
from wsol.localization.boxes import (
    ScoreMap,
    ScoreMapError,
    cam_thresholds,
    is_tensor,
    resize_boxes,
)
from wsol.metrics.boxes import BoxAccumulator
from wsol.metrics.classification import ClassificationAccumulator, topk_correct
from wsol.metrics.counts import CountAccumulator, MetricError
from wsol.metrics.masks import MaskAccumulator, load_gt_mask

if TYPE_CHECKING:
    import torch


def gt_boxes_in_eval_geometry(metadata: Metadata, image_size: int = 224) -> dict[str, np.ndarray]:
    """Every image's GT boxes as an int64 ``(K, 4)`` array at ``image_size x image_size``."""
    if metadata.boxes is None:
        raise ValueError("metadata has no box localization")
    out: dict[str, np.ndarray] = {}
    for image_id, boxes in metadata.boxes.items():
        size = metadata.image_sizes.get(image_id)
        if size is None:
            raise ValueError(f"image {image_id!r} has boxes but no entry in image_sizes.txt")
        out[image_id] = resize_boxes(np.asarray(boxes, dtype=np.int64).reshape(-1, 4), size,
                                     (image_size, image_size))
    return out


class LocalizationEvaluator:
    """Accumulates box or mask localization (by the metadata's localization type) and, when
    class predictions are given, classification, over batches of normalized score maps.

    Args:
        metadata: the split (:func:`wsol.data.metadata.read_metadata`).
        image_size: evaluation resolution ``S`` (maps are ``S x S``).
        cam_curve_interval: threshold sweep ``np.arange(0, 1, interval)``.
        iou_thresholds: IoU thresholds in % for the box metrics.
        multi_contour: v2 (all contours) for the reported curves if True, v1 if False.
        mask_root: directory the mask paths are relative to (needed for mask splits).
        score_histograms: box splits: also histogram scores inside / outside the GT boxes.
        num_threads: threads that count boxes / bin masks (None: ``min(4, os.cpu_count())``;
            1: everything in the caller's thread). With more than one, :meth:`update` checks and
            quantizes the batch, hands the tracing to the pool and returns, so the caller's next
            forward pass overlaps it; :meth:`compute`, :meth:`to_tensor` and :meth:`sync` wait
            for it. The numbers are identical for every value.

    Distributed evaluation: every rank updates with its own images, then
    ``ev.load_tensor(all_reduce_sum(ev.to_tensor()))`` and ``ev.compute()``.
    """

    def __init__(self, metadata: Metadata, image_size: int = 224, cam_curve_interval: float = 0.001,
                 iou_thresholds: Sequence[int] = (30, 50, 70), multi_contour: bool = True,
                 mask_root: str | os.PathLike | None = None,
                 score_histograms: bool = False, num_threads: int | None = None) -> None:
        self.metadata = metadata
        self.image_size = int(image_size)
        self.cam_curve_interval = float(cam_curve_interval)
        self.thresholds = cam_thresholds(cam_curve_interval)
        self.localization_type = metadata.localization_type
        self.classification = ClassificationAccumulator()
        self.boxes: BoxAccumulator | None = None
        self.masks: MaskAccumulator | None = None
        self._gt_boxes: dict[str, np.ndarray] = {}
        self._gt_masks: dict[str, np.ndarray] = {}
        self.mask_root = mask_root
        if self.localization_type == "boxes":
            self._gt_boxes = gt_boxes_in_eval_geometry(metadata, self.image_size)
            self.boxes = BoxAccumulator(self.thresholds, iou_thresholds, multi_contour,
                                        score_histograms=score_histograms,
                                        num_threads=num_threads)
        elif self.localization_type == "masks":
            if mask_root is None:
                raise ValueError("a mask split needs mask_root (the directory of the mask PNGs)")
            self.masks = MaskAccumulator(self.thresholds, num_threads=num_threads)
        else:
            raise ValueError(
                "metadata has no localization.txt: nothing to evaluate localization against")
        self.iou_thresholds = tuple(int(d) for d in iou_thresholds)
        self.multi_contour = bool(multi_contour)

    @property
    def gt_boxes(self) -> dict[str, np.ndarray] | None:
        """GT boxes by image id in the evaluation geometry (box splits), else None."""
        return self._gt_boxes if self.boxes is not None else None

    @property
    def accumulators(self) -> list[CountAccumulator]:
        main = self.boxes if self.boxes is not None else self.masks
        return [main, self.classification]

    def gt_mask(self, image_id: str) -> np.ndarray:
        """The cached ``(S, S)`` uint8 GT mask (0 / 1 / 255) of ``image_id``."""
        mask = self._gt_masks.get(image_id)
        if mask is None:
            entry = self.metadata.masks.get(image_id) if self.metadata.masks else None
            if entry is None:
                raise ValueError(f"image {image_id!r} has no mask in localization.txt")
            mask = load_gt_mask(self.mask_root, entry.mask_paths, entry.ignore_path,
                                self.image_size)
            self._gt_masks[image_id] = mask
        return mask

    def update(self, scoremaps: ScoreMap, image_ids: Sequence[str],
               logits_or_topk: torch.Tensor | np.ndarray | None = None) -> None:
        """Add a batch of normalized maps ``(B, S, S)`` for ``image_ids``; ``logits_or_topk``
        ((B, C) scores or (B, k) ranked class ids) adds classification and Top-k Loc."""
        batch = len(image_ids)
        expected = (batch, self.image_size, self.image_size)
        if tuple(scoremaps.shape) != expected:
            raise ValueError(f"score maps of shape {tuple(scoremaps.shape)} for {batch} image ids;"
                             f" expected {expected}")
        unknown = [i for i in image_ids if i not in self.metadata.class_labels]
        if unknown:
            raise ValueError(f"image id {unknown[0]!r} is not in the split's metadata")
        top1 = top5 = None
        if logits_or_topk is not None:
            labels = np.asarray([self.metadata.class_labels[i] for i in image_ids])
            top1, top5 = topk_correct(logits_or_topk, labels)
        try:  # the accumulators check the maps before counting anything
            if self.boxes is not None:
                missing = [i for i in image_ids if i not in self._gt_boxes]
                if missing:
                    raise ValueError(f"image {missing[0]!r} has no box in localization.txt")
                self.boxes.update(scoremaps, [self._gt_boxes[i] for i in image_ids], top1, top5)
            else:
                masks = np.stack([self.gt_mask(i) for i in image_ids])
                if is_tensor(scoremaps):
                    import torch

                    masks = torch.from_numpy(masks).to(scoremaps.device)
                self.masks.update(scoremaps, masks)
        except ScoreMapError as exc:
            where = f"image {image_ids[exc.index]!r}: " if exc.index is not None else ""
            raise ScoreMapError(where + str(exc), exc.index) from None
        if top1 is not None:
            self.classification.add_flags(top1, top5)

    def sync(self) -> None:
        """Wait for the counting still running in the pool (see ``num_threads``)."""
        for acc in self.accumulators:
            acc.sync()

    def close(self) -> None:
        """Wait for pending work and stop the pool's threads."""
        for acc in self.accumulators:
            acc.close()

    def reset(self) -> None:
        for acc in self.accumulators:
            acc.reset()

    def to_tensor(self, device: torch.device | str | None = None) -> torch.Tensor:
        """All counts as one flat int64 tensor (for ``all_reduce``)."""
        import torch

        flat = torch.from_numpy(np.concatenate([acc.to_array() for acc in self.accumulators]))
        return flat if device is None else flat.to(device)

    def load_tensor(self, flat: torch.Tensor | np.ndarray) -> LocalizationEvaluator:
        sizes = [acc.to_array().size for acc in self.accumulators]
        if flat.ndim != 1 or int(np.prod(flat.shape)) != sum(sizes):
            raise ValueError(f"LocalizationEvaluator.load_tensor: expected {sum(sizes)} counts,"
                             f" got shape {tuple(flat.shape)}")
        offsets = np.cumsum([0, *sizes])
        for acc, lo, hi in zip(self.accumulators, offsets[:-1], offsets[1:]):
            acc.load_tensor(flat[int(lo):int(hi)])
        return self

    def merge(self, other: LocalizationEvaluator) -> LocalizationEvaluator:
        for mine, theirs in zip(self.accumulators, other.accumulators):
            mine.merge(theirs)
        return self

    def compute(self) -> dict[str, Any]:
        """All metrics (see the module docstring) plus ``num_images`` and ``settings``."""
        out: dict[str, Any] = {
            "settings": {"cam_curve_interval": self.cam_curve_interval,
                         "image_size": self.image_size,
                         "multi_contour": self.multi_contour,
                         "iou_thresholds": list(self.iou_thresholds),
                         "localization_type": self.localization_type},
            "top1_loc": None, "top5_loc": None, "gt_known_loc": None,
        }
        if self.boxes is not None:
            out.update(self.boxes.compute())
        else:
            out.update(self.masks.compute())
        n_cls = int(self.classification.num_images)
        if n_cls:
            if n_cls != out["num_images"]:
                raise MetricError(f"class predictions were given for {n_cls} of"
                                  f" {out['num_images']} images")
            out.update(self.classification.compute())
        return out
