"""A folder of class subfolders (+ an optional boxes file) -> wsolevaluation metadata.

``wsol prepare folder --root DIR [--boxes FILE] --out DIR`` is the shortest way to train on your
own images. Input layout::

    <root>/<class name>/<image>          one subfolder per class; images may also sit deeper
    <root>/<class name>/<sub>/<image>    (<class name>/<sub>/...); any of .jpg .jpeg .png .bmp
                                         .tif .tiff .webp (case-insensitive); other files and
                                         hidden entries (names starting with '.') are ignored

    boxes file (optional, CSV)           relative_path,x0,y0,x1,y1   one line per box, the
                                         path relative to <root> (class folder included),
                                         0-based inclusive pixel coordinates as in
                                         wsolevaluation (x1 <= W - 1); several lines per image
                                         = several boxes; an optional header line is skipped

Classes are the subfolder names sorted (Python string order): label ``k`` = the ``k``-th name;
``<out>/class_names.txt`` lists them in that order. Image ids are the paths relative to
``<root>`` (``<class>/<file>``, so two ``0007.jpg`` of different classes stay distinct).

Splits: every image starts in ``train``; then, class by class in label order, ``val_per_class``
images (default 5) and then ``test_per_class`` images (default 0) are moved out, drawn with
``random.Random(seed).sample`` from the class's candidates in id order. With a boxes file only
images that have a box are candidates (val/test need boxes to measure localization), and the
class must keep at least one training image. ``train`` keeps its boxes too (unused by training).

Output under ``--out`` (a metadata root; train with ``data.root=<root> data.metadata=<out>
data.class_names=<out>/class_names.txt``)::

    train/ val/ test/      wsolevaluation split directories (empty splits are not written)
    class_names.txt        one class name per line, in label order

Every image is decoded (sizes; a corrupt file names itself) and every box checked against its
image before anything is written.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from wsol.data.metadata import FILES, Box, Metadata, write_metadata
from wsol.data.prepare import _image_sizes, _refuse_overwrite, write_class_names
from wsol.errors import PrepareError
from wsol.utils.paths import UnsafePathError, check_relative_path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def scan_folder(root: str | os.PathLike) -> tuple[list[str], list[tuple[str, int]]]:
    """``(class names, [(image id, label)])`` of a class-subfolder tree (ids sorted per class)."""
    root = Path(root)
    if not root.is_dir():
        raise PrepareError(f"--root {root} is not a directory")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise PrepareError(f"--root {root} has no class subfolders")
    images: list[tuple[str, int]] = []
    for label, name in enumerate(classes):
        if "\n" in name or "\r" in name:
            raise PrepareError(f"class folder {name!r} contains a line break")
        found = []
        for dirpath, dirnames, filenames in os.walk(root / name, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fname in filenames:
                if fname.startswith(".") or Path(fname).suffix.lower() not in IMAGE_EXTENSIONS:
                    continue
                rel = (Path(dirpath) / fname).relative_to(root).as_posix()
                if "," in rel:
                    raise PrepareError(f"{root / rel}: image path contains a comma, which the "
                                       "comma-separated metadata cannot hold")
                found.append(rel)
        if not found:
            raise PrepareError(f"class folder {root / name} holds no image "
                               f"({', '.join(IMAGE_EXTENSIONS)})")
        images += [(rel, label) for rel in sorted(found)]
    return classes, images


def read_boxes_csv(path: str | os.PathLike, known: set[str]) -> dict[str, list[Box]]:
    """Boxes by image id from ``relative_path,x0,y0,x1,y1`` lines (errors name file:line)."""
    path = Path(path)
    if not path.is_file():
        raise PrepareError(f"--boxes {path} does not exist")
    boxes: dict[str, list[Box]] = {}
    with open(path, encoding="utf-8-sig") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line:
                continue
            fields = [x.strip() for x in line.split(",")]
            if len(fields) != 5:
                raise PrepareError(f"{path}:{lineno}: expected relative_path,x0,y0,x1,y1, got "
                                   f"{line!r}")
            try:
                x0, y0, x1, y1 = (int(v) for v in fields[1:])
            except ValueError:
                if lineno == 1 and fields[0] not in known:
                    continue  # a header line (e.g. relative_path,x0,y0,x1,y1)
                raise PrepareError(f"{path}:{lineno}: box coordinates must be integers, got "
                                   f"{','.join(fields[1:])!r}") from None
            rel = fields[0]
            try:
                check_relative_path(rel, "image path")
            except UnsafePathError as exc:
                raise PrepareError(f"{path}:{lineno}: {exc}") from None
            if rel not in known:
                raise PrepareError(f"{path}:{lineno}: {rel!r} is not an image of the class "
                                   "folders (paths are relative to --root, class folder "
                                   "included)")
            if x0 < 0 or y0 < 0 or x1 < x0 or y1 < y0:
                raise PrepareError(f"{path}:{lineno}: box ({x0},{y0},{x1},{y1}) needs "
                                   "0 <= x0 <= x1 and 0 <= y0 <= y1")
            boxes.setdefault(rel, []).append((x0, y0, x1, y1))
    return boxes


def prepare_folder(root: str | os.PathLike, out: str | os.PathLike, *,
                   boxes: str | os.PathLike | None = None, val_per_class: int = 5,
                   test_per_class: int = 0, seed: int = 0, force: bool = False,
                   workers: int = 1) -> dict[str, Metadata]:
    """Write ``<out>/{train,val,test}`` and ``class_names.txt`` (see the module docstring)."""
    root, out = Path(root), Path(out)
    if val_per_class < 0 or test_per_class < 0:
        raise PrepareError("--val-per-class and --test-per-class must be >= 0")
    classes, images = scan_folder(root)
    ids = [i for i, _ in images]
    labels = dict(images)
    box_map = read_boxes_csv(boxes, set(ids)) if boxes is not None else None
    _refuse_overwrite(out, ("train", "val", "test"), force)
    sizes = dict(zip(ids, _image_sizes(root, ids, workers)))
    if box_map is not None:
        for image_id, bs in box_map.items():
            w, h = sizes[image_id]
            for b in bs:
                if b[2] > w - 1 or b[3] > h - 1:
                    raise PrepareError(f"{boxes}: box {b} of {image_id} is outside the image "
                                       f"of size {w}x{h} (inclusive coordinates, <= W-1, H-1)")

    rng = random.Random(seed)
    moved: dict[str, set[str]] = {"val": set(), "test": set()}
    for label, name in enumerate(classes):
        members = [i for i in ids if labels[i] == label]
        candidates = [i for i in members if box_map is None or i in box_map]
        need = val_per_class + test_per_class
        if need and (len(candidates) < need or len(members) <= need):
            raise PrepareError(
                f"class {name!r} has {len(members)} image(s)"
                + (f", {len(candidates)} with a box" if box_map is not None else "")
                + f"; cannot move {val_per_class} to val and {test_per_class} to test and keep "
                "one for training")
        val = rng.sample(candidates, val_per_class)
        rest = [i for i in candidates if i not in set(val)]
        moved["val"].update(val)
        moved["test"].update(rng.sample(rest, test_per_class))

    result: dict[str, Metadata] = {}
    for split in ("train", "val", "test"):
        if split == "train":
            split_ids = [i for i in ids if i not in moved["val"] and i not in moved["test"]]
        else:
            split_ids = [i for i in ids if i in moved[split]]
        if not split_ids:
            continue
        result[split] = Metadata(
            image_ids=split_ids, class_labels={i: labels[i] for i in split_ids},
            image_sizes={i: sizes[i] for i in split_ids},
            boxes=None if box_map is None else {i: box_map[i] for i in split_ids if i in box_map})
    for split, meta in result.items():
        write_metadata(meta, out / split)
    for split in ("val", "test"):
        if split not in result and (out / split).is_dir():
            for f in FILES:  # with --force, do not leave a stale split of an earlier run
                (out / split / f).unlink(missing_ok=True)
    write_class_names(out / "class_names.txt", classes)
    return result


__all__ = ["IMAGE_EXTENSIONS", "prepare_folder", "read_boxes_csv", "scan_folder"]
