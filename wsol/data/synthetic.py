"""A procedural, seeded WSOL dataset in the wsolevaluation format (no downloads).

Every image holds one object made of

- a **body**: a large ellipse with a wavy outline and a striped or checkered texture in muted
  colours. Its size, shape, texture and colours are drawn from the *same* distribution for every
  class, so the body carries no class information;
- a **part**: a small saturated patch near one end of the body's major axis. Its hue
  (red, green, blue, yellow, cyan, magenta for up to 6 classes, else ``label / C``) and shape
  (disk, square, triangle, diamond, cross, ring, cycled by label) identify the class.

on a smooth, muted, random background with 3-6 muted distractor shapes (drawn from the same
shapes as the parts, so only colour *and* context identify a part). A classifier only needs the
part, so its CAM tends to cover the part and miss most of the body, while the ground truth is
the whole object: the partial-activation problem CREAM and B-CAM address, in miniature.

Geometry: the body's semi-major axis is ``U(0.22, 0.42) * min(W, H)`` (minor axis
``U(0.45, 0.75)`` times that), at a uniform random angle and position (the whole object stays
inside the image); the part radius is ``U(0.32, 0.40)`` times the semi-major axis. Half of the
images are ``S x S`` (``S = image_size``); the other half have one side shortened to
``round(S * U(0.65, 0.9))`` (width or height at random), so box rescaling to a square input is
exercised.

Layout under ``<out>``::

    images/<split>/c<LL>/<NNNN>.jpg            JPEG (quality 92), RGB
    metadata/<split>/                          train, val, test: boxes (localization.txt holds
                                               the bounding box of the whole object, body + part,
                                               inclusive pixels), image sizes, labels
    metadata_masks/<split>/                    val, test: same images, mask localization
    masks/<split>/c<LL>/<NNNN>_m0.png          instance mask, mode L, 255 = object, 0 = not
    masks/<split>/c<LL>/<NNNN>_ignore.png      ignore mask, mode L, 255 = ignored: the 1-pixel
                                               band just outside the object outline (JPEG and
                                               the hard outline make it ambiguous), 0 elsewhere
    classes.txt                                ``label,name`` per line (e.g. ``0,red disk``)
    class_names.txt                            the same names, one per line in label order
                                               (``data.class_names=<out>/class_names.txt``)
    synthetic.json                             the generation parameters

Image ids are relative to ``<out>/images``, mask paths to ``<out>/masks`` (the OpenImages
convention: use ``image_root=<out>/images``, ``mask_root=<out>/masks``).

Determinism: image ``k`` of class ``c`` in split ``s`` (0 train, 1 val, 2 test) is drawn from
``numpy.random.default_rng([seed, s, c, k])`` alone, so the same seed gives byte-identical
files, and changing one split's size leaves the other images unchanged.

Measured with the defaults (4 classes, 100/10/25 per class, 96 px; generation ~2-3 s): tiny_cnn
(width 16) trained 12 epochs with SGD (lr 0.02, resize 108 -> crop 96 -> flip) reaches 100 %
test accuracy; its min-max-normalized CAM averages 0.78 on the part, 0.42 on the rest of the body
and 0.29 on the background, and the largest-contour CAM box reaches IoU >= 0.5 on only ~6 % of
the test images at the best threshold: CAM finds the part, not the object.
"""

from __future__ import annotations

import colorsys
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from wsol.data.metadata import MaskAnnotation, Metadata, write_metadata
from wsol.utils.io import atomic_write_text

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
PART_SHAPES = ("disk", "square", "triangle", "diamond", "cross", "ring")
_COLOR_NAMES = ((0.0, "red"), (1 / 12, "orange"), (1 / 6, "yellow"), (1 / 4, "lime"),
                (1 / 3, "green"), (5 / 12, "spring-green"), (1 / 2, "cyan"), (7 / 12, "azure"),
                (2 / 3, "blue"), (3 / 4, "violet"), (5 / 6, "magenta"), (11 / 12, "rose"))
MAX_CLASSES = 24
JPEG_QUALITY = 92
FORMAT_VERSION = 1


@dataclass
class Sample:
    """One rendered image: ``image`` ``(H, W, 3)`` uint8, boolean ``(H, W)`` masks, and the
    inclusive bounding box ``(x0, y0, x1, y1)`` of ``object_mask`` (body + part)."""

    image: np.ndarray
    object_mask: np.ndarray
    part_mask: np.ndarray
    ignore_mask: np.ndarray
    box: tuple[int, int, int, int]


#: Hues of the first classes when there are at most six: red, green, blue, yellow, cyan, magenta
#: (the RGB primaries and secondaries, far apart in RGB); more classes use ``label / C``.
PRIMARY_HUES = (0.0, 1 / 3, 2 / 3, 1 / 6, 1 / 2, 5 / 6)


def class_hue(label: int, num_classes: int) -> float:
    """The hue of class ``label``'s part (HSV, in [0, 1))."""
    if num_classes <= len(PRIMARY_HUES):
        return PRIMARY_HUES[label]
    return label / num_classes


