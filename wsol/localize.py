"""Localize objects in a batch of images with any WSOL method: maps, boxes, classes, scores.

For images ``x`` ``(B, 3, H, W)`` (normalized with the backbone's ``input_mean/std``) and the
class ``c_b`` of each image (given, or the top-1 prediction):

1. ``outputs = method(x)``; ``p = softmax(logits)``; ``score_b = p[b, c_b]``.
2. ``raw = method.localization_maps(outputs, c)``: ``(B, h, w)`` at feature resolution (CAM's
   Eq.1 ``M_c = sum_k w^c_k F_k``, CREAM's fused map Eq.12, B-CAM's gradient map).
3. ``maps = normalize(upsample_bicubic(raw, (H, W)))`` per image (method-spec §1, minmax by
   default), values in [0, 1], on the model's device.
4. ``box_b``: the wsolevaluation box at threshold ``t`` (method-spec §4): ``u = uint8(255 map)``,
   foreground ``u > int(t * max u)``, bounding rectangle ``(x, y, w, h)`` of the largest
   contour, box ``(x, y, min(x + w, W - 1), min(y + h, H - 1))`` in input pixels (the
   protocol's convention, also that of the CUB GT boxes: ``x1`` is one past the last
   foreground pixel unless clipped); ``(0, 0, 0, 0)`` when the map is blank
   (:func:`wsol.localization.boxes.boxes_from_maps`).

No autograd graph is built unless the method declares ``maps_need_grad`` (gradient maps), and
nothing is kept between calls, so calling :func:`localize` in a loop does not grow memory.

:func:`scale_boxes` takes boxes back to original image pixels (e.g. before the wsolevaluation
resize to ``S x S``). Example::

    from wsol.engine.checkpoint import load_method
    from wsol.localize import localize

    method, info = load_method("runs/cub_cam/checkpoints/best.pt")
    result = localize(method, images)            # images: (B, 3, 224, 224), normalized
    result.maps.shape, result.boxes[0]           # (B, 224, 224), tensor([x0, y0, x1, y1])

``import wsol; wsol.localize(method, images)`` works too (the module is callable).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from wsol.methods.base import WSOLMethod

#: CAM's customary box threshold (Zhou et al. 2016; the paper's tau = 0.2). Prefer the best
#: threshold found on a fully supervised split (``threshold_from_results``).
DEFAULT_THRESHOLD = 0.2

__all__ = ["DEFAULT_THRESHOLD", "LocalizationResult", "localize", "resolve_method", "scale_boxes",
           "threshold_from_results"]


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


def _model_device(method: torch.nn.Module) -> torch.device:
    for tensor in method.parameters():
        return tensor.device
    for tensor in method.buffers():
        return tensor.device
    return torch.device("cpu")


def _check_inputs(method: WSOLMethod, images: Tensor, classes: Tensor | None,
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
        if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= method.num_classes):
            raise ValueError(f"classes must be in [0, {method.num_classes}), got "
                             f"{classes.tolist()}")


def localize(method: WSOLMethod, images: Tensor, classes: Tensor | None = None,
             threshold: float = DEFAULT_THRESHOLD,
             normalization: str = "minmax") -> LocalizationResult:
    """Maps, boxes, classes and scores of a batch (see the module docstring for the equations).

    Args:
        method: a WSOL method (CAM, CREAM, B-CAM, ...); it is run in eval mode and its previous
            train/eval mode is restored afterwards.
        images: ``(B, 3, H, W)`` normalized float tensor (moved to the model's device).
        classes: ``(B,)`` class per image; None takes the top-1 prediction.
        threshold: box threshold ``t`` in [0, 1) on the normalized map.
        normalization: ``minmax`` | ``max`` | ``pas`` | ``ivr`` (method-spec §1).
    """
    from wsol.localization.boxes import boxes_from_maps
    from wsol.localization.normalize import postprocess_maps

    _check_inputs(method, images, classes, threshold)
    device = _model_device(method)
    images = images.to(device)
    was_training = method.training
    method.eval()
    try:
        grad = torch.enable_grad() if method.maps_need_grad else torch.no_grad()
        with grad:
            outputs = method(images)
            logits = outputs["logits"].detach().float()
            if classes is None:
                classes = logits.argmax(dim=1)
            classes = classes.to(device=device, dtype=torch.long)
            raw = method.localization_maps(outputs, classes).detach()
        del outputs
        scores = logits.softmax(dim=1).gather(1, classes[:, None])[:, 0]
        maps = postprocess_maps(raw.float(), tuple(images.shape[2:]), normalization)
        boxes = torch.from_numpy(boxes_from_maps(maps, threshold)).to(device)
    finally:
        method.train(was_training)
    return LocalizationResult(maps=maps, boxes=boxes, classes=classes, scores=scores)


def scale_boxes(boxes: Tensor, from_size: tuple[int, int], to_sizes: Tensor) -> Tensor:
    """Boxes in a resized ``from_size = (H, W)`` image back to original pixels.

    The box is read as inclusive pixels ``x0..x1`` (as the protocol's IoU reads it). Input
    pixel ``u`` covers the original interval ``[u r, (u + 1) r)`` with ``r = W0 / W``
    (likewise for rows), so the box covers ``[x0 r, (x1 + 1) r)`` and the original pixels it
    touches are ``floor(x0 r) .. ceil((x1 + 1) r) - 1`` (clipped to the image). A protocol box
    from :func:`localize` ends one input pixel past its foreground (``x + w``), so in original
    pixels it reaches up to ``r`` pixels past the foreground on the right and bottom.

    Args:
        boxes: ``(N, 4)`` ``(x0, y0, x1, y1)``.
        from_size: the ``(H, W)`` the boxes are in.
        to_sizes: ``(N, 2)`` original ``(H0, W0)`` of each image.
    Returns: ``(N, 4)`` int64 boxes in original pixels.
    """
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4), got {tuple(boxes.shape)}")
    to_sizes = torch.as_tensor(to_sizes, device=boxes.device)
    if to_sizes.shape != (boxes.shape[0], 2):
        raise ValueError(f"to_sizes must be ({boxes.shape[0]}, 2), got {tuple(to_sizes.shape)}")
    h, w = from_size
    b = boxes.to(torch.float64)
    sizes = to_sizes.to(torch.float64)
    ry, rx = sizes[:, 0] / h, sizes[:, 1] / w
    x0 = torch.floor(b[:, 0] * rx)
    y0 = torch.floor(b[:, 1] * ry)
    x1 = torch.ceil((b[:, 2] + 1) * rx) - 1
    y1 = torch.ceil((b[:, 3] + 1) * ry) - 1
    hi_x, hi_y = sizes[:, 1] - 1, sizes[:, 0] - 1
    out = torch.stack([x0.clamp(min=0).minimum(hi_x), y0.clamp(min=0).minimum(hi_y),
                       x1.clamp(min=0).minimum(hi_x), y1.clamp(min=0).minimum(hi_y)], dim=1)
    return out.round().long()


def threshold_from_results(results: Mapping, iou: str = "50", source: str = "results") -> float:
    """The best box threshold recorded in an evaluation's results (``results.json``).

    Looks for ``best_threshold_by_iou[iou]``, then ``best_threshold``, then the argmax of
    ``box_acc_curves[iou]`` over ``thresholds``. Raises ValueError naming ``source`` if none
    is there.
    """
    by_iou = results.get("best_threshold_by_iou")
    if isinstance(by_iou, Mapping) and str(iou) in by_iou:
        return float(by_iou[str(iou)])
    if isinstance(results.get("best_threshold"), (int, float)):
        return float(results["best_threshold"])
    curves = results.get("box_acc_curves")
    if isinstance(curves, Mapping) and str(iou) in curves:
        from wsol.viz.curves import BoxAccCurves

        parsed = BoxAccCurves.from_results(results)
        assert parsed is not None
        return parsed.best_threshold(str(iou))
    raise ValueError(f"{source}: no best threshold for IoU {iou} (looked for "
                     f"best_threshold_by_iou, best_threshold, box_acc_curves); keys present: "
                     f"{', '.join(sorted(results)) or 'none'}")


def resolve_method(method: WSOLMethod, requested: str | None,
                   checkpoint: str = "the checkpoint") -> WSOLMethod:
    """The method to localize with: the checkpoint's own by default; ``cam`` from a CREAM
    checkpoint (CREAM's backbone is a trained CAM); anything else is a clear error."""
    if requested is None or requested == method.name:
        return method
    if requested == "cam" and method.name == "cream":
        from wsol.methods import build_method

        cam = build_method("cam", method.backbone)
        return cam.train(method.training)
    if requested == "cream":
        raise ValueError(
            f"{checkpoint} holds a {method.name!r} model, not CREAM: CREAM needs context "
            f"embeddings fitted on the training images; run `wsol cream fit --checkpoint "
            f"{checkpoint} --out CREAM.pt` first and localize with CREAM.pt")
    raise ValueError(f"{checkpoint} holds a {method.name!r} model; --method {requested} is not "
                     f"available from it (only 'cam' can be taken from a 'cream' checkpoint)")


class _CallableModule(types.ModuleType):
    """Lets ``wsol.localize(...)`` call :func:`localize` although ``wsol.localize`` is also
    the name of this module."""

    def __call__(self, *args, **kwargs) -> LocalizationResult:
        return localize(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
