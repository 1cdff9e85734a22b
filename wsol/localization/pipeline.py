"""The one maps pipeline: images -> forward -> class maps -> upsample -> normalize.

Every consumer of localization maps (``wsol evaluate``, validation inside training,
``wsol localize`` and :class:`wsol.Localizer`, the regressor's pseudo boxes, benchmarks and
reports) goes through :func:`compute_maps`, so the grad/no-grad decision, the eval-mode
switch, mixed precision and the post-processing are written once. For images ``x``
``(B, 3, H, W)`` and classes ``c`` (given, or the top-1 prediction):

1. ``outputs = method(x)`` in eval mode (restored afterwards), under ``torch.no_grad()``
   unless the method declares ``maps_need_grad`` (gradient maps);
2. ``raw = method.localization_maps(outputs, c)`` ``(B, h, w)`` at feature resolution (CAM's
   Eq.1, CREAM's Eq.11/12, B-CAM's gradient map, ...);
3. ``maps = normalize(upsample_bicubic(raw, size))`` per image (method-spec §1), values in
   [0, 1]; or, with ``eval_type="mask"``, the method's threshold-free binary masks
   (``method.localization_masks``, B-CAM) as 0/1 floats.

Everything stays on the model's device. :func:`start_maps` splits the call in two (the
forward pass started, the maps later), so a loop computes one batch's maps while the next
batch's forward pass runs (``evaluate`` does).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch
from torch import Tensor

from wsol.localization.normalize import postprocess_maps
from wsol.utils.precision import autocast_context
from wsol.utils.streams import ForwardStreams

__all__ = ["DEFAULT_THRESHOLD", "EVAL_TYPES", "Deferred", "LocalizationResult", "MapBatch",
           "autocast_context", "compute_maps", "eval_mode", "inference_streams", "localize",
           "maps_from_outputs", "model_device", "start_localize", "start_maps", "stream_safe"]

EVAL_TYPES = ("prob", "mask")

T = TypeVar("T")
U = TypeVar("U")


@dataclass(frozen=True)
class MapBatch:
    """What :func:`compute_maps` returns; every tensor is on the model's device.

    - ``maps``: ``(B, H, W)`` float in [0, 1] (``eval_type="mask"``: 0/1).
    - ``logits``: ``(B, C)`` float, detached.
    - ``classes``: ``(B,)`` int64, the class each map belongs to.
    - ``stages``: for methods with several map stages (CREAM's ``cam``/``calibrated``/
      ``fused``) the post-processed map of each requested stage, else empty.
    """

    maps: Tensor
    logits: Tensor
    classes: Tensor
    stages: dict[str, Tensor]

    def __len__(self) -> int:
        return int(self.maps.shape[0])

    @property
    def scores(self) -> Tensor:
        """Softmax probability of each image's class, ``(B,)``."""
        return self.logits.softmax(dim=1).gather(1, self.classes[:, None])[:, 0]


