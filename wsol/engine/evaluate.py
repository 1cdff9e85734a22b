"""Evaluate a method on a split: classification and localization, batch-first on the device.

For every batch: forward, top-5 ranking, the GT-class localization map (method-spec §1: the GT
class for GT-known / MaxBoxAcc / PxAP; Top-1 Loc additionally requires the top-1 class to be
correct, which makes the predicted-class map and the GT-class map coincide whenever it counts),
bicubic upsampling to the evaluation size, per-image normalization, then the accumulators of
:mod:`wsol.metrics`; on box splits also ``inside_gt_share`` (share of images whose mean map
value inside the GT boxes exceeds the mean outside, :mod:`wsol.metrics.inside`), the polarity
check that catches a map lighting up the background. In a distributed run every rank evaluates a disjoint shard (no padded
duplicates) and the accumulators' count tensors are all-reduced, so the numbers equal those of
one process exactly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from wsol.data.metadata import Metadata
from wsol.errors import UserError
from wsol.engine.checkpoint import unwrap
from wsol.engine.distributed import all_reduce_sum, get_rank, get_world_size, is_main_process
from wsol.localization.pipeline import (EVAL_TYPES, Deferred, MapBatch, eval_mode,
                                        inference_streams, start_maps)
from wsol.methods import WSOLMethod
from wsol.metrics import LocalizationEvaluator
from wsol.metrics.inside import inside_outside_means
from wsol.utils.precision import memory_format, precision_record
from wsol.utils.prefetch import prefetch
from wsol.utils.streams import ForwardStreams


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + W, rank + 2W, ...``: disjoint shards, no padding, no duplicates."""

    def __init__(self, length: int, rank: int | None = None, world_size: int | None = None):
        self.length = length
        self.rank = get_rank() if rank is None else rank
        self.world_size = get_world_size() if world_size is None else world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))


def make_eval_loader(dataset: Dataset, batch_size: int, num_workers: int = 0,
                     pin_memory: bool = False) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=pin_memory, sampler=ShardSampler(len(dataset)),
                      persistent_workers=False)


def save_scoremaps(maps: torch.Tensor, image_ids: list[str], root: str | os.PathLike) -> None:
    """Write each map as ``<root>/<image_id>.npy`` (the wsolevaluation layout), float32; an id
    that would land outside ``root`` (``../``, absolute) is refused before anything is written."""
    from wsol.utils.paths import safe_join

    root = Path(root)
    paths = [safe_join(root, f"{image_id}.npy", "score map") for image_id in image_ids]
    arrays = maps.detach().float().cpu().numpy()
    for path, array in zip(paths, arrays):
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, array)