def class_description(label: int, num_classes: int) -> str:
    hue = class_hue(label, num_classes)
    name = min(_COLOR_NAMES, key=lambda hn: min(abs(hn[0] - hue), 1 - abs(hn[0] - hue)))[1]
    return f"{name} {PART_SHAPES[label % len(PART_SHAPES)]}"


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Unit-size shapes in local coordinates (all fit in the disk of radius 1.3)."""
    if shape == "disk":
        return u * u + v * v <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.85
    if shape == "triangle":  # apex up (v = -1), base at v = 0.75
        return (v <= 0.75) & (np.abs(u) <= (v + 1.0) * 0.6)
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.1
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.35) & (av <= 1.0)) | ((av <= 0.35) & (au <= 1.0))
    if shape == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.3)
    raise ValueError(f"unknown shape {shape!r}")


def _local(x: np.ndarray, y: np.ndarray, cx: float, cy: float, angle: float,
           su: float, sv: float) -> tuple[np.ndarray, np.ndarray]:
    """Image coordinates -> a frame centred at (cx, cy), rotated by ``angle``, scaled 1/su, 1/sv."""
    c, s = np.cos(angle), np.sin(angle)
    dx, dy = x - cx, y - cy
    return (dx * c + dy * s) / su, (-dx * s + dy * c) / sv


def _muted(rng: np.random.Generator, s_max: float = 0.3) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.0, s_max),
                                        rng.uniform(0.25, 0.9)), dtype=np.float32)


def _image_size(rng: np.random.Generator, size: int) -> tuple[int, int]:
    """``(W, H)``: square half the time, else one side shortened to ``S * U(0.65, 0.9)``."""
    if rng.random() < 0.5:
        return size, size
    short = round(size * rng.uniform(0.65, 0.9))
    return (size, short) if rng.random() < 0.5 else (short, size)


def render_sample(rng: np.random.Generator, label: int, num_classes: int,
                  image_size: int) -> Sample:
    """Draw one image of class ``label`` (see the module docstring for the distribution)."""
    w, h = _image_size(rng, image_size)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    side = min(w, h)

    # Background: muted base colour + low-frequency (mostly luminance) noise.
    grid = (rng.normal(0.0, 0.12, size=(5, 5, 1))  # mostly luminance, a little chroma
            + rng.normal(0.0, 0.04, size=(5, 5, 3))).astype(np.float32)
    img = _muted(rng)[None, None, :] + cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)

    # Distractors: muted shapes of every part shape, same distribution for all classes.
    for _ in range(int(rng.integers(3, 7))):
        r = side * rng.uniform(0.04, 0.1)
        u, v = _local(x, y, rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0, np.pi), r, r)
        m = _shape_mask(PART_SHAPES[int(rng.integers(len(PART_SHAPES)))], u, v)
        img[m] = _muted(rng)

    # Body: wavy ellipse, placed so that body + part stay inside the image.
    angle = rng.uniform(0.0, np.pi)
    end = 1.0 if rng.random() < 0.5 else -1.0  # which end of the major axis carries the part
    a_frac, b_ratio = rng.uniform(0.22, 0.42), rng.uniform(0.45, 0.75)
    r_ratio, part_angle = rng.uniform(0.32, 0.40), rng.uniform(-0.3, 0.3)
    wave = (rng.uniform(0.0, 0.07), rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.05),
            rng.uniform(0, 2 * np.pi))
    while True:
        a = a_frac * side
        b, r = a * b_ratio, a * r_ratio
        c, s = np.cos(angle), np.sin(angle)
        ex = np.hypot(1.12 * a * c, 1.12 * b * s)
        ey = np.hypot(1.12 * a * s, 1.12 * b * c)
        px_rel, py_rel = end * 0.8 * a * c, end * 0.8 * a * s
        lo_x, hi_x = min(-ex, px_rel - 1.3 * r), max(ex, px_rel + 1.3 * r)
        lo_y, hi_y = min(-ey, py_rel - 1.3 * r), max(ey, py_rel + 1.3 * r)
        if hi_x - lo_x <= w - 3 and hi_y - lo_y <= h - 3:
            break
        a_frac *= 0.9
    cx = rng.uniform(1 - lo_x, w - 2 - hi_x)
    cy = rng.uniform(1 - lo_y, h - 2 - hi_y)
    u, v = _local(x, y, cx, cy, angle, a, b)
    phi = np.arctan2(v, u)
    outline = 1.0 + wave[0] * np.sin(3 * phi + wave[1]) + wave[2] * np.sin(5 * phi + wave[3])
    body = np.hypot(u, v) <= outline

    period = side * rng.uniform(0.07, 0.15)
    t_angle, t_phase = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
    tu, tv = _local(x, y, 0.0, 0.0, t_angle, period / (2 * np.pi), period / (2 * np.pi))
    texture = np.sin(tu + t_phase)
    if rng.random() < 0.5:  # checkered instead of striped
        texture = texture * np.sin(tv)
    t = (0.5 + 0.5 * texture)[..., None]
    c1, c2 = _muted(rng, 0.35), _muted(rng, 0.35)
    img = np.where(body[..., None], t * c1 + (1 - t) * c2, img)

    # Part: the class's shape in the class's saturated hue.
    pu, pv = _local(x, y, cx + px_rel, cy + py_rel, part_angle, r, r)  # upright +-17 deg
    part = _shape_mask(PART_SHAPES[label % len(PART_SHAPES)], pu, pv)
    hue = (class_hue(label, num_classes) + rng.uniform(-0.015, 0.015)) % 1.0
    img[part] = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.85, 1.0),
                                             rng.uniform(0.85, 1.0)), dtype=np.float32)

    img = img + rng.normal(0.0, 0.02, size=img.shape).astype(np.float32)
    image = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    obj = body | part
    ignore = cv2.dilate(obj.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~obj
    ys, xs = np.nonzero(obj)
    box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
    return Sample(image=image, object_mask=obj, part_mask=part, ignore_mask=ignore, box=box)


def _png(mask: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


_GENERATED = ("images", "masks", "metadata", "metadata_masks")


def make_synthetic(out: str | os.PathLike, *, num_classes: int = 4, train_per_class: int = 100,
                   val_per_class: int = 10, test_per_class: int = 25, image_size: int = 96,
                   seed: int = 0, force: bool = False) -> dict[str, Metadata]:
    """Generate the dataset under ``out`` (layout in the module docstring).

    Refuses to write into an existing dataset unless ``force`` (which first deletes the
    generated sub-directories of a previous synthetic dataset there). Returns the box metadata
    of each split.
    """
    if not 2 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be in [2, {MAX_CLASSES}], got {num_classes}")
    counts = {"train": train_per_class, "val": val_per_class, "test": test_per_class}
    for split, n in counts.items():
        if n < 0:
            raise ValueError(f"{split}_per_class must be >= 0, got {n}")
    if counts["train"] == 0:
        raise ValueError("train_per_class must be >= 1")
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    out = Path(out)
    existing = [d for d in (*_GENERATED, "synthetic.json") if (out / d).exists()]
    if existing:
        if not force:
            raise FileExistsError(f"{out / existing[0]} already exists; pass --force "
                                  "(force=True) to overwrite the dataset")
        if (out / "synthetic.json").is_file():
            for d in _GENERATED:
                if (out / d).is_dir():
                    shutil.rmtree(out / d)

    result: dict[str, Metadata] = {}
    for split, per_class in counts.items():
        if per_class == 0:
            continue
        ids: list[str] = []
        labels: dict[str, int] = {}
        sizes: dict[str, tuple[int, int]] = {}
        boxes: dict[str, list[tuple[int, int, int, int]]] = {}
        masks: dict[str, MaskAnnotation] = {}
        for label in range(num_classes):
            img_dir = out / "images" / split / f"c{label:02d}"
            mask_dir = out / "masks" / split / f"c{label:02d}"
            img_dir.mkdir(parents=True, exist_ok=True)
            if split != "train":
                mask_dir.mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                rng = np.random.default_rng([seed, SPLIT_CODES[split], label, k])
                sample = render_sample(rng, label, num_classes, image_size)
                image_id = f"{split}/c{label:02d}/{k:04d}.jpg"
                (img_dir / f"{k:04d}.jpg").write_bytes(_jpeg(sample.image))
                ids.append(image_id)
                labels[image_id] = label
                sizes[image_id] = (sample.image.shape[1], sample.image.shape[0])
                boxes[image_id] = [sample.box]
                if split != "train":
                    stem = f"{split}/c{label:02d}/{k:04d}"
                    (mask_dir / f"{k:04d}_m0.png").write_bytes(_png(sample.object_mask))
                    (mask_dir / f"{k:04d}_ignore.png").write_bytes(_png(sample.ignore_mask))
                    masks[image_id] = MaskAnnotation([f"{stem}_m0.png"], f"{stem}_ignore.png")
        meta = Metadata(image_ids=ids, class_labels=labels, image_sizes=sizes, boxes=boxes)
        write_metadata(meta, out / "metadata" / split)
        if split != "train":
            write_metadata(Metadata(image_ids=ids, class_labels=labels, image_sizes=sizes,
                                    masks=masks), out / "metadata_masks" / split)
        result[split] = meta

    atomic_write_text(out / "classes.txt", "".join(
        f"{c},{class_description(c, num_classes)}\n" for c in range(num_classes)))
    atomic_write_text(out / "class_names.txt", "".join(
        f"{class_description(c, num_classes)}\n" for c in range(num_classes)))
    params = {"format_version": FORMAT_VERSION, "generator": "wsol.data.synthetic",
              "num_classes": num_classes, "train_per_class": train_per_class,
              "val_per_class": val_per_class, "test_per_class": test_per_class,
              "image_size": image_size, "seed": seed, "jpeg_quality": JPEG_QUALITY,
              "classes": [class_description(c, num_classes) for c in range(num_classes)]}
    atomic_write_text(out / "synthetic.json", json.dumps(params, indent=2) + "\n")
    return result
