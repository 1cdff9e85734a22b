"""Reading and writing wsolevaluation metadata (``metadata/<DATASET>/<split>/*.txt``).

One split directory holds four comma-separated text files without header (method-spec §4):

- ``image_ids.txt``: one relative image path per line (defines the order of the split);
- ``class_labels.txt``: ``image_id,label`` with 0-based integer labels;
- ``image_sizes.txt``: ``image_id,W,H`` (may be empty, as for the official OpenImages lists);
- ``localization.txt``: either boxes ``image_id,x0,y0,x1,y1`` (original pixels, inclusive, one
  line per box) or masks ``image_id,mask_path,ignore_path`` (one line per instance; only the
  first line of an image carries the ignore path, later ones end with an empty field).

Every malformed line raises :class:`MetadataError` naming the file and the 1-based line number.

Input safety (checked when the files are read, before any image is opened):

- files are read as UTF-8; a byte-order mark at the start of a file is dropped (it would
  otherwise become an invisible first character of the first image id);
- every image id and every mask / ignore path must be a relative POSIX path that stays inside
  its root: no ``..`` component, no absolute path, drive letter, backslash, NUL or other control
  character (:func:`wsol.utils.paths.check_relative_path`);
- labels are integers ``>= 0``; whether they fit the task's class count, and whether every
  class of val/test has training images, is checked across splits by
  :func:`check_split_labels` (the training pre-flight calls it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from wsol.errors import MetadataError
from wsol.utils.io import atomic_write_text
from wsol.utils.paths import UnsafePathError, check_relative_path

Box = tuple[int, int, int, int]

FILES = ("image_ids.txt", "class_labels.txt", "image_sizes.txt", "localization.txt")


@dataclass
class MaskAnnotation:
    """Mask localization of one image: instance mask paths and an optional ignore-mask path
    (all relative to the mask root)."""

    mask_paths: list[str]
    ignore_path: str | None = None


@dataclass
class Metadata:
    """One split of a wsolevaluation-format dataset.

    ``boxes`` or ``masks`` is set according to the localization file's format (``None`` when
    the split has no ``localization.txt``, as for weakly supervised training splits).
    """

    image_ids: list[str]
    class_labels: dict[str, int]
    image_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    boxes: dict[str, list[Box]] | None = None
    masks: dict[str, MaskAnnotation] | None = None
    split_dir: Path | None = None
    #: 1-based line of each image id in ``class_labels.txt`` (filled by :func:`read_metadata`;
    #: used to name the line of a label rejected by :func:`check_split_labels`).
    label_lines: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def num_classes(self) -> int:
        return max(self.class_labels.values(), default=-1) + 1

    @property
    def localization_type(self) -> str | None:
        """``"boxes"``, ``"masks"`` or ``None``."""
        if self.boxes is not None:
            return "boxes"
        if self.masks is not None:
            return "masks"
        return None

    def subset(self, image_ids: list[str]) -> Metadata:
        """A new Metadata restricted to ``image_ids`` (in that order)."""
        unknown = [i for i in image_ids if i not in self.class_labels]
        if unknown:
            raise MetadataError(f"subset: unknown image id {unknown[0]!r}")
        keep = set(image_ids)
        return Metadata(
            image_ids=list(image_ids),
            class_labels={i: self.class_labels[i] for i in image_ids},
            image_sizes={i: s for i, s in self.image_sizes.items() if i in keep},
            boxes=None if self.boxes is None else {i: self.boxes[i] for i in image_ids if i in self.boxes},
            masks=None if self.masks is None else {i: self.masks[i] for i in image_ids if i in self.masks},
            split_dir=self.split_dir,
            label_lines={i: n for i, n in self.label_lines.items() if i in keep},
        )


def _lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Yield (1-based line number, fields) for each non-empty line of ``path``."""
    # utf-8-sig drops a byte-order mark at the start of the file (and only there).
    with open(path, encoding="utf-8-sig") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            yield lineno, [x.strip() for x in line.split(",")]


