"""``wsol localize --checkpoint FILE IMAGE_OR_DIR... --out DIR``: maps and boxes for any images.

Every JPEG/PNG (any size; grayscale, palette and RGBA images are converted to RGB) goes through
the checkpoint's evaluation transform (resize to ``S x S``, normalize), :func:`wsol.localization.localize`
in batches, and back to its original resolution. ``DIR`` receives:

- ``overlays/<name>.png``: the map (jet) over the image at its original resolution, the
  predicted box (green) and ``class score``;
- ``maps/<name>.npy``: the normalized map resized (bilinear) to the original ``(H0, W0)``, float16;
- ``boxes.json`` / ``boxes.csv``: one record per image, the box in original pixels
  (:func:`wsol.localization.geometry.scale_boxes`), the class, its name and its softmax score;
- ``manifest.json``: library version, checkpoint, method, settings, counts, skipped files.

``<name>`` is the file's stem, or its path below a directory argument (directories are searched
recursively for .jpg/.jpeg/.png). Unreadable files are reported and skipped.
"""

from __future__ import annotations

import argparse
import csv
import io
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
HELP = "localize objects in images with a trained checkpoint (overlays, maps, boxes)"

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
METHODS = ("cam", "cream", "bcam")
NORMALIZATIONS = ("minmax", "max", "pas", "ivr")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR",
                        help="image files and/or directories (searched recursively for "
                             ".jpg/.jpeg/.png)")
    parser.add_argument("--checkpoint", required=True, help="a wsol checkpoint (.pt)")
    parser.add_argument("--out", required=True, help="output directory (must be empty or new)")
    parser.add_argument("--method", choices=METHODS, default=None,
                        help="default: the checkpoint's method; a CREAM checkpoint also gives cam")
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
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override the checkpoint's config, e.g. --set method.stage=calibrated "
                             "--set method.iterations=3 (repeatable)")
    parser.add_argument("--force", action="store_true", help="write into a non-empty --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


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
                         label: str) -> dict[str, str]:
    """``overlays/<name>.png`` (map resized bilinearly to the image, box, label) and
    ``maps/<name>.npy`` (that resized map, float16); returns their paths relative to out_dir."""
    import cv2
    import numpy as np

    from wsol.utils.io import atomic_write
    from wsol.viz.overlay import render_overlay

    h0, w0 = image.shape[:2]
    full = cv2.resize(score_map, (w0, h0), interpolation=cv2.INTER_LINEAR)
    vis = render_overlay(image, full, boxes=[box], label=label)
    ok, png = cv2.imencode(".png", cv2.cvtColor(vis, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - cv2 failure
        raise RuntimeError(f"could not encode the overlay of {name}")
    files = {"overlay": f"overlays/{name}.png", "map": f"maps/{name}.npy"}
    atomic_write(out_dir / files["overlay"], lambda f: f.write(png.tobytes()))
    atomic_write(out_dir / files["map"], lambda f: np.save(f, full.astype(np.float16)))
    return files


def localize_images(method: WSOLMethod, items: list[ImageItem], out_dir: Path,
                    settings: LocalizeSettings) -> LocalizeReport:
    """Run ``method`` on ``items`` in batches; write overlays and maps under ``out_dir``.

    Returns the records for ``boxes.json`` (not written here) and the skipped files.
    """
    import numpy as np
    import torch
    from tqdm import tqdm

    from wsol.data.transforms import EvalTransform, ImageLoadError, load_image
    from wsol.localization import localize, scale_boxes

    backbone = method.backbone
    transform = EvalTransform(mean=backbone.input_mean, std=backbone.input_std,
                              size=settings.image_size)
    report = LocalizeReport()
    start = time.perf_counter()
    bar = tqdm(total=len(items), unit="img", desc="localize", disable=not settings.progress)
    for batch in _batches(items, settings.batch_size):
        loaded, tensors = [], []
        for item in batch:
            try:
                image = load_image(item.path)
            except ImageLoadError as exc:
                report.skipped.append({"image": str(item.path), "reason": str(exc)})
                print(f"wsol localize: skipping {exc}", file=sys.stderr)
                continue
            loaded.append((item, np.asarray(image)))
            tensors.append(transform(image))
        bar.update(len(batch) - len(loaded))
        if not loaded:
            continue
        classes = None
        if settings.target_class is not None:
            classes = torch.full((len(loaded),), settings.target_class, dtype=torch.long)
        result = localize(method, torch.stack(tensors), classes, settings.threshold,
                          settings.normalization)
        sizes = torch.tensor([a.shape[:2] for _, a in loaded])
        boxes = scale_boxes(result.boxes.cpu(), tuple(result.maps.shape[1:]), sizes).tolist()
        maps = result.maps.float().cpu().numpy()
        for k, (item, array) in enumerate(loaded):
            cls, score = int(result.classes[k]), float(result.scores[k])
            class_name = _class_name(cls, settings.class_names)
            label = f"{class_name or f'class {cls}'} {score:.2f}"
            files = _write_image_outputs(out_dir, item.name, array, maps[k], boxes[k], label)
            report.records.append({
                "image": str(item.path), "name": item.name, "width": array.shape[1],
                "height": array.shape[0], "class": cls, "class_name": class_name,
                "score": score, "box": boxes[k], **files,
            })
        bar.update(len(loaded))
        del result, maps
    bar.close()
    report.seconds = time.perf_counter() - start
    return report


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
    if value == "top1":
        return None
    if names and value in names:
        return names.index(value)
    try:
        index = int(value)
    except ValueError:
        raise ValueError(f"--class must be top1, a class index or a class name, got {value!r}"
                         ) from None
    if not 0 <= index < num_classes:
        raise ValueError(f"--class {index} is out of range: the checkpoint has {num_classes} "
                         f"classes (0..{num_classes - 1})")
    return index


def _resolve_threshold(args: argparse.Namespace) -> tuple[float, str]:
    from wsol.localization.pipeline import DEFAULT_THRESHOLD
    from wsol.metrics.results import threshold_from_results

    if args.threshold is not None:
        if not 0.0 <= args.threshold < 1.0:
            raise ValueError(f"--threshold must be in [0, 1), got {args.threshold}")
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


def run(args: argparse.Namespace) -> int:
    import wsol
    from wsol.engine.checkpoint import load_method
    from wsol.utils.device import resolve_device
    from wsol.methods.resolve import resolve_method
    from wsol.utils.io import atomic_write_json, atomic_write_text

    out = Path(args.out)
    _check_out(out, args.force)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.image_size is not None and args.image_size < 8:
        raise ValueError(f"--image-size must be >= 8, got {args.image_size}")
    threshold, threshold_source = _resolve_threshold(args)
    items = find_images(args.inputs)
    if not items:
        raise FileNotFoundError(f"no .jpg/.jpeg/.png images found in {' '.join(args.inputs)}")
    device = resolve_device(args.device, "--device")
    loaded, info = load_method(args.checkpoint, "cpu", overrides=args.overrides)
    method = resolve_method(loaded, args.method, str(args.checkpoint)).to(device)
    config = info["config"]
    class_names = info.get("class_names")
    settings = LocalizeSettings(
        threshold=threshold,
        image_size=args.image_size or int(config.get("data", {}).get("image_size", 224)),
        normalization=args.normalization or config.get("eval", {}).get("normalization", "minmax"),
        target_class=_resolve_class(args.target_class, method.num_classes, class_names),
        class_names=class_names, batch_size=args.batch_size, progress=not args.no_progress)
    out.mkdir(parents=True, exist_ok=True)
    report = localize_images(method, items, out, settings)
    atomic_write_json(out / "boxes.json", report.records)
    atomic_write_text(out / "boxes.csv", boxes_csv(report.records))
    n_ok = len(report.records)
    manifest = {
        "wsol_version": wsol.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": str(Path(args.checkpoint).resolve()),
        "checkpoint_method": info.get("method"),
        "method": method.name,
        "model": config.get("model", {}).get("name"),
        "epoch": info.get("epoch"),
        "config_overrides": list(args.overrides),
        "settings": {
            "threshold": threshold, "threshold_source": threshold_source,
            "class": "top1" if settings.target_class is None else settings.target_class,
            "image_size": settings.image_size, "normalization": settings.normalization,
            "batch_size": settings.batch_size, "device": str(device),
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
          f"(threshold {threshold:.3f}); skipped {len(report.skipped)} unreadable; wrote {out}")
    return 0 if n_ok else 1
