"""wsolevaluation metadata I/O: malformed input names file and line, round trips, official lists."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsol.data.metadata import (
    MaskAnnotation,
    Metadata,
    MetadataError,
    read_metadata,
    write_metadata,
)

IDS = ["a/1.jpg", "a/2.jpg", "b/3.jpg"]
GOOD = {
    "image_ids.txt": "a/1.jpg\na/2.jpg\nb/3.jpg\n",
    "class_labels.txt": "a/1.jpg,0\na/2.jpg,0\nb/3.jpg,1\n",
    "image_sizes.txt": "a/1.jpg,100,50\na/2.jpg,20,30\nb/3.jpg,64,64\n",
    "localization.txt": "a/1.jpg,0,0,99,49\na/1.jpg,10,5,20,6\na/2.jpg,1,2,19,29\nb/3.jpg,5,5,6,6",
}


def _split(tmp_path: Path, **overrides: str) -> Path:
    split = tmp_path / "split"
    split.mkdir(exist_ok=True)
    for name, text in {**GOOD, **overrides}.items():
        (split / name).write_text(text)
    return split


def _raises_at(split: Path, filename: str, lineno: int, match: str) -> None:
    with pytest.raises(MetadataError) as info:
        read_metadata(split)
    message = str(info.value)
    assert f"{split / filename}:{lineno}:" in message, message
    assert match in message, message


def test_good_split_reads(tmp_path):
    meta = read_metadata(_split(tmp_path))
    assert meta.image_ids == IDS
    assert meta.class_labels == {"a/1.jpg": 0, "a/2.jpg": 0, "b/3.jpg": 1}
    assert meta.num_classes == 2
    assert meta.image_sizes["a/1.jpg"] == (100, 50)
    assert meta.localization_type == "boxes"
    assert meta.boxes["a/1.jpg"] == [(0, 0, 99, 49), (10, 5, 20, 6)]  # last line without newline


@pytest.mark.parametrize("filename,text,lineno,match", [
    ("image_ids.txt", "a/1.jpg\na/2.jpg,extra\nb/3.jpg\n", 2, "expected 1 comma-separated field"),
    ("class_labels.txt", "a/1.jpg,0\na/2.jpg\nb/3.jpg,1\n", 2, "expected 2 comma-separated fields"),
    ("image_sizes.txt", "a/1.jpg,100,50\na/2.jpg,20\nb/3.jpg,64,64\n", 2, "expected 3"),
    ("localization.txt", "a/1.jpg,0,0,99,49\na/2.jpg,1,2,19\n", 2, "expected 5"),
    ("localization.txt", "a/1.jpg,0,0,99\n", 1, "expected a box line"),
    ("localization.txt", "a/1.jpg,m.png,i.png\na/2.jpg,m.png\n", 2, "expected 3"),
])
def test_bad_line(tmp_path, filename, text, lineno, match):
    _raises_at(_split(tmp_path, **{filename: text}), filename, lineno, match)


@pytest.mark.parametrize("filename,text,lineno,match", [
    ("class_labels.txt", "a/1.jpg,0\na/2.jpg,cat\nb/3.jpg,1\n", 2,
     "class label must be an integer, got 'cat'"),
    ("class_labels.txt", "a/1.jpg,0\na/2.jpg,1.5\nb/3.jpg,1\n", 2, "must be an integer"),
    ("class_labels.txt", "a/1.jpg,0\na/2.jpg,-1\nb/3.jpg,1\n", 2, "must be >= 0"),
    ("image_sizes.txt", "a/1.jpg,100,50\na/2.jpg,20,x\nb/3.jpg,64,64\n", 2,
     "height must be an integer"),
    # A bad coordinate on the first line is still reported as a box coordinate.
    ("localization.txt", "a/1.jpg,0,0,9.5,49\n", 1, "box coordinate must be an integer"),
])
def test_non_integer(tmp_path, filename, text, lineno, match):
    _raises_at(_split(tmp_path, **{filename: text}), filename, lineno, match)


@pytest.mark.parametrize("box,lineno", [
    ("a/2.jpg,1,2,20,29", 2),   # x1 = W = 20: inclusive coordinates end at W - 1
    ("a/2.jpg,1,2,19,30", 2),   # y1 = H
    ("a/2.jpg,-1,2,19,29", 2),  # negative
])
def test_box_outside_the_image(tmp_path, box, lineno):
    text = f"a/1.jpg,0,0,99,49\n{box}\n"
    split = _split(tmp_path, **{"localization.txt": text})
    _raises_at(split, "localization.txt", lineno, "outside the image")


def test_box_with_x1_before_x0(tmp_path):
    text = "a/1.jpg,0,0,99,49\nb/3.jpg,1,1,1,1\nb/3.jpg,9,2,8,5\n"
    _raises_at(_split(tmp_path, **{"localization.txt": text}), "localization.txt", 3, "x1<x0")


@pytest.mark.parametrize("filename,text,lineno", [
    ("class_labels.txt", "a/1.jpg,0\na/2.jpg,0\nb/3.jpg,1\nc/4.jpg,1\n", 4),
    ("image_sizes.txt", "zzz.jpg,1,1\n", 1),
    ("localization.txt", "a/1.jpg,0,0,9,9\nnot/there.jpg,0,0,9,9\n", 2),
])
def test_unknown_image_id(tmp_path, filename, text, lineno):
    _raises_at(_split(tmp_path, **{filename: text}), filename, lineno, "unknown image id")


@pytest.mark.parametrize("filename,text,lineno", [
    ("image_ids.txt", "a/1.jpg\na/2.jpg\nb/3.jpg\na/2.jpg\n", 4),
    ("class_labels.txt", "a/1.jpg,0\na/2.jpg,0\nb/3.jpg,1\na/1.jpg,0\n", 4),
    ("image_sizes.txt", "a/1.jpg,100,50\na/1.jpg,100,50\n", 2),
])
def test_duplicate_id(tmp_path, filename, text, lineno):
    _raises_at(_split(tmp_path, **{filename: text}), filename, lineno, "duplicate image id")


def test_missing_label_and_missing_file(tmp_path):
    split = _split(tmp_path, **{"class_labels.txt": "a/1.jpg,0\nb/3.jpg,1\n"})
    with pytest.raises(MetadataError, match="no class label for image id 'a/2.jpg'"):
        read_metadata(split)
    (split / "image_ids.txt").unlink()
    with pytest.raises(MetadataError, match="image_ids.txt: missing"):
        read_metadata(split)
    with pytest.raises(MetadataError, match="does not exist"):
        read_metadata(tmp_path / "nowhere")


MASKS = ("a/1.jpg,m/1_0.png,m/1_ignore.png\na/1.jpg,m/1_1.png,\n"
         "a/2.jpg,m/2_0.png,m/2_ignore.png\nb/3.jpg,m/3_0.png,\n")


def test_masks_and_missing_mask_file(tmp_path):
    split = _split(tmp_path, **{"localization.txt": MASKS, "image_sizes.txt": ""})
    meta = read_metadata(split)
    assert meta.localization_type == "masks"
    assert meta.masks["a/1.jpg"] == MaskAnnotation(["m/1_0.png", "m/1_1.png"], "m/1_ignore.png")
    assert meta.masks["b/3.jpg"].ignore_path is None
    root = tmp_path / "maskroot"
    for rel in ("m/1_0.png", "m/1_1.png", "m/1_ignore.png", "m/2_0.png", "m/2_ignore.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    with pytest.raises(MetadataError) as info:  # m/3_0.png is missing
        read_metadata(split, mask_root=root)
    assert f"{split / 'localization.txt'}:4:" in str(info.value)
    assert "m/3_0.png does not exist" in str(info.value)
    (root / "m/3_0.png").write_bytes(b"")
    assert read_metadata(split, mask_root=root).masks == meta.masks


def test_round_trip_boxes(tmp_path):
    meta = read_metadata(_split(tmp_path))
    out = write_metadata(meta, tmp_path / "copy")
    again = read_metadata(out)
    assert (again.image_ids, again.class_labels, again.image_sizes, again.boxes) == (
        meta.image_ids, meta.class_labels, meta.image_sizes, meta.boxes)


def test_round_trip_masks_and_unlocalized(tmp_path):
    meta = Metadata(image_ids=IDS, class_labels={"a/1.jpg": 3, "a/2.jpg": 0, "b/3.jpg": 7},
                    masks={"a/1.jpg": MaskAnnotation(["x/1.png", "x/2.png"], "x/ign.png"),
                           "b/3.jpg": MaskAnnotation(["y/1.png"], None)})
    again = read_metadata(write_metadata(meta, tmp_path / "m"))
    assert (again.image_ids, again.class_labels, again.masks) == (
        meta.image_ids, meta.class_labels, meta.masks)
    weak = Metadata(image_ids=IDS[:2], class_labels={"a/1.jpg": 0, "a/2.jpg": 1})
    again = read_metadata(write_metadata(weak, tmp_path / "w"))
    assert again.localization_type is None and again.class_labels == weak.class_labels


@pytest.mark.parametrize("split,kind,n_images,n_classes", [
    ("CUB/test", "boxes", 5794, 200),
    ("CUB/val", "boxes", 1000, 200),
    ("CUB/train", "boxes", 5994, 200),
    ("ILSVRC/val", "boxes", 10000, 1000),
    ("OpenImages/val", "masks", 2500, 100),
    ("OpenImages/test", "masks", 5000, 100),
    ("OpenImages/train", None, 29819, 100),
])
def test_official_lists_read(shared, split, kind, n_images, n_classes):
    meta = read_metadata(shared("data", "wsolevaluation-metadata", "metadata", *split.split("/")))
    assert (meta.localization_type, len(meta), meta.num_classes) == (kind, n_images, n_classes)
    if kind == "boxes":
        assert set(meta.boxes) == set(meta.image_ids)
        assert set(meta.image_sizes) == set(meta.image_ids)
    if kind == "masks":
        assert all(entry.mask_paths for entry in meta.masks.values())


def test_official_cub_box_line(shared):
    # method-spec §4: CUB `60 27 325 304` (x y w h) -> `60,27,385,331`.
    meta = read_metadata(shared("data", "wsolevaluation-metadata", "metadata", "CUB", "test"))
    image_id = "001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg"
    assert meta.boxes[image_id] == [(60, 27, 385, 331)]