def evaluate(
    method: WSOLMethod,
    loader: DataLoader,
    metadata: Metadata,
    *,
    device: torch.device | str = "cpu",
    image_size: int = 224,
    cam_curve_interval: float = 0.001,
    iou_thresholds: tuple[int, ...] | list[int] = (30, 50, 70),
    multi_contour: bool = True,
    normalization: str = "minmax",
    mask_root: str | os.PathLike | None = None,
    eval_type: str = "prob",
    scoremap_dir: str | os.PathLike | None = None,
    progress: bool = False,
    amp: bool | str = "auto",
    channels_last: bool | str = "auto",
    map_class: str = "gt",
    num_threads: int | None = None,
    streams: int | str = "auto",
    chunk_size: int | str = "auto",
) -> dict:
    """Classification + localization metrics of ``method`` on the split behind ``loader``.

    ``eval_type="mask"`` evaluates the method's threshold-free binary masks
    (``method.localization_masks``, B-CAM) instead of the score maps: a binary map gives the same
    box at every threshold, so BoxAcc is that mask's box accuracy.

    ``streams`` / ``chunk_size`` (``eval.streams`` / ``eval.chunk_size``): CPU inference
    streams for the forward pass and the images per forward call (:mod:`wsol.utils.streams`;
    ``auto``: one stream per intra-op thread and 4 images per call on a CPU in bf16, where the
    numbers stay the same; one call elsewhere). Recorded as ``results["streams"]`` and
    ``results["chunk_size"]``.
    """
    from tqdm import tqdm

    device = torch.device(device)
    inner = unwrap(method)
    if eval_type not in EVAL_TYPES:
        raise UserError(f"eval_type must be one of {EVAL_TYPES}, got {eval_type!r}")
    if eval_type == "mask" and not hasattr(inner, "localization_masks"):
        raise UserError(f"method {inner.name!r} has no threshold-free masks (eval_type='mask')")
    if map_class not in ("gt", "predicted"):
        raise UserError(f"map_class must be 'gt' or 'predicted', got {map_class!r}")
    try:
        precision = precision_record(amp, channels_last, device)
    except ValueError as exc:
        raise UserError(f"eval: {exc}") from None
    amp, channels_last = precision["amp"], precision["channels_last"]
    try:
        num_streams, chunk = inference_streams(inner, streams, chunk_size, device, amp)
    except ValueError as exc:
        raise UserError(f"eval: {exc}") from None
    evaluator = LocalizationEvaluator(
        metadata, image_size=image_size, cam_curve_interval=cam_curve_interval,
        iou_thresholds=tuple(iou_thresholds), multi_contour=multi_contour, mask_root=mask_root,
        score_histograms=metadata.boxes is not None,  # fg/bg score histograms (paper's Fig. 1)
        num_threads=num_threads)  # box counting runs in a pool, overlapping the next forward
    gt_boxes = evaluator.gt_boxes  # computed once, by the evaluator
    polarity = torch.zeros(2, dtype=torch.int64, device=device)  # defined, inside > outside
    # Without worker processes, the next batch is decoded in a thread during this forward pass.
    source = prefetch(loader) if getattr(loader, "num_workers", 1) == 0 else loader
    batches = tqdm(source, desc="eval", leave=False, unit="batch", total=len(loader),
                   disable=not (progress and is_main_process()))
    def finish(batch: dict, pending: Deferred[MapBatch]) -> None:
        """The maps of a batch whose forward pass was started, and everything counted on them."""
        nonlocal polarity
        out = pending.result()
        topk = out.logits.topk(min(5, out.logits.shape[1]), dim=1).indices
        evaluator.update(out.maps, list(batch["image_id"]), topk)
        if gt_boxes is not None:  # polarity check: more map mass inside the GT boxes?
            inside, outside, defined = inside_outside_means(
                out.maps, [gt_boxes[i] for i in batch["image_id"]])
            polarity += torch.stack([defined.sum(), (defined & (inside > outside)).sum()]
                                    ).to(polarity)
        if scoremap_dir is not None:
            save_scoremaps(out.maps, list(batch["image_id"]), scoremap_dir)

    # One batch in flight: the next batch's forward pass is started (queued on the streams)
    # before this batch's maps are computed and counted, so the streams never wait for them.
    with eval_mode(inner), memory_format(inner, channels_last), \
            ForwardStreams(num_streams, chunk) as forward_streams, forward_streams.hold_cores():
        in_flight: tuple[dict, Deferred[MapBatch]] | None = None
        for batch in batches:
            images = batch["image"].to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            labels = torch.as_tensor(batch["label"]).to(device)
            started = start_maps(inner, images, labels if map_class == "gt" else None,
                                 (image_size, image_size), normalization, eval_type=eval_type,
                                 amp=amp, streams=forward_streams)
            if in_flight is not None:
                finish(*in_flight)
            in_flight = (batch, started)
            del images, started
        if in_flight is not None:
            finish(*in_flight)
            in_flight = None
    # All ranks hold disjoint shards: summing the count tensors gives the full-split counts.
    evaluator.load_tensor(all_reduce_sum(evaluator.to_tensor()))
    results = evaluator.compute()
    evaluator.close()
    # The CLI and reports call classification accuracy Top-1/Top-5 Cls.
    results["top1_cls"] = results.pop("top1_acc")
    results["top5_cls"] = results.pop("top5_acc")
    if gt_boxes is not None:
        defined, inside = (int(v) for v in all_reduce_sum(polarity).tolist())
        results["inside_gt_share"] = inside / defined if defined else None
        results["inside_gt_images"] = {"defined": defined, "inside": inside}
    results["eval_type"] = eval_type
    results["map_class"] = map_class
    num_classes = int(getattr(inner, "num_classes", 0) or 0)
    if 0 < num_classes < 6:
        # With 5 classes or fewer the top 5 holds every class: Top-5 Cls is 100 and Top-5 Loc
        # equals GT-known by construction, so they are not reported.
        for key in ("top5_cls", "top5_loc", "top5_loc_by_iou"):
            if key in results:
                results[key] = None
        results["top5_note"] = f"omitted: {num_classes} classes (< 6)"
    results["normalization"] = normalization
    results["precision"] = precision
    results["streams"] = num_streams
    results["chunk_size"] = chunk
    return results