def model_device(module: torch.nn.Module) -> torch.device:
    """The device of the first parameter (or buffer) of ``module``; CPU when it has none."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def compute_maps(method: torch.nn.Module, images: Tensor, classes: Tensor | None = None,
                 size: tuple[int, int] | None = None, normalization: str = "minmax", *,
                 eval_type: str = "prob", amp: bool | str | None = False,
                 stages: Sequence[str] = (), streams: ForwardStreams | None = None) -> MapBatch:
    """Normalized localization maps of a batch (see the module docstring for the steps):
    :func:`start_maps` and its result.

    Args:
        method: a :class:`~wsol.methods.base.WSOLMethod` (its train/eval mode is restored).
        images: ``(B, 3, H, W)`` normalized float tensor (moved to the model's device).
        classes: ``(B,)`` class per image; ``None`` takes the top-1 prediction.
        size: ``(H, W)`` of the output maps; default the input size.
        normalization: ``minmax`` | ``max`` | ``pas`` | ``ivr`` (method-spec §1).
        eval_type: ``prob`` (score maps) or ``mask`` (threshold-free masks).
        amp: mixed precision of the forward pass (:func:`wsol.utils.precision.autocast_context`:
            false, bf16, fp16, auto); maps are computed in float32 from the autocast features.
        stages: extra map stages to return as well (CREAM's ``maps_by_stage``).
        streams: CPU inference streams (:mod:`wsol.utils.streams`): the forward pass runs in
            chunks of ``streams.chunk_size`` images (default: one per stream), concurrently,
            each on one intra-op thread; the maps are then computed on the whole batch here.
            Ignored (one call) off the CPU and for methods that are not :func:`stream_safe`.
    """
    return start_maps(method, images, classes, size, normalization, eval_type=eval_type,
                      amp=amp, stages=stages, streams=streams).result()


class Deferred(Generic[T]):
    """Work started by :func:`start_maps` / :func:`start_localize` (a forward pass queued on the
    streams); :meth:`result` waits for it and finishes it in the calling thread."""

    def __init__(self, finish: Callable[[], T]) -> None:
        self._finish: Callable[[], T] | None = finish

    def result(self) -> T:
        """The value (once: what it holds is released)."""
        if self._finish is None:
            raise RuntimeError("Deferred.result() was already called")
        finish, self._finish = self._finish, None
        return finish()

    def then(self, fn: Callable[[T], U]) -> Deferred[U]:
        """``fn`` of the result, when that is asked for."""
        return Deferred(lambda: fn(self.result()))


@contextlib.contextmanager
def eval_mode(method: torch.nn.Module) -> Iterator[None]:
    """Run the block with ``method`` in eval mode, its mode restored afterwards: what a loop
    with batches in flight holds around them (each :func:`start_maps` result restores the mode
    it found)."""
    was_training = method.training
    method.eval()
    try:
        yield
    finally:
        method.train(was_training)


def start_maps(method: torch.nn.Module, images: Tensor, classes: Tensor | None = None,
               size: tuple[int, int] | None = None, normalization: str = "minmax", *,
               eval_type: str = "prob", amp: bool | str | None = False,
               stages: Sequence[str] = (), streams: ForwardStreams | None = None
               ) -> Deferred[MapBatch]:
    """:func:`compute_maps` in two steps, so that a loop can compute the maps of one batch while
    the forward pass of the next runs: with streams, the chunks are queued on them and this
    returns at once; in one call the forward pass runs here. :meth:`Deferred.result` then
    waits for the chunks and computes the maps of the whole batch, as :func:`compute_maps` does
    (the same numbers).

    The method runs in eval mode from here to the result, which restores its mode: a loop
    with several batches in flight holds :func:`eval_mode` around them, and the memory format
    (:func:`wsol.utils.precision.memory_format`) too, as the chunks run after this returns.
    """
    if eval_type not in EVAL_TYPES:
        raise ValueError(f"eval_type must be one of {EVAL_TYPES}, got {eval_type!r}")
    if eval_type == "mask" and not hasattr(method, "localization_masks"):
        raise ValueError(f"method {getattr(method, 'name', type(method).__name__)!r} has no "
                         "threshold-free masks (eval_type='mask')")
    device = model_device(method)
    images = images.to(device, non_blocking=True)
    size = tuple(images.shape[2:]) if size is None else (int(size[0]), int(size[1]))
    if classes is not None:
        classes = torch.as_tensor(classes).to(device=device, dtype=torch.long)

    grad = torch.enable_grad if getattr(method, "maps_need_grad", False) else torch.no_grad

    def forward(x: Tensor) -> dict[str, Tensor]:  # grad mode and autocast are per thread
        with grad():
            with autocast_context(device, amp):
                outputs = method(x)
            return {k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v)
                    for k, v in outputs.items()}

    batch = int(images.shape[0])
    chunk = batch
    if streams is not None and device.type == "cpu" and stream_safe(method):
        chunk = streams.chunk_size or -(-batch // streams.count)
    was_training = method.training
    method.eval()
    try:
        if chunk >= batch:
            outputs: dict[str, Tensor] | None = forward(images)
            queued = None
        else:
            # No chunk of one image (unless the batch is one): some float32 kernels take
            # their matrix-vector path for a single row, with another summation order.
            sizes = [chunk] * (batch // chunk) + ([batch % chunk] if batch % chunk else [])
            if sizes[-1] == 1:
                sizes[-2:] = [sizes[-2] + 1]
            assert streams is not None
            outputs, queued = None, streams.submit(forward, images.split(sizes))
    except BaseException:
        method.train(was_training)
        raise

    def finish() -> MapBatch:
        nonlocal outputs
        try:
            if queued is not None:
                outputs = _concat_outputs(queued.result())
            assert outputs is not None
            # The maps of the whole batch, in this thread: what follows the forward pass
            # (CREAM's EM, the upsampling) runs on the same batch as without streams.
            with grad():
                result = maps_from_outputs(method, outputs, classes, size, normalization,
                                           eval_type=eval_type, stages=stages)
            outputs = None
            return result
        finally:
            method.train(was_training)

    return Deferred(finish)


def _concat_outputs(parts: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """The forward outputs of consecutive chunks as those of one batch: every value is a
    batch-first tensor (the method contract), concatenated along dim 0."""
    out = {}
    for key, first in parts[0].items():
        if not torch.is_tensor(first) or first.ndim == 0:
            raise TypeError(f"forward output {key!r} is not a batch-first tensor: the method "
                            "cannot run in streams (set stream_safe = False on it)")
        out[key] = torch.cat([p[key] for p in parts])
    return out


def inference_streams(method: torch.nn.Module, streams: int | str, chunk_size: int | str,
                      device: torch.device | str, amp: object) -> tuple[int, int | None]:
    """``(streams, chunk_size)`` for ``method`` on ``device`` with the resolved autocast
    ``amp`` (:mod:`wsol.utils.streams`): one call (1, None) for a method that is not
    :func:`stream_safe`. Raises ValueError naming a bad value."""
    from wsol.utils.streams import resolve_chunk_size, resolve_streams

    count = resolve_streams(streams, device, amp)
    chunk = resolve_chunk_size(chunk_size, device, amp)
    return (count, chunk) if stream_safe(method) else (1, None)


def stream_safe(method: torch.nn.Module) -> bool:
    """True when chunks of a batch may run through ``method`` concurrently: the method and its
    backbone declare ``stream_safe`` (their forward keeps no state on the module) and its maps
    need no backward pass."""
    backbone = getattr(method, "backbone", None)
    return (bool(getattr(method, "stream_safe", False))
            and bool(getattr(backbone, "stream_safe", True))
            and not getattr(method, "maps_need_grad", False))


def maps_from_outputs(method: torch.nn.Module, outputs: dict[str, Tensor],
                      classes: Tensor | None, size: tuple[int, int],
                      normalization: str = "minmax", *, eval_type: str = "prob",
                      stages: Sequence[str] = ()) -> MapBatch:
    """Steps 2-3 of :func:`compute_maps` on outputs already computed (e.g. cached features of
    a whole split, evaluated under many inference settings); the caller chooses the grad
    mode (gradient maps need the graph of ``outputs``)."""
    logits = outputs["logits"].detach().float()
    if classes is None:
        classes = logits.argmax(dim=1)
    classes = torch.as_tensor(classes).to(device=logits.device, dtype=torch.long)
    size = (int(size[0]), int(size[1]))
    if eval_type == "mask":
        maps = method.localization_masks(outputs, classes, size).detach().float()
    else:
        raw = method.localization_maps(outputs, classes).detach().float()
        maps = postprocess_maps(raw, size, normalization)
    extra: dict[str, Tensor] = {}
    if stages:
        by_stage = method.maps_by_stage(outputs, classes)
        extra = {s: postprocess_maps(by_stage[s].detach().float(), size, normalization)
                 for s in stages if s in by_stage}
    return MapBatch(maps=maps, logits=logits, classes=classes, stages=extra)


#: CAM's customary box threshold (Zhou et al. 2016; the paper's tau = 0.2). Prefer the best
#: threshold found on a fully supervised split (:func:`wsol.metrics.results.threshold_from_results`).
DEFAULT_THRESHOLD = 0.2


@dataclass(frozen=True)
class LocalizationResult:
    """Output of :func:`localize`; every tensor is on the model's device.

    - ``maps``: ``(B, H, W)`` float, normalized to [0, 1], at the input resolution.
    - ``boxes``: ``(B, 4)`` int64 ``(x0, y0, x1, y1)`` in input pixels (protocol convention).
    - ``classes``: ``(B,)`` int64, the class each map and box belongs to.
    - ``scores``: ``(B,)`` float, the softmax probability of that class.
    """

    maps: Tensor
    boxes: Tensor
    classes: Tensor
    scores: Tensor

    def __len__(self) -> int:
        return int(self.maps.shape[0])


def _check_inputs(method: torch.nn.Module, images: Tensor, classes: Tensor | None,
                  threshold: float) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a (B, 3, H, W) tensor, got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"images must be a normalized float tensor, got dtype {images.dtype}")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch")
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    if classes is not None:
        if classes.ndim != 1 or classes.shape[0] != images.shape[0]:
            raise ValueError(f"expected one class per image: classes has shape "
                             f"{tuple(classes.shape)}, images have batch size {images.shape[0]}")
        num_classes = int(method.num_classes)
        if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= num_classes):
            raise ValueError(f"classes must be in [0, {num_classes}), got {classes.tolist()}")


def localize(method: torch.nn.Module, images: Tensor, classes: Tensor | None = None,
             threshold: float = DEFAULT_THRESHOLD, normalization: str = "minmax", *,
             amp: bool | str | None = False, streams: ForwardStreams | None = None
             ) -> LocalizationResult:
    """Maps (:func:`compute_maps`), boxes, classes and scores of a batch.

    ``box_b`` is the wsolevaluation box at threshold ``t`` (method-spec §4): ``u = uint8(255
    map)``, foreground ``u > int(t * max u)``, bounding rectangle ``(x, y, w, h)`` of the
    largest contour, box ``(x, y, min(x + w, W - 1), min(y + h, H - 1))`` in input pixels;
    ``(0, 0, 0, 0)`` for a blank map. :func:`wsol.localization.geometry.scale_boxes` takes
    them to original pixels. Nothing is kept between calls (no memory growth in a loop).

    Args:
        method: a WSOL method; run in eval mode, its previous mode restored afterwards.
        images: ``(B, 3, H, W)`` normalized float tensor (moved to the model's device).
        classes: ``(B,)`` class per image; None takes the top-1 prediction.
        threshold: box threshold ``t`` in [0, 1) on the normalized map.
        normalization: ``minmax`` | ``max`` | ``pas`` | ``ivr`` (method-spec §1).
        amp, streams: as for :func:`compute_maps`.
    """
    return start_localize(method, images, classes, threshold, normalization, amp=amp,
                          streams=streams).result()


def start_localize(method: torch.nn.Module, images: Tensor, classes: Tensor | None = None,
                   threshold: float = DEFAULT_THRESHOLD, normalization: str = "minmax", *,
                   amp: bool | str | None = False, streams: ForwardStreams | None = None
                   ) -> Deferred[LocalizationResult]:
    """:func:`localize` in two steps, as :func:`start_maps` (the inputs are checked here)."""
    from wsol.localization.boxes import boxes_from_maps

    _check_inputs(method, images, classes, threshold)

    def boxes(batch: MapBatch) -> LocalizationResult:
        found = torch.from_numpy(boxes_from_maps(batch.maps, threshold)).to(batch.maps.device)
        return LocalizationResult(maps=batch.maps, boxes=found, classes=batch.classes,
                                  scores=batch.scores)

    return start_maps(method, images, classes, None, normalization, amp=amp,
                      streams=streams).then(boxes)