def _int(value: str, path: Path, lineno: int, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise MetadataError(f"{path}:{lineno}: {what} must be an integer, got {value!r}") from None


def _expect_fields(fields: list[str], n: int, path: Path, lineno: int, form: str) -> None:
    if len(fields) != n or not fields[0]:
        raise MetadataError(
            f"{path}:{lineno}: expected {n} comma-separated fields ({form}), got {','.join(fields)!r}"
        )


def _check_path(value: str, path: Path, lineno: int, what: str) -> None:
    """Refuse an id / mask path that could leave its root (see the module docstring)."""
    try:
        check_relative_path(value, what)
    except UnsafePathError as exc:
        raise MetadataError(f"{path}:{lineno}: {exc}") from None


def read_image_ids(path: Path) -> list[str]:
    ids: list[str] = []
    seen: dict[str, int] = {}
    for lineno, fields in _lines(path):
        _expect_fields(fields, 1, path, lineno, "image_id")
        image_id = fields[0]
        _check_path(image_id, path, lineno, "image id")
        if image_id in seen:
            raise MetadataError(
                f"{path}:{lineno}: duplicate image id {image_id!r} (first on line {seen[image_id]})"
            )
        seen[image_id] = lineno
        ids.append(image_id)
    return ids


def _check_known(image_id: str, known: set[str], path: Path, lineno: int) -> None:
    if image_id not in known:
        raise MetadataError(f"{path}:{lineno}: unknown image id {image_id!r} (not in image_ids.txt)")


def read_metadata(
    split_dir: str | os.PathLike, mask_root: str | os.PathLike | None = None
) -> Metadata:
    """Read and validate one split directory.

    Args:
        split_dir: directory holding the four metadata files.
        mask_root: if given and the localization is masks, every mask and ignore file must
            exist under it (a missing one raises :class:`MetadataError`).
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise MetadataError(f"{split_dir}: metadata split directory does not exist")
    ids_path = split_dir / "image_ids.txt"
    if not ids_path.is_file():
        raise MetadataError(f"{ids_path}: missing (every split needs image_ids.txt)")
    image_ids = read_image_ids(ids_path)
    known = set(image_ids)

    labels_path = split_dir / "class_labels.txt"
    class_labels: dict[str, int] = {}
    label_lines: dict[str, int] = {}
    if not labels_path.is_file():
        raise MetadataError(f"{labels_path}: missing")
    for lineno, fields in _lines(labels_path):
        _expect_fields(fields, 2, labels_path, lineno, "image_id,label")
        image_id = fields[0]
        _check_known(image_id, known, labels_path, lineno)
        if image_id in class_labels:
            raise MetadataError(f"{labels_path}:{lineno}: duplicate image id {image_id!r}")
        label = _int(fields[1], labels_path, lineno, "class label")
        if label < 0:
            raise MetadataError(f"{labels_path}:{lineno}: class label must be >= 0, got {label}")
        class_labels[image_id] = label
        label_lines[image_id] = lineno
    missing = [i for i in image_ids if i not in class_labels]
    if missing:
        raise MetadataError(f"{labels_path}: no class label for image id {missing[0]!r}"
                            f" ({len(missing)} image(s) without a label)")

    sizes_path = split_dir / "image_sizes.txt"
    image_sizes: dict[str, tuple[int, int]] = {}
    if sizes_path.is_file():
        for lineno, fields in _lines(sizes_path):
            _expect_fields(fields, 3, sizes_path, lineno, "image_id,W,H")
            image_id = fields[0]
            _check_known(image_id, known, sizes_path, lineno)
            if image_id in image_sizes:
                raise MetadataError(f"{sizes_path}:{lineno}: duplicate image id {image_id!r}")
            w = _int(fields[1], sizes_path, lineno, "width")
            h = _int(fields[2], sizes_path, lineno, "height")
            if w <= 0 or h <= 0:
                raise MetadataError(f"{sizes_path}:{lineno}: image size must be positive, got {w}x{h}")
            image_sizes[image_id] = (w, h)

    meta = Metadata(image_ids=image_ids, class_labels=class_labels, image_sizes=image_sizes,
                    split_dir=split_dir, label_lines=label_lines)
    loc_path = split_dir / "localization.txt"
    if loc_path.is_file() and loc_path.stat().st_size > 0:
        _read_localization(meta, loc_path, known, mask_root)
    return meta


def _read_localization(meta: Metadata, path: Path, known: set[str],
                       mask_root: str | os.PathLike | None) -> None:
    boxes: dict[str, list[Box]] = {}
    masks: dict[str, MaskAnnotation] = {}
    kind: str | None = None
    for lineno, fields in _lines(path):
        if kind is None:
            # The first line fixes the format by its field count (a box line with a bad
            # coordinate is still a box line, reported as such below).
            if len(fields) not in (3, 5):
                raise MetadataError(
                    f"{path}:{lineno}: expected a box line image_id,x0,y0,x1,y1 or a mask line"
                    f" image_id,mask_path,ignore_path, got {','.join(fields)!r}")
            kind = "boxes" if len(fields) == 5 else "masks"
        image_id = fields[0]
        if kind == "boxes":
            _expect_fields(fields, 5, path, lineno, "image_id,x0,y0,x1,y1")
            _check_known(image_id, known, path, lineno)
            x0, y0, x1, y1 = (_int(v, path, lineno, "box coordinate") for v in fields[1:])
            if x1 < x0 or y1 < y0:
                raise MetadataError(
                    f"{path}:{lineno}: box ({x0},{y0},{x1},{y1}) has x1<x0 or y1<y0")
            if x0 < 0 or y0 < 0:
                raise MetadataError(f"{path}:{lineno}: box ({x0},{y0},{x1},{y1}) is outside the image")
            size = meta.image_sizes.get(image_id)
            if size is not None and (x1 > size[0] - 1 or y1 > size[1] - 1):
                raise MetadataError(
                    f"{path}:{lineno}: box ({x0},{y0},{x1},{y1}) is outside the image "
                    f"of size {size[0]}x{size[1]} (inclusive coordinates must be <= W-1, H-1)")
            boxes.setdefault(image_id, []).append((x0, y0, x1, y1))
        else:
            _expect_fields(fields, 3, path, lineno, "image_id,mask_path,ignore_path")
            _check_known(image_id, known, path, lineno)
            if not fields[1]:
                raise MetadataError(f"{path}:{lineno}: empty mask path")
            _check_path(fields[1], path, lineno, "mask path")
            if fields[2]:
                _check_path(fields[2], path, lineno, "ignore-mask path")
            entry = masks.get(image_id)
            if entry is None:
                masks[image_id] = MaskAnnotation([fields[1]], fields[2] or None)
            else:
                entry.mask_paths.append(fields[1])
                if fields[2]:
                    if entry.ignore_path is not None and entry.ignore_path != fields[2]:
                        raise MetadataError(
                            f"{path}:{lineno}: second ignore path for image id {image_id!r}")
                    entry.ignore_path = fields[2]
            if mask_root is not None:
                for rel in (fields[1], fields[2]):
                    if rel and not (Path(mask_root) / rel).is_file():
                        raise MetadataError(
                            f"{path}:{lineno}: mask file {Path(mask_root) / rel} does not exist")
    if kind == "boxes":
        meta.boxes = boxes
    elif kind == "masks":
        meta.masks = masks


def _label_where(meta: Metadata, image_id: str) -> str:
    """``<split>/class_labels.txt:<line>`` of ``image_id`` when known, else the split's name."""
    if meta.split_dir is not None:
        where = str(meta.split_dir / "class_labels.txt")
        line = meta.label_lines.get(image_id)
        return f"{where}:{line}" if line is not None else where
    return "class labels"


def check_labels(meta: Metadata, num_classes: int, name: str = "split") -> None:
    """Every label of ``meta`` must lie in ``[0, num_classes)``.

    Raises :class:`MetadataError` naming ``class_labels.txt`` and the line of the first label
    outside the range (in split order), and how many labels are outside it.
    """
    if num_classes <= 0:
        raise MetadataError(f"{name}: num_classes must be positive, got {num_classes}")
    bad = [i for i in meta.image_ids if not 0 <= meta.class_labels[i] < num_classes]
    if bad:
        first = bad[0]
        raise MetadataError(
            f"{_label_where(meta, first)}: {name} label {meta.class_labels[first]} of image id "
            f"{first!r} is outside [0, {num_classes}) (the task has {num_classes} classes; "
            f"{len(bad)} label(s) of {name} are outside)")


def check_split_labels(train: Metadata, other: Metadata, other_name: str,
                       num_classes: int) -> None:
    """Pre-flight check of the labels of an evaluation split against the training split.

    1. every label of ``train`` and of ``other`` lies in ``[0, num_classes)``
       (:func:`check_labels`);
    2. every class that occurs in ``other`` occurs in ``train`` (a class without training
       images cannot be learnt, and its evaluation is meaningless).

    Raises :class:`MetadataError` naming the file and line of the first offending label.
    """
    check_labels(train, num_classes, "train")
    check_labels(other, num_classes, other_name)
    seen = set(train.class_labels.values())
    unseen = [i for i in other.image_ids if other.class_labels[i] not in seen]
    if unseen:
        first = unseen[0]
        classes = sorted({other.class_labels[i] for i in unseen})
        train_where = (str(train.split_dir / "class_labels.txt") if train.split_dir is not None
                       else "the training split")
        raise MetadataError(
            f"{_label_where(other, first)}: {other_name} image id {first!r} has class "
            f"{other.class_labels[first]}, which has no image in {train_where} (classes "
            f"missing from train: {', '.join(map(str, classes))}; {len(unseen)} {other_name} "
            "image(s) affected)")


def write_metadata(meta: Metadata, split_dir: str | os.PathLike) -> Path:
    """Write ``meta`` to ``split_dir`` in the wsolevaluation format (each file atomically)."""
    split_dir = Path(split_dir)
    split_dir.mkdir(parents=True, exist_ok=True)
    ids = meta.image_ids
    atomic_write_text(split_dir / "image_ids.txt", "".join(f"{i}\n" for i in ids))
    atomic_write_text(split_dir / "class_labels.txt",
                      "".join(f"{i},{meta.class_labels[i]}\n" for i in ids))
    atomic_write_text(split_dir / "image_sizes.txt",
                      "".join(f"{i},{meta.image_sizes[i][0]},{meta.image_sizes[i][1]}\n"
                              for i in ids if i in meta.image_sizes))
    lines: list[str] = []
    if meta.boxes is not None:
        for i in ids:
            for x0, y0, x1, y1 in meta.boxes.get(i, []):
                lines.append(f"{i},{x0},{y0},{x1},{y1}\n")
    elif meta.masks is not None:
        for i in ids:
            entry = meta.masks.get(i)
            if entry is None:
                continue
            for k, mask_path in enumerate(entry.mask_paths):
                ignore = (entry.ignore_path or "") if k == 0 else ""
                lines.append(f"{i},{mask_path},{ignore}\n")
    if lines or meta.localization_type is not None:
        atomic_write_text(split_dir / "localization.txt", "".join(lines))
    return split_dir
