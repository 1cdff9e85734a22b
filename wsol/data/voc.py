"""PASCAL VOC2012 -> wsolevaluation metadata (``wsol prepare voc``).

Input: a ``VOCdevkit/VOC2012`` directory with ``JPEGImages/<name>.jpg``,
``Annotations/<name>.xml`` and image-set lists ``ImageSets/Main/<set>.txt`` (one image name per
line; a second field, as in the per-class lists, is ignored).

Output under ``--out`` (a metadata root, like ``wsol prepare cub``; train with
``data.root=<VOC2012>/JPEGImages data.metadata=<out> data.class_names=<out>/class_names.txt``)::

    train/ val/ test/        wsolevaluation split directories (ids = ``<name>.jpg``, relative
                             to ``JPEGImages``)
    class_names.txt          the 20 VOC classes in alphabetical order = label order
                             (aeroplane = 0 ... tvmonitor = 19)
    image_classes.csv        split,image_id,label,classes: every class present in the image
                             (space-separated labels), for multi-label use and auditing

Image label. wsolevaluation metadata holds one label per image, but VOC images often hold
several classes. B-CAM's official VOC code (github.com/zh460045050/BCAM,
``MultiObjectLocalization/voc12/dataloader.py`` and ``make_cls_labels.py``, an IRN-style
pipeline) does not pick one: it trains a *multi-label* classifier on a 20-dim 0/1 vector with a
1 for every class named by an ``<object>`` of the XML (difficult objects included), on
``train_aug`` (10,582 images: VOC2012 train + SBD), and evaluates the maps as semantic/instance
segmentation on the VOC2012 segmentation ``train`` set (1,464 images; ``val`` 1,449). That
protocol has no single-label equivalent, so this converter uses a documented rule of its own:

    label = the class with the largest total box area in the image (sum over its boxes of the
    inclusive-pixel areas ``(x1 - x0 + 1)(y1 - y0 + 1)``; overlaps counted per box); ties go to
    the lower label.

The full multi-label set (the official B-CAM label vector) is kept in ``image_classes.csv``.

Boxes: ``boxes="all"`` (default) writes every box of the image, whatever its class (so a
localization of any object counts, as in the official per-image evaluation, which scores the
whole foreground); ``boxes="label"`` writes only the boxes of the label's class (GT-known
localization of that class). VOC coordinates are 1-based inclusive pixels; they become 0-based
inclusive ``x0 = xmin - 1``, ``x1 = min(xmax - 1, W - 1)`` (same for y; fractional values are
floored first). ``exclude_difficult`` drops objects marked ``<difficult>1</difficult>`` from both
the label and the boxes (an image left without objects is skipped and counted).

Splits. VOC2012's test annotations are not public, so by default ``train`` = the
``ImageSets/Main/train.txt`` images (5,717) and ``test`` = ``ImageSets/Main/val.txt`` (5,823);
``val`` is carved from train as for CUB (``val_per_class`` images per label class, seeded; see
:func:`wsol.data.prepare.carve_val`), or given as its own list with ``val_set``. Any set may be
a name under ``ImageSets/Main`` or a path to a list file (e.g. the Segmentation lists for
B-CAM's image sets). Lists that share an image are refused.

Every image is decoded (its decoded size must equal the XML's ``<size>`` when that is given)
before anything is written. Annotation files are parsed with the standard-library XML parser
after refusing any DTD (``<!DOCTYPE``/``<!ENTITY``): VOC files have none, and entity expansion
is the classic XML attack.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wsol.data.metadata import FILES, Box, Metadata, write_metadata
from wsol.data.prepare import _image_sizes, carve_val, _refuse_overwrite, write_class_names
from wsol.errors import PrepareError
from wsol.utils.io import atomic_write_text
from wsol.utils.paths import UnsafePathError, check_relative_path

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")
LABEL = {name: k for k, name in enumerate(VOC_CLASSES)}


@dataclass(frozen=True)
class VOCObject:
    """One ``<object>``: class label, difficult flag and 0-based inclusive box."""

    label: int
    difficult: bool
    box: Box


@dataclass(frozen=True)
class VOCAnnotation:
    name: str
    size: tuple[int, int] | None  # (W, H) declared by the XML, None if absent or 0
    objects: tuple[VOCObject, ...]


def _text(elem: ET.Element | None) -> str | None:
    return None if elem is None or elem.text is None else elem.text.strip()


def parse_annotation(path: str | os.PathLike) -> VOCAnnotation:
    """Parse one VOC XML file (errors name the file and the object)."""
    path = Path(path)
    if not path.is_file():
        raise PrepareError(f"{path}: annotation file does not exist")
    data = path.read_bytes()
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise PrepareError(f"{path}: XML with a DTD/entity declaration is refused "
                           "(VOC annotations have none)")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise PrepareError(f"{path}: not well-formed XML ({exc})") from None
    size = None
    w, h = _text(root.find("size/width")), _text(root.find("size/height"))
    if w is not None and h is not None:
        try:
            sw, sh = int(float(w)), int(float(h))
        except ValueError:
            raise PrepareError(f"{path}: <size> must hold numbers, got {w!r} x {h!r}") from None
        if sw > 0 and sh > 0:
            size = (sw, sh)
    objects = []
    for k, obj in enumerate(root.findall("object"), start=1):
        name = _text(obj.find("name"))
        if name is None or name not in LABEL:
            raise PrepareError(f"{path}: object {k} has class {name!r}, not one of the 20 VOC "
                               "classes")
        difficult = _text(obj.find("difficult")) in ("1", "true")
        coords = [_text(obj.find(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax")]
        if any(c is None for c in coords):
            raise PrepareError(f"{path}: object {k} ({name}) lacks a complete <bndbox>")
        try:
            xmin, ymin, xmax, ymax = (math.floor(float(c)) for c in coords)  # type: ignore
        except ValueError:
            raise PrepareError(f"{path}: object {k} ({name}) has a non-numeric box "
                               f"{coords}") from None
        objects.append(VOCObject(LABEL[name], difficult, (xmin - 1, ymin - 1, xmax - 1, ymax - 1)))
    return VOCAnnotation(root.findtext("filename", default="").strip(), size, tuple(objects))


def box_area(box: Box) -> int:
    return (box[2] - box[0] + 1) * (box[3] - box[1] + 1)


def image_label(objects: Sequence[VOCObject]) -> int:
    """The class with the largest total box area; ties -> the lower label (module docstring)."""
    if not objects:
        raise PrepareError("no objects")
    totals: dict[int, int] = {}
    for obj in objects:
        totals[obj.label] = totals.get(obj.label, 0) + box_area(obj.box)
    return min(totals, key=lambda c: (-totals[c], c))


def read_image_set(root: Path, spec: str) -> tuple[Path, list[str]]:
    """The image names of a set: a name under ``ImageSets/Main`` or a path to a list file."""
    path = Path(spec)
    if not (path.suffix == ".txt" or os.sep in spec or "/" in spec):
        path = root / "ImageSets" / "Main" / f"{spec}.txt"
    if not path.is_file():
        raise PrepareError(f"image set {spec!r}: {path} does not exist")
    names: list[str] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8-sig") as f:
        for lineno, raw in enumerate(f, start=1):
            fields = raw.split()
            if not fields:
                continue
            name = fields[0]
            try:
                check_relative_path(name, "image name")
            except UnsafePathError as exc:
                raise PrepareError(f"{path}:{lineno}: {exc}") from None
            if "/" in name or "," in name:
                raise PrepareError(f"{path}:{lineno}: image name {name!r} may not contain "
                                   "'/' or ','")
            if name in seen:
                raise PrepareError(f"{path}:{lineno}: duplicate image {name!r} (first on line "
                                   f"{seen[name]})")
            seen[name] = lineno
            names.append(name)
    if not names:
        raise PrepareError(f"{path}: lists no images")
    return path, names


def _convert(root: Path, names: list[str], boxes: str, exclude_difficult: bool,
             workers: int) -> tuple[Metadata, dict[str, list[int]], list[str]]:
    """Metadata of one set (+ every image's class list, + the names skipped)."""
    sizes = _image_sizes(root / "JPEGImages", [f"{n}.jpg" for n in names], workers)
    meta = Metadata(image_ids=[], class_labels={}, image_sizes={}, boxes={})
    classes: dict[str, list[int]] = {}
    skipped: list[str] = []
    for name, (width, height) in zip(names, sizes):
        xml = root / "Annotations" / f"{name}.xml"
        ann = parse_annotation(xml)
        if ann.size is not None and ann.size != (width, height):
            raise PrepareError(f"{xml}: <size> {ann.size[0]}x{ann.size[1]} differs from the "
                               f"decoded image {width}x{height}")
        objects = [o for o in ann.objects if not (exclude_difficult and o.difficult)]
        if not objects:
            if ann.objects:
                skipped.append(name)
                continue
            raise PrepareError(f"{xml}: no <object>; every image needs at least one box")
        clipped = []
        for k, obj in enumerate(objects, start=1):
            x0, y0, x1, y1 = obj.box
            x0, y0 = max(x0, 0), max(y0, 0)
            x1, y1 = min(x1, width - 1), min(y1, height - 1)
            if x1 < x0 or y1 < y0:
                raise PrepareError(f"{xml}: box {obj.box} of {VOC_CLASSES[obj.label]} lies "
                                   f"outside the {width}x{height} image")
            clipped.append(VOCObject(obj.label, obj.difficult, (x0, y0, x1, y1)))
        label = image_label(clipped)
        image_id = f"{name}.jpg"
        meta.image_ids.append(image_id)
        meta.class_labels[image_id] = label
        meta.image_sizes[image_id] = (width, height)
        meta.boxes[image_id] = [o.box for o in clipped  # type: ignore[index]
                                if boxes == "all" or o.label == label]
        classes[image_id] = sorted({o.label for o in clipped})
    return meta, classes, skipped


def prepare_voc(root: str | os.PathLike, out: str | os.PathLike, *, train_set: str = "train",
                test_set: str = "val", val_set: str | None = None, val_per_class: int = 5,
                seed: int = 0, boxes: str = "all", exclude_difficult: bool = False,
                force: bool = False, workers: int = 1) -> dict[str, Metadata]:
    """Write wsolevaluation metadata for VOC2012 at ``root`` (see the module docstring).

    Returns the written splits; images skipped by ``exclude_difficult`` (only difficult
    objects) are absent from them. Nothing is written unless every listed image decodes and
    every annotation parses.
    """
    root, out = Path(root), Path(out)
    if not (root / "JPEGImages").is_dir() or not (root / "Annotations").is_dir():
        raise PrepareError(f"--root {root} lacks JPEGImages/ or Annotations/ (expected "
                           "VOCdevkit/VOC2012)")
    if boxes not in ("all", "label"):
        raise PrepareError(f"boxes must be 'all' or 'label', got {boxes!r}")
    if val_per_class < 0:
        raise PrepareError(f"val per class must be >= 0, got {val_per_class}")
    sets = {"train": read_image_set(root, train_set), "test": read_image_set(root, test_set)}
    if val_set is not None:
        sets["val"] = read_image_set(root, val_set)
    owner: dict[str, Path] = {}
    for split, (path, names) in sets.items():
        for name in names:
            if name in owner:
                raise PrepareError(f"image {name!r} is in both {owner[name]} and {path}; "
                                   "the splits must be disjoint")
            owner[name] = path
    _refuse_overwrite(out, ("train", "val", "test"), force)
    result: dict[str, Metadata] = {}
    classes: dict[str, list[int]] = {}
    for split, (_, names) in sets.items():
        meta, cls, _skipped = _convert(root, names, boxes, exclude_difficult, workers)
        result[split] = meta
        classes.update(cls)
    if val_set is None and val_per_class > 0:
        try:
            result["train"], result["val"] = carve_val(result["train"], val_per_class, seed)
        except ValueError as exc:
            raise PrepareError(f"cannot carve val from {sets['train'][0]}: {exc} (use "
                               "--val-per-class 0 or --val-set)") from None
    order = [s for s in ("train", "val", "test") if s in result]
    for split in order:
        write_metadata(result[split], out / split)
    if "val" not in result and (out / "val").is_dir():
        for f in FILES:  # with --force, do not leave a stale val next to the new train
            (out / "val" / f).unlink(missing_ok=True)
    write_class_names(out / "class_names.txt", VOC_CLASSES)
    rows = [f"{split},{i},{result[split].class_labels[i]},{' '.join(map(str, classes[i]))}\n"
            for split in order for i in result[split].image_ids]
    atomic_write_text(out / "image_classes.csv", "split,image_id,label,classes\n" + "".join(rows))
    return {s: result[s] for s in order}


__all__ = ["LABEL", "VOCAnnotation", "VOCObject", "VOC_CLASSES", "image_label",
           "parse_annotation", "prepare_voc", "read_image_set"]
