"""Large-object benchmark: crop every image of a box dataset around its object.

``wsol prepare crops --from DIR --out DIR`` turns a dataset in wsolevaluation layout (with
boxes) into one where the object covers 40-100 % of the image, the regime in which methods
tuned on CUB (objects ~ 30 % of the image) are rarely tested.

Input (``--from``) is either of the layouts ``wsol prepare`` writes:

- ``<from>/{train,val,test}/*.txt`` (``wsol prepare cub``/``voc``/``folder``: metadata only;
  the image root is then required as ``--image-root``), or
- ``<from>/metadata/{train,val,test}`` + ``<from>/images`` (``wsol prepare synthetic`` and
  this command's own output; ``--image-root`` defaults to ``<from>/images``).

Every split present (a directory holding ``image_ids.txt``) is cropped; each must have box
localization (mask-only splits are refused). Class names are copied from ``class_names.txt``
next to the split directories (or next to ``metadata/``) when there is one.

Crop geometry (all coordinates inclusive pixels, as in method-spec §4). For an image of size
``W x H`` with boxes ``B_j``, let ``b = (x0, y0, x1, y1)`` be the union of its boxes
(``box="union"``, the default) or its first box (``box="first"``), ``bw = x1 - x0 + 1``,
``bh = y1 - y0 + 1``. With a per-image generator ``rng`` (below):

1. target cover ``c ~ U(min_cover, max_cover)``;
2. crop size keeps the box's aspect ratio: ``s = sqrt(1 / c)``, ``cw = clip(floor(bw s), bw, W)``,
   ``ch = clip(floor(bh s), bh, H)``. When one side is clipped by the image, the other grows to
   keep the target area ``bw bh / c``: ``ch = clip(floor(bw bh / (c cw)), bh, H)`` (and vice
   versa). When both are clipped the crop is the whole image. Rounding down makes the achieved
   cover ``bw bh / (cw ch)`` never smaller than the target (so always ``>= min_cover``); it
   exceeds the target by more than rounding only when the image is too small for the target
   (``clipped`` in ``crops.csv``; counted as ``clipped`` in ``crops.json``). Target and achieved
   cover are recorded per image;
3. margins: ``left ~ U{0..cw - bw}`` (right = the rest), ``top ~ U{0..ch - bh}``; the window
   ``[x0 - left, x0 - left + cw - 1]`` is then shifted (not shrunk) into ``[0, W - 1]``, which is
   always possible since ``bw <= cw <= W``; same for ``y``;
4. every box ``B_j`` is moved into the crop and clipped to it:
   ``x0' = max(x0 - cx0, 0)``, ``x1' = min(x1 - cx0, cw - 1)`` (protocol style), and dropped
   if nothing of it is left (only possible with ``box="first"``).

Determinism: image ``id`` uses ``numpy.random.default_rng([seed, *sha256(id)[:4 words]])``,
independent of split order and of the other images; the same seed gives byte-identical
metadata and images (JPEG quality 95 / PNG, re-encoded by PIL from the decoded RGB image).

Output layout under ``--out``::

    images/<image_id>              the crop (same relative path and extension as the source)
    metadata/<split>/*.txt         wsolevaluation metadata: crop sizes, moved boxes, labels
    class_names.txt                copied from the source when present
    crops.csv                      split,image_id,cx0,cy0,cx1,cy1,target_cover,cover,clipped
                                   (crop window in source pixels, inclusive)
    crops.json                     parameters and per-split cover statistics (min/mean/max)

Train on it with ``data.root=<out>/images data.metadata=<out>/metadata``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsol.data.metadata import Box, Metadata, read_metadata, write_metadata
from wsol.data.transforms import load_image
from wsol.errors import PrepareError
from wsol.utils.io import atomic_write_text
from wsol.utils.paths import safe_join

SPLITS = ("train", "val", "test")
JPEG_QUALITY = 95
_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".tif": "TIFF",
            ".tiff": "TIFF"}


@dataclass(frozen=True)
class Crop:
    """One crop: window ``(cx0, cy0, cx1, cy1)`` in source pixels (inclusive), the moved boxes,
    the drawn target cover and the achieved one."""

    window: Box
    boxes: list[Box]
    target_cover: float
    cover: float
    clipped: bool = False  # the image was too small for the target crop size

    @property
    def size(self) -> tuple[int, int]:
        return (self.window[2] - self.window[0] + 1, self.window[3] - self.window[1] + 1)


def image_rng(seed: int, image_id: str) -> np.random.Generator:
    """The generator of one image: seeded by ``seed`` and the SHA-256 of its id."""
    digest = hashlib.sha256(image_id.encode("utf-8")).digest()
    words = [int.from_bytes(digest[4 * k:4 * k + 4], "little") for k in range(4)]
    return np.random.default_rng([seed, *words])


def union_box(boxes: Sequence[Box]) -> Box:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes),
            max(b[2] for b in boxes), max(b[3] for b in boxes))


def _crop_side(extent: int, limit: int, scale: float) -> int:
    return int(min(limit, max(extent, math.floor(extent * scale + 1e-9))))


def plan_crop(size: tuple[int, int], boxes: Sequence[Box], rng: np.random.Generator,
              min_cover: float = 0.4, max_cover: float = 1.0, box: str = "union") -> Crop:
    """The crop of one image (module docstring, steps 1-4). ``size`` is ``(W, H)``."""
    if not boxes:
        raise PrepareError("image has no box")
    width, height = size
    x0, y0, x1, y1 = union_box(boxes) if box == "union" else boxes[0]
    bw, bh = x1 - x0 + 1, y1 - y0 + 1
    target = float(rng.uniform(min_cover, max_cover))
    scale = math.sqrt(1.0 / target)
    want_w, want_h = bw * scale, bh * scale
    clipped = want_w > width or want_h > height
    cw, ch = _crop_side(bw, width, scale), _crop_side(bh, height, scale)
    area = bw * bh / target
    if want_w > width and ch < height:
        ch = int(min(height, max(bh, math.floor(area / cw + 1e-9))))
    elif want_h > height and cw < width:
        cw = int(min(width, max(bw, math.floor(area / ch + 1e-9))))
    clipped = clipped and cw * ch < math.floor(area + 1e-9)
    left = int(rng.integers(0, cw - bw + 1))
    top = int(rng.integers(0, ch - bh + 1))
    cx0 = min(max(x0 - left, 0), width - cw)
    cy0 = min(max(y0 - top, 0), height - ch)
    cx1, cy1 = cx0 + cw - 1, cy0 + ch - 1
    moved: list[Box] = []
    for bx0, by0, bx1, by1 in boxes:
        nx0, ny0 = max(bx0 - cx0, 0), max(by0 - cy0, 0)
        nx1, ny1 = min(bx1 - cx0, cw - 1), min(by1 - cy0, ch - 1)
        if nx1 >= nx0 and ny1 >= ny0:
            moved.append((nx0, ny0, nx1, ny1))
    return Crop(window=(cx0, cy0, cx1, cy1), boxes=moved, target_cover=target,
                cover=bw * bh / (cw * ch), clipped=clipped)


def resolve_source(source: str | os.PathLike,
                   image_root: str | os.PathLike | None) -> tuple[Path, Path, Path | None]:
    """``(metadata root, image root, class_names.txt or None)`` of a ``--from`` directory."""
    source = Path(source)
    if not source.is_dir():
        raise PrepareError(f"--from {source} is not a directory")
    if (source / "metadata").is_dir() and any((source / "metadata" / s / "image_ids.txt")
                                               .is_file() for s in SPLITS):
        meta_root, default_images = source / "metadata", source / "images"
        names = [source / "metadata" / "class_names.txt", source / "class_names.txt"]
    elif any((source / s / "image_ids.txt").is_file() for s in SPLITS):
        meta_root, default_images = source, None
        names = [source / "class_names.txt", source.parent / "class_names.txt"]
    else:
        raise PrepareError(f"--from {source} holds no split directory ({', '.join(SPLITS)}) with "
                           "an image_ids.txt, neither directly nor under metadata/")
    if image_root is None:
        if default_images is None:
            raise PrepareError(f"--from {source} holds metadata only; pass --image-root (the "
                               "directory the image ids are relative to)")
        image_root = default_images
    image_root = Path(image_root)
    if not image_root.is_dir():
        raise PrepareError(f"image root {image_root} is not a directory")
    class_names = next((p for p in names if p.is_file()), None)
    return meta_root, image_root, class_names


def _refuse_overwrite(out: Path, force: bool) -> None:
    if force:
        return
    for sub in ("images", "metadata", "crops.csv", "crops.json"):
        path = out / sub
        if path.is_file() or (path.is_dir() and any(path.iterdir())):
            raise FileExistsError(f"{path} already exists; pass --force (force=True) to "
                                  "overwrite (files are replaced, nothing else is deleted)")


def _save(img, path: Path) -> None:  # type: ignore[no-untyped-def]
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise PrepareError(f"{path}: cannot write images with extension {path.suffix!r} "
                           f"(known: {', '.join(sorted(_FORMATS))})")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if fmt == "JPEG":
        img.save(tmp, format=fmt, quality=JPEG_QUALITY)
    else:
        img.save(tmp, format=fmt)
    os.replace(tmp, path)


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    arr = np.asarray(values, dtype=np.float64)
    return {"n": int(arr.size), "min": round(float(arr.min()), 4),
            "mean": round(float(arr.mean()), 4), "max": round(float(arr.max()), 4)}


def prepare_crops(source: str | os.PathLike, out: str | os.PathLike, *,
                  image_root: str | os.PathLike | None = None, seed: int = 0,
                  min_cover: float = 0.4, max_cover: float = 1.0, box: str = "union",
                  force: bool = False, workers: int = 1) -> dict[str, Metadata]:
    """Crop the dataset at ``source`` into ``out`` (see the module docstring).

    Returns the written metadata per split. Everything is checked (layout, box localization
    of every split, cover range) before the first image is written.
    """
    if not 0.0 < min_cover <= max_cover <= 1.0:
        raise PrepareError(f"covers must satisfy 0 < min_cover <= max_cover <= 1, got "
                           f"min_cover={min_cover}, max_cover={max_cover}")
    if box not in ("union", "first"):
        raise PrepareError(f"box must be 'union' or 'first', got {box!r}")
    out = Path(out)
    meta_root, images, class_names = resolve_source(source, image_root)
    if out.resolve() == images.resolve() or images.resolve().is_relative_to(out.resolve()):
        raise PrepareError(f"--out {out} contains the source images {images}; choose another "
                           "directory")
    _refuse_overwrite(out, force)
    metas: dict[str, Metadata] = {}
    for split in SPLITS:
        if not (meta_root / split / "image_ids.txt").is_file():
            continue
        meta = read_metadata(meta_root / split)
        if meta.boxes is None:
            raise PrepareError(f"{meta_root / split / 'localization.txt'}: split {split} has no "
                               "box localization; crops need boxes")
        unboxed = [i for i in meta.image_ids if not meta.boxes.get(i)]
        if unboxed:
            raise PrepareError(f"{meta_root / split / 'localization.txt'}: image id "
                               f"{unboxed[0]!r} has no box ({len(unboxed)} image(s) without)")
        metas[split] = meta

    def one(image_id: str, meta: Metadata) -> Crop:
        img = load_image(safe_join(images, image_id, "image id"))
        expected = meta.image_sizes.get(image_id)
        if expected is not None and tuple(expected) != img.size:
            raise PrepareError(f"{images / image_id}: decoded size {img.size[0]}x{img.size[1]} "
                               f"differs from image_sizes.txt ({expected[0]}x{expected[1]})")
        try:
            boxes = meta.boxes[image_id]  # type: ignore[index]
            crop = plan_crop(img.size, boxes, image_rng(seed, image_id), min_cover, max_cover, box)
        except PrepareError as exc:
            raise PrepareError(f"{image_id}: {exc}") from None
        cx0, cy0, cx1, cy1 = crop.window
        _save(img.crop((cx0, cy0, cx1 + 1, cy1 + 1)),
              safe_join(out / "images", image_id, "output image path"))
        return crop

    result: dict[str, Metadata] = {}
    rows: list[str] = []
    summary: dict[str, dict] = {}
    for split, meta in metas.items():
        if workers > 1:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                crops = list(pool.map(lambda i: one(i, meta), meta.image_ids))
        else:
            crops = [one(i, meta) for i in meta.image_ids]
        new = Metadata(image_ids=list(meta.image_ids), class_labels=dict(meta.class_labels),
                       image_sizes={i: c.size for i, c in zip(meta.image_ids, crops)},
                       boxes={i: c.boxes for i, c in zip(meta.image_ids, crops)})
        write_metadata(new, out / "metadata" / split)
        result[split] = new
        for image_id, c in zip(meta.image_ids, crops):
            rows.append(f"{split},{image_id},{','.join(map(str, c.window))},"
                        f"{c.target_cover:.6f},{c.cover:.6f},{int(c.clipped)}\n")
        summary[split] = {
            "images": len(crops), "cover": _stats([c.cover for c in crops]),
            "target_cover": _stats([c.target_cover for c in crops]),
            "clipped": sum(c.clipped for c in crops)}
    if class_names is not None:
        shutil.copyfile(class_names, out / "class_names.txt")
    atomic_write_text(out / "crops.csv",
                      "split,image_id,cx0,cy0,cx1,cy1,target_cover,cover,clipped\n" + "".join(rows))
    params = {"generator": "wsol.data.crops", "source_metadata": str(meta_root),
              "source_images": str(images), "seed": seed, "min_cover": min_cover,
              "max_cover": max_cover, "box": box, "jpeg_quality": JPEG_QUALITY,
              "splits": summary}
    atomic_write_text(out / "crops.json", json.dumps(params, indent=2) + "\n")
    return result


__all__ = ["Crop", "image_rng", "plan_crop", "prepare_crops", "resolve_source",
           "union_box"]
