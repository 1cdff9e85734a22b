"""Dataset preparation: CUB-200-2011 -> wsolevaluation metadata, and image-root checks.

CUB (method-spec §4)
--------------------
The original layout (``images.txt``, ``image_class_labels.txt``, ``train_test_split.txt``,
``bounding_boxes.txt`` with ``x y w h`` floats, ``images/``) becomes one metadata split per
directory (``<out>/{train,val,test}/*.txt``, see :mod:`wsol.data.metadata`):

- label = CUB class id - 1 (0-based);
- image size = the decoded image's ``(W, H)`` (every image is decoded, which also catches
  missing and corrupt files: the error names the file);
- box (inclusive pixels): ``x0 = floor(x)``, ``y0 = floor(y)``,
  ``x1 = min(floor(x + w), W - 1)``, ``y1 = min(floor(y + h), H - 1)``
  (e.g. ``60 27 325 304`` in a 500x335 image -> ``60,27,385,331``).
- order: the order of ``images.txt`` restricted to the split. The official wsolevaluation
  ``CUB/train`` and ``CUB/test`` lists follow exactly this order (checked line by line against
  the official files for the 543 images of classes 1-10), so the output reproduces the official
  lines, order included.

Class names: when ``classes.txt`` (``<class_id> <name>``) is present, ``<out>/class_names.txt``
gets one name per line in label order (line ``k`` = label ``k`` = CUB class ``k + 1``), for the
labels ``0 .. max label`` of the written splits (10 lines for classes 1-10, not 200). A name is
CUB's folder name without its number prefix and with ``_`` as spaces
(``001.Black_footed_Albatross`` -> ``Black footed Albatross``). Use it as
``data.class_names=<out>/class_names.txt``.

Only the images listed in ``images.txt`` are used; the other id files may be the full
11,788-line originals (ids not in ``images.txt`` are ignored).

The official ``val`` split (train-fullsup) is CUBV2, a separate image set that is not
distributed with CUB. :func:`carve_val` instead moves ``K`` images per class (default 5, the
official 1000 val images / 200 classes) from the official train split into ``val``, chosen with
``random.Random(seed)`` class by class (classes ascending, candidates in ``images.txt`` order).
``train`` keeps the rest, so ``train`` and ``val`` are disjoint and their union is the official
train split: full CUB gives 5994 - 1000 = 4994 train images; classes 1-10 give 300 - 50 = 250.
``K = 0`` writes no ``val`` split and leaves ``train`` identical to the official one.

ILSVRC / OpenImages
-------------------
The images cannot be generated here; :func:`check_dataset` checks an image root (and, for
OpenImages, a mask root) against the official metadata and lists what is missing. A split
without ``image_ids.txt`` (the official ILSVRC ``train`` ships only empty size/box files) is
reported as skipped rather than failing.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from wsol.data.datasets import ImageCheckReport, check_images
from wsol.data.metadata import FILES, Box, Metadata, read_metadata, write_metadata
from wsol.data.transforms import load_image
from wsol.errors import PrepareError
from wsol.utils.io import atomic_write_text

SPLITS = ("train", "val", "test")


# ----------------------------------------------------------------------------------------- CUB


@dataclass
class CUBRecord:
    """One image of the original CUB annotation files (box still in CUB's ``x y w h``)."""

    cub_id: str
    path: str
    class_id: int
    is_train: bool
    xywh: tuple[float, float, float, float]


def _cub_lines(path: Path, nfields: int, form: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, whitespace-separated fields) of a CUB id file, checking the field count."""
    if not path.is_file():
        raise PrepareError(f"{path}: missing (expected the original CUB_200_2011 layout)")
    with open(path, encoding="utf-8-sig") as f:
        for lineno, raw in enumerate(f, start=1):
            fields = raw.split()
            if not fields:
                continue
            if len(fields) != nfields:
                raise PrepareError(f"{path}:{lineno}: expected {nfields} fields ({form}), "
                                   f"got {raw.strip()!r}")
            yield lineno, fields


def _id_map(path: Path, nfields: int, form: str,
            wanted: set[str]) -> dict[str, tuple[int, list[str]]]:
    out: dict[str, tuple[int, list[str]]] = {}
    for lineno, fields in _cub_lines(path, nfields, form):
        if fields[0] not in wanted:
            continue
        if fields[0] in out:
            raise PrepareError(f"{path}:{lineno}: duplicate image id {fields[0]} "
                               f"(first on line {out[fields[0]][0]})")
        out[fields[0]] = (lineno, fields[1:])
    missing = [i for i in wanted if i not in out]
    if missing:
        raise PrepareError(f"{path}: no line for image id {min(missing, key=_id_key)} "
                           f"({len(missing)} image(s) of images.txt missing)")
    return out


def _id_key(cub_id: str) -> tuple[int, str]:
    return (int(cub_id), cub_id) if cub_id.isdigit() else (math.inf, cub_id)  # type: ignore


def read_cub(root: str | os.PathLike) -> list[CUBRecord]:
    """Parse the original CUB annotation files under ``root`` (in ``images.txt`` order)."""
    root = Path(root)
    images_path = root / "images.txt"
    records: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for lineno, (cub_id, rel) in _cub_lines(images_path, 2, "<image_id> <image_name>"):
        if cub_id in seen:
            raise PrepareError(f"{images_path}:{lineno}: duplicate image id {cub_id} "
                               f"(first on line {seen[cub_id]})")
        if "," in rel:
            raise PrepareError(f"{images_path}:{lineno}: image name {rel!r} contains a comma, "
                               "which the comma-separated metadata cannot hold")
        seen[cub_id] = lineno
        records.append((cub_id, rel))
    if not records:
        raise PrepareError(f"{images_path}: lists no images")
    wanted = set(seen)
    labels_path = root / "image_class_labels.txt"
    split_path = root / "train_test_split.txt"
    boxes_path = root / "bounding_boxes.txt"
    labels = _id_map(labels_path, 2, "<image_id> <class_id>", wanted)
    splits = _id_map(split_path, 2, "<image_id> <is_training_image>", wanted)
    boxes = _id_map(boxes_path, 5, "<image_id> <x> <y> <width> <height>", wanted)

    out = []
    for cub_id, rel in records:
        lineno, (cls,) = labels[cub_id]
        if not cls.isdigit() or int(cls) < 1:
            raise PrepareError(f"{labels_path}:{lineno}: class id must be an integer >= 1, "
                               f"got {cls!r}")
        lineno, (flag,) = splits[cub_id]
        if flag not in ("0", "1"):
            raise PrepareError(f"{split_path}:{lineno}: is_training_image must be 0 or 1, "
                               f"got {flag!r}")
        lineno, xywh_s = boxes[cub_id]
        try:
            xywh = tuple(float(v) for v in xywh_s)
        except ValueError:
            raise PrepareError(f"{boxes_path}:{lineno}: box values must be numbers, "
                               f"got {' '.join(xywh_s)!r}") from None
        if not all(math.isfinite(v) for v in xywh) or min(xywh) < 0:
            raise PrepareError(f"{boxes_path}:{lineno}: box values must be finite and >= 0, "
                               f"got {' '.join(xywh_s)!r}")
        out.append(CUBRecord(cub_id, rel, int(cls), flag == "1", xywh))  # type: ignore[arg-type]
    return out


def cub_display_name(folder_name: str) -> str:
    """``001.Black_footed_Albatross`` -> ``Black footed Albatross``."""
    name = folder_name.split(".", 1)[1] if "." in folder_name and \
        folder_name.split(".", 1)[0].isdigit() else folder_name
    return name.replace("_", " ").strip() or folder_name


def read_cub_class_names(root: str | os.PathLike, num_classes: int) -> list[str] | None:
    """Names of CUB classes ``1 .. num_classes`` from ``root/classes.txt`` (``None`` if absent)."""
    path = Path(root) / "classes.txt"
    if not path.is_file():
        return None
    names: dict[int, str] = {}
    with open(path, encoding="utf-8-sig") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            fields = raw.split(maxsplit=1)
            if len(fields) != 2 or not fields[0].isdigit():
                raise PrepareError(f"{path}:{lineno}: expected '<class_id> <class_name>', got "
                                   f"{raw.strip()!r}")
            class_id = int(fields[0])
            if class_id in names:
                raise PrepareError(f"{path}:{lineno}: duplicate class id {class_id}")
            names[class_id] = cub_display_name(fields[1].strip())
    missing = [c for c in range(1, num_classes + 1) if c not in names]
    if missing:
        raise PrepareError(f"{path}: no name for class id {missing[0]} (the labels use classes "
                           f"1..{num_classes})")
    return [names[c] for c in range(1, num_classes + 1)]


def write_class_names(path: str | os.PathLike, names: Sequence[str]) -> Path:
    """One name per line (line ``k`` = label ``k``); names may not contain line breaks."""
    for k, name in enumerate(names):
        if not name or "\n" in name or "\r" in name:
            raise PrepareError(f"class name {k} ({name!r}) is empty or contains a line break")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(f"{n}\n" for n in names))
    return path


def cub_box(xywh: Sequence[float], size: tuple[int, int]) -> Box:
    """Spec §4: CUB ``(x, y, w, h)`` -> inclusive ``(x, y, min(x+w, W-1), min(y+h, H-1))``."""
    x, y, w, h = xywh
    width, height = size
    x0, y0 = math.floor(x), math.floor(y)
    x1, y1 = min(math.floor(x + w), width - 1), min(math.floor(y + h), height - 1)
    if x0 > width - 1 or y0 > height - 1:
        raise PrepareError(f"box {tuple(xywh)} starts outside the {width}x{height} image")
    return (x0, y0, x1, y1)


def _image_sizes(root: Path, rel_paths: list[str], workers: int) -> list[tuple[int, int]]:
    """Decoded ``(W, H)`` of each image (raises :class:`ImageLoadError` naming a bad file)."""
    def size(rel: str) -> tuple[int, int]:
        return load_image(root / rel).size

    if workers <= 1:
        return [size(r) for r in rel_paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL decodes without the GIL
        return list(pool.map(size, rel_paths))


def cub_metadata(root: str | os.PathLike, workers: int = 1) -> dict[str, Metadata]:
    """Official-format ``{"train": ..., "test": ...}`` metadata (with sizes and boxes) for the
    CUB dataset at ``root``; every image under ``root/images`` is decoded."""
    root = Path(root)
    records = read_cub(root)
    sizes = _image_sizes(root / "images", [r.path for r in records], workers)
    out: dict[str, Metadata] = {}
    boxes_path = root / "bounding_boxes.txt"
    for split, is_train in (("train", True), ("test", False)):
        recs = [(r, s) for r, s in zip(records, sizes) if r.is_train == is_train]
        meta = Metadata(image_ids=[r.path for r, _ in recs],
                        class_labels={r.path: r.class_id - 1 for r, _ in recs},
                        image_sizes={r.path: s for r, s in recs}, boxes={})
        for r, s in recs:
            try:
                meta.boxes[r.path] = [cub_box(r.xywh, s)]  # type: ignore[index]
            except PrepareError as exc:
                raise PrepareError(f"{boxes_path}: image id {r.cub_id} ({r.path}): {exc}") from None
        out[split] = meta
    return out


def carve_val(train: Metadata, per_class: int, seed: int = 0) -> tuple[Metadata, Metadata]:
    """Move ``per_class`` images of every class from ``train`` into a new ``val`` split.

    For each class in ascending order, ``random.Random(seed).sample`` picks ``per_class`` of its
    images (candidates in split order); both outputs keep the input order. Returns
    ``(train_rest, val)``; they are disjoint and their union is ``train``. Every class must keep
    at least one training image.
    """
    if per_class < 0:
        raise ValueError(f"val per class must be >= 0, got {per_class}")
    by_class: dict[int, list[str]] = {}
    for image_id in train.image_ids:
        by_class.setdefault(train.class_labels[image_id], []).append(image_id)
    rng = random.Random(seed)
    chosen: set[str] = set()
    for label in sorted(by_class):
        ids = by_class[label]
        if len(ids) <= per_class:
            raise ValueError(f"class {label} has only {len(ids)} training image(s); cannot move "
                             f"{per_class} to val and keep one for training")
        chosen.update(rng.sample(ids, per_class))
    rest = [i for i in train.image_ids if i not in chosen]
    val = [i for i in train.image_ids if i in chosen]
    return train.subset(rest), train.subset(val)


def _refuse_overwrite(out: Path, splits: Sequence[str], force: bool) -> None:
    if force:
        return
    for split in splits:
        existing = [f for f in FILES if (out / split / f).exists()]
        if existing:
            raise FileExistsError(f"{out / split / existing[0]} already exists; pass --force "
                                  "(force=True) to overwrite the metadata")


def prepare_cub(root: str | os.PathLike, out: str | os.PathLike, val_per_class: int = 5,
                seed: int = 0, force: bool = False, workers: int = 1) -> dict[str, Metadata]:
    """Write ``<out>/{train,val,test}`` metadata for the CUB dataset at ``root``.

    ``train``/``test`` are the official splits (``train`` minus the carved ``val``; see the
    module docstring), plus ``<out>/class_names.txt`` when ``classes.txt`` exists. Nothing is
    written if any image is missing or corrupt or if metadata already exists under ``out``
    (unless ``force``). Returns the written splits.
    """
    out = Path(out)
    splits = ["train", "val", "test"] if val_per_class > 0 else ["train", "test"]
    _refuse_overwrite(out, SPLITS, force)
    metas = cub_metadata(root, workers=workers)
    result = {"test": metas["test"]}
    if val_per_class > 0:
        result["train"], result["val"] = carve_val(metas["train"], val_per_class, seed)
    else:
        result["train"] = metas["train"]
    num_classes = max(m.num_classes for m in result.values())
    names = read_cub_class_names(root, num_classes)
    for split in splits:
        write_metadata(result[split], out / split)
    if names is not None:
        write_class_names(out / "class_names.txt", names)
    if val_per_class == 0 and (out / "val").is_dir():
        for f in FILES:  # with --force, do not leave a stale carved val next to the full train
            (out / "val" / f).unlink(missing_ok=True)
    return {s: result[s] for s in splits}


# ------------------------------------------------------------------------- ILSVRC / OpenImages


@dataclass
class SplitCheck:
    """What :func:`check_dataset` found for one split."""

    split: str
    images: ImageCheckReport | None = None
    missing_masks: list[str] = field(default_factory=list)
    masks_checked: int = 0
    skipped: str | None = None

    @property
    def ok(self) -> bool:
        return self.skipped is not None or (
            self.images is not None and self.images.ok and not self.missing_masks)

    def summary(self, first: int = 5) -> str:
        if self.skipped is not None:
            return f"{self.split}: skipped ({self.skipped})"
        assert self.images is not None
        text = f"{self.split}: {self.images.summary(first)}"
        if self.masks_checked:
            if self.missing_masks:
                more = (f", ... (+{len(self.missing_masks) - first} more)"
                        if len(self.missing_masks) > first else "")
                text += (f"; {len(self.missing_masks)} of {self.masks_checked} mask files missing:"
                         f" {', '.join(self.missing_masks[:first])}{more}")
            else:
                text += f"; all {self.masks_checked} mask files present"
        return text

    def problems(self) -> list[tuple[str, str]]:
        """``(kind, path)`` for every problem: kinds ``image``, ``corrupt``, ``size``, ``mask``."""
        if self.images is None:
            return []
        rows = [("image", i) for i in self.images.missing]
        rows += [("corrupt", i) for i, _ in self.images.corrupt]
        rows += [("size", i) for i, _, _ in self.images.size_mismatch]
        rows += [("mask", m) for m in self.missing_masks]
        return rows


def resolve_metadata_root(metadata_root: str | os.PathLike, dataset: str) -> Path:
    """Accept either ``.../metadata`` (holding ``<dataset>/``) or ``.../metadata/<dataset>``."""
    root = Path(metadata_root)
    if not root.is_dir():
        raise PrepareError(f"metadata root {root} is not a directory")
    if (root / dataset).is_dir():
        return root / dataset
    if not any((root / s).is_dir() for s in SPLITS):
        raise PrepareError(f"metadata root {root} holds neither {dataset}/ nor any of "
                           f"{'/, '.join(SPLITS)}/ split directories")
    return root


def check_dataset(image_root: str | os.PathLike, metadata_root: str | os.PathLike,
                  mask_root: str | os.PathLike | None = None,
                  splits: Sequence[str] = SPLITS, decode: bool = False) -> list[SplitCheck]:
    """Check ``image_root`` (and ``mask_root`` for mask-annotated splits) against the split
    directories ``metadata_root/<split>``.

    A split directory that does not exist or has no ``image_ids.txt`` is reported as skipped.
    ``decode=True`` also decodes every image (slow) to find corrupt files.
    """
    image_root = Path(image_root)
    if not image_root.is_dir():
        raise PrepareError(f"image root {image_root} is not a directory")
    if mask_root is not None and not Path(mask_root).is_dir():
        raise PrepareError(f"mask root {mask_root} is not a directory")
    root = Path(metadata_root)
    results = []
    for split in splits:
        split_dir = root / split
        if not split_dir.is_dir():
            results.append(SplitCheck(split, skipped=f"no directory {split_dir}"))
            continue
        if not (split_dir / "image_ids.txt").is_file():
            results.append(SplitCheck(split, skipped=f"{split_dir} has no image_ids.txt "
                                      "(no image list to check against)"))
            continue
        meta = read_metadata(split_dir)
        check = SplitCheck(split, images=check_images(image_root, meta, decode=decode))
        if mask_root is not None and meta.masks is not None:
            for image_id in meta.image_ids:
                entry = meta.masks.get(image_id)
                if entry is None:
                    continue
                for rel in [*entry.mask_paths, *([entry.ignore_path] if entry.ignore_path else [])]:
                    check.masks_checked += 1
                    if not (Path(mask_root) / rel).is_file():
                        check.missing_masks.append(rel)
        results.append(check)
    return results

