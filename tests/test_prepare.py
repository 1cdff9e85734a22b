"""``wsol prepare``: CUB conversion, val carving, ILSVRC/OpenImages checks, synthetic data."""

from __future__ import annotations

import colorsys
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, shared_path
from PIL import Image

from wsol.cli import main
from wsol.data.metadata import Metadata, read_metadata, write_metadata
from wsol.data.prepare import (
    PrepareError,
    carve_val,
    check_dataset,
    cub_box,
    prepare_cub,
    read_cub,
)
from wsol.data.synthetic import PART_SHAPES, class_hue, make_synthetic, render_sample

CUB_SUBSET = ("data", "CUB_200_2011-classes001-010")
OFFICIAL = ("data", "wsolevaluation-metadata", "metadata")
FILES = ("image_ids", "class_labels", "image_sizes", "localization")


def lines(path: Path) -> list[str]:
    return [ln.rstrip("\r\n") for ln in path.read_text().splitlines() if ln.strip()]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "wsol", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


# ------------------------------------------------------------------------- real CUB subset


@pytest.fixture(scope="module")
def cub_prepared(tmp_path_factory):
    """prepare_cub on the shared classes 1-10 subset (decodes the 543 images once)."""
    root = shared_path(*CUB_SUBSET)
    out = tmp_path_factory.mktemp("cub") / "metadata"
    metas = prepare_cub(root, out, val_per_class=5, seed=0)
    return out, metas


def official_lines(split: str, name: str) -> list[str]:
    present = {ln.split()[1] for ln in lines(shared_path(*CUB_SUBSET, "images.txt"))}
    path = shared_path(*OFFICIAL, "CUB", split, f"{name}.txt")
    return [ln for ln in lines(path) if ln.split(",")[0] in present]


def test_cub_test_split_equals_official_lines_in_order(cub_prepared):
    out, _ = cub_prepared
    for name in FILES:
        expected = official_lines("test", name)
        assert len(expected) == 243
        assert lines(out / "test" / f"{name}.txt") == expected, name


def test_cub_train_plus_val_equals_official_train(cub_prepared):
    """train and val partition the official train lines, each keeping the official order."""
    out, _ = cub_prepared
    val_ids = set(lines(out / "val" / "image_ids.txt"))
    for name in FILES:
        expected = official_lines("train", name)
        assert len(expected) == 300
        assert lines(out / "train" / f"{name}.txt") == [
            ln for ln in expected if ln.split(",")[0] not in val_ids], name
        assert lines(out / "val" / f"{name}.txt") == [
            ln for ln in expected if ln.split(",")[0] in val_ids], name


def test_cub_val_is_five_per_class_and_disjoint(cub_prepared):
    out, metas = cub_prepared
    train, val = read_metadata(out / "train"), read_metadata(out / "val")
    assert len(train) == 250 and len(val) == 50
    assert not set(train.image_ids) & set(val.image_ids)
    assert sorted(val.class_labels.values()) == sorted(list(range(10)) * 5)
    assert val.localization_type == "boxes" and train.localization_type == "boxes"
    assert metas["val"].image_ids == val.image_ids


def test_cub_box_clipping_count(cub_prepared):
    """Spec §4: 7 of the 543 images need the W-1 / H-1 clip."""
    records = read_cub(shared_path(*CUB_SUBSET))
    sizes = {}
    for split in ("train", "val", "test"):
        sizes.update(read_metadata(cub_prepared[0] / split).image_sizes)
    clipped = [r for r in records if r.xywh[0] + r.xywh[2] > sizes[r.path][0] - 1
               or r.xywh[1] + r.xywh[3] > sizes[r.path][1] - 1]
    assert len(clipped) == 7


def test_cub_class_names_written_in_label_order(cub_prepared):
    out, metas = cub_prepared
    names = (out / "class_names.txt").read_text().splitlines()
    assert len(names) == 10 == max(m.num_classes for m in metas.values())
    assert names[0] == "Black footed Albatross" and names[9] == "Red winged Blackbird"
    classes = lines(shared_path(*CUB_SUBSET, "classes.txt"))
    assert names[3] == classes[3].split(" ", 1)[1].split(".", 1)[1].replace("_", " ")


def test_cub_display_name_and_bad_classes_file(tmp_path):
    from wsol.data.prepare import cub_display_name, read_cub_class_names

    assert cub_display_name("001.Black_footed_Albatross") == "Black footed Albatross"
    assert cub_display_name("Plain") == "Plain"
    assert read_cub_class_names(tmp_path, 3) is None
    (tmp_path / "classes.txt").write_text("1 001.A\n2 002.B\n")
    assert read_cub_class_names(tmp_path, 2) == ["A", "B"]
    with pytest.raises(PrepareError, match="no name for class id 3"):
        read_cub_class_names(tmp_path, 3)
    (tmp_path / "classes.txt").write_text("1 001.A\nx 002.B\n")
    with pytest.raises(PrepareError, match=r"classes\.txt:2:"):
        read_cub_class_names(tmp_path, 2)


def test_cub_box_formula():
    assert cub_box((60.0, 27.0, 325.0, 304.0), (500, 335)) == (60, 27, 385, 331)
    assert cub_box((2.7, 3.2, 10.0, 5.9), (100, 100)) == (2, 3, 12, 9)
    with pytest.raises(PrepareError, match="outside"):
        cub_box((50.0, 0.0, 1.0, 1.0), (40, 40))


# --------------------------------------------------------------------------------- carving


@pytest.fixture(scope="module")
def official_train_subset() -> Metadata:
    present = [ln.split()[1] for ln in lines(shared_path(*CUB_SUBSET, "images.txt"))]
    train = read_metadata(shared_path(*OFFICIAL, "CUB", "train"))
    keep = set(present)
    return train.subset([i for i in train.image_ids if i in keep])


def test_carve_val_deterministic_and_seed_dependent(official_train_subset):
    a_train, a_val = carve_val(official_train_subset, 5, seed=0)
    b_train, b_val = carve_val(official_train_subset, 5, seed=0)
    _, c_val = carve_val(official_train_subset, 5, seed=1)
    assert a_val.image_ids == b_val.image_ids and a_train.image_ids == b_train.image_ids
    assert set(c_val.image_ids) != set(a_val.image_ids)


def test_carve_val_partitions_train(official_train_subset):
    full = official_train_subset
    for k in (1, 5, 20):
        train, val = carve_val(full, k, seed=3)
        assert len(val) == 10 * k and len(train) == len(full) - 10 * k
        assert not set(train.image_ids) & set(val.image_ids)
        assert set(train.image_ids) | set(val.image_ids) == set(full.image_ids)
        order = {i: n for n, i in enumerate(full.image_ids)}
        assert [order[i] for i in val.image_ids] == sorted(order[i] for i in val.image_ids)
        assert val.boxes == {i: full.boxes[i] for i in val.image_ids}


def test_carve_val_too_few_images(official_train_subset):
    with pytest.raises(ValueError, match="class 0 has only"):
        carve_val(official_train_subset, 40, seed=0)


# ------------------------------------------------------------------------------ fake CUB


def make_fake_cub(root: Path) -> None:
    """2 classes x 3 images; id files longer than images.txt, like the shared subset."""
    sizes = {1: (40, 30), 2: (50, 60), 3: (33, 33), 7: (64, 48), 8: (20, 25), 9: (45, 35)}
    images, labels, split, boxes = [], [], [], []
    for cub_id in range(1, 11):
        cls = 1 if cub_id <= 5 else 2
        labels.append(f"{cub_id} {cls}")
        split.append(f"{cub_id} {cub_id % 2}")
        if cub_id in sizes:
            rel = f"{cls:03d}.Bird_{cls}/Bird_{cub_id:04d}.jpg"
            images.append(f"{cub_id} {rel}")
            (root / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", sizes[cub_id], (cub_id, 2, 3)).save(root / "images" / rel)
            boxes.append(f"{cub_id} 2.7 3.2 {sizes[cub_id][0]:.1f} 5.9")
    for name, rows in (("images", images), ("image_class_labels", labels),
                       ("train_test_split", split), ("bounding_boxes", boxes)):
        (root / f"{name}.txt").write_text("\n".join(rows) + "\n")


def test_prepare_cub_cli_subprocess(tmp_path):
    make_fake_cub(tmp_path / "CUB")
    out = tmp_path / "meta"
    proc = run_cli("prepare", "cub", "--root", str(tmp_path / "CUB"), "--out", str(out),
                   "--val-per-class", "1", "--seed", "0")
    assert proc.returncode == 0, proc.stderr
    assert "train: 2 images" in proc.stdout and "val: 2 images" in proc.stdout
    train, val, test = (read_metadata(out / s) for s in ("train", "val", "test"))
    # is_training_image = id % 2: train ids 1, 3, 7, 9; test ids 2, 8
    assert test.image_ids == ["001.Bird_1/Bird_0002.jpg", "002.Bird_2/Bird_0008.jpg"]
    assert {*train.image_ids, *val.image_ids} == {
        "001.Bird_1/Bird_0001.jpg", "001.Bird_1/Bird_0003.jpg",
        "002.Bird_2/Bird_0007.jpg", "002.Bird_2/Bird_0009.jpg"}
    assert sorted(val.class_labels.values()) == [0, 1]
    # box 2.7 3.2 W 5.9 -> (2, 3, min(floor(2.7 + W), W - 1), floor(9.1)) = (2, 3, W-1, 9)
    assert test.boxes == {"001.Bird_1/Bird_0002.jpg": [(2, 3, 49, 9)],
                          "002.Bird_2/Bird_0008.jpg": [(2, 3, 19, 9)]}
    assert test.image_sizes["002.Bird_2/Bird_0008.jpg"] == (20, 25)
    again = run_cli("prepare", "cub", "--root", str(tmp_path / "CUB"), "--out", str(out))
    assert again.returncode == 2 and "already exists" in again.stderr and "--force" in again.stderr


def test_prepare_cub_force_and_no_val(tmp_path, capsys):
    make_fake_cub(tmp_path / "CUB")
    out = tmp_path / "meta"
    assert main(["prepare", "cub", "--root", str(tmp_path / "CUB"), "--out", str(out),
                 "--val-per-class", "1"]) == 0
    assert main(["prepare", "cub", "--root", str(tmp_path / "CUB"), "--out", str(out),
                 "--val-per-class", "0", "--force"]) == 0
    assert len(read_metadata(out / "train")) == 4
    assert not (out / "val" / "image_ids.txt").exists()


@pytest.mark.parametrize("damage, match", [
    ("missing", r"Bird_0007\.jpg: image file does not exist"),
    ("corrupt", r"Bird_0007\.jpg: cannot decode"),
    ("bad_box", r"bounding_boxes\.txt:4: box values must be numbers"),
    ("no_label", r"image_class_labels\.txt: no line for image id 7"),
])
def test_prepare_cub_bad_input_names_the_file(tmp_path, capsys, damage, match):
    root = tmp_path / "CUB"
    make_fake_cub(root)
    image = root / "images" / "002.Bird_2" / "Bird_0007.jpg"
    if damage == "missing":
        image.unlink()
    elif damage == "corrupt":
        image.write_bytes(image.read_bytes()[:40])
    elif damage == "bad_box":
        text = (root / "bounding_boxes.txt").read_text().replace("7 2.7", "7 abc")
        (root / "bounding_boxes.txt").write_text(text)
    else:
        rows = [r for r in (root / "image_class_labels.txt").read_text().splitlines()
                if not r.startswith("7 ")]
        (root / "image_class_labels.txt").write_text("\n".join(rows) + "\n")
    out = tmp_path / "meta"
    assert main(["prepare", "cub", "--root", str(root), "--out", str(out)]) == 2
    assert re.search(match, capsys.readouterr().err)
    assert not out.exists()  # nothing written


# ------------------------------------------------------------------- ILSVRC / OpenImages


def make_split_dir(path: Path, ids: list[str], masks: dict[str, list[str]] | None = None) -> None:
    from wsol.data.metadata import MaskAnnotation

    meta = Metadata(image_ids=ids, class_labels={i: 0 for i in ids})
    if masks is not None:
        meta.masks = {i: MaskAnnotation(m[:-1], m[-1]) for i, m in masks.items()}
    write_metadata(meta, path)


def test_check_dataset_skips_split_without_image_ids(tmp_path):
    meta_root = tmp_path / "ILSVRC"
    (meta_root / "train").mkdir(parents=True)
    for name in ("image_sizes.txt", "localization.txt"):
        (meta_root / "train" / name).write_text("")
    make_split_dir(meta_root / "val", ["val/a.JPEG", "val/b.JPEG", "val/c.JPEG"])
    images = tmp_path / "images"
    (images / "val").mkdir(parents=True)
    (images / "val" / "b.JPEG").write_bytes(b"")
    checks = check_dataset(images, meta_root)
    by_split = {c.split: c for c in checks}
    assert by_split["train"].skipped is not None and "image_ids.txt" in by_split["train"].skipped
    assert by_split["test"].skipped is not None
    assert by_split["val"].images.missing == ["val/a.JPEG", "val/c.JPEG"]
    assert not by_split["val"].ok and by_split["train"].ok


def test_prepare_openimages_cli_with_masks(tmp_path, capsys):
    meta_root = tmp_path / "metadata"
    make_split_dir(meta_root / "OpenImages" / "test", ["test/x/1.jpg", "test/x/2.jpg"],
                   masks={"test/x/1.jpg": ["test/x/1_m.png", "test/x/1_ignore.png"],
                          "test/x/2.jpg": ["test/x/2_m.png", "test/x/2_m2.png", "test/x/2_i.png"]})
    images, masks = tmp_path / "img", tmp_path / "masks"
    for rel in ("test/x/1.jpg", "test/x/2.jpg"):
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        (images / rel).write_bytes(b"")
    for rel in ("test/x/1_m.png", "test/x/1_ignore.png", "test/x/2_m.png", "test/x/2_i.png"):
        (masks / rel).parent.mkdir(parents=True, exist_ok=True)
        (masks / rel).write_bytes(b"")
    args = ["prepare", "openimages", "--image-root", str(images), "--metadata-root",
            str(meta_root), "--mask-root", str(masks), "--report", str(tmp_path / "r.csv")]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "1 of 5 mask files missing: test/x/2_m2.png" in out
    assert lines(tmp_path / "r.csv") == ["test,mask,test/x/2_m2.png"]
    (masks / "test/x/2_m2.png").write_bytes(b"")
    assert main(args) == 0
    assert lines(tmp_path / "r.csv") == []


def test_prepare_check_nothing_to_check(tmp_path, capsys):
    (tmp_path / "ILSVRC" / "train").mkdir(parents=True)
    assert main(["prepare", "ilsvrc", "--image-root", str(tmp_path), "--metadata-root",
                 str(tmp_path)]) == 2
    assert "nothing to check" in capsys.readouterr().err


def test_prepare_ilsvrc_against_official_metadata(tmp_path, capsys):
    meta_root = shared_path(*OFFICIAL)
    val_ids = lines(meta_root / "ILSVRC" / "val" / "image_ids.txt")
    present = val_ids[:3]
    for rel in present:
        (tmp_path / "img" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "img" / rel).write_bytes(b"")
    report = tmp_path / "missing.csv"
    rc = main(["prepare", "ilsvrc", "--image-root", str(tmp_path / "img"), "--metadata-root",
               str(meta_root), "--splits", "train", "val", "--report", str(report)])
    assert rc == 1
    out = capsys.readouterr().out
    assert "train: skipped" in out
    assert f"val: {len(val_ids) - 3} of {len(val_ids)} missing" in out
    rows = lines(report)
    assert len(rows) == len(val_ids) - 3
    assert rows[0] == f"val,image,{val_ids[3]}"
    assert not {f"val,image,{p}" for p in present} & set(rows)


def test_openimages_official_masks_present_in_shared_test_data(tmp_path):
    """The 11 mask PNGs under test_data/test_masks are found; every other one is reported."""
    meta_root = shared_path(*OFFICIAL, "OpenImages")
    mask_root = shared_path("data", "wsolevaluation-metadata", "test_data", "test_masks")
    on_disk = {p.relative_to(mask_root).as_posix() for p in mask_root.rglob("*.png")}
    (tmp_path / "img").mkdir()
    (check,) = check_dataset(tmp_path / "img", meta_root, mask_root, splits=["val"])
    assert len(on_disk) == 11
    assert check.masks_checked - len(check.missing_masks) == len(on_disk)
    assert not on_disk & set(check.missing_masks)


# ------------------------------------------------------------------------------ synthetic


SMALL = {"num_classes": 3, "train_per_class": 3, "val_per_class": 2, "test_per_class": 3, "image_size": 48}


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_synthetic_same_seed_byte_identical(tmp_path):
    make_synthetic(tmp_path / "a", seed=5, **SMALL)
    make_synthetic(tmp_path / "b", seed=5, **SMALL)
    make_synthetic(tmp_path / "c", seed=6, **SMALL)
    a, b, c = tree(tmp_path / "a"), tree(tmp_path / "b"), tree(tmp_path / "c")
    n_images = 3 * (3 + 2 + 3)
    assert sum(k.startswith("images/") for k in a) == n_images
    assert sum(k.startswith("masks/") for k in a) == 2 * 3 * (2 + 3)
    assert a == b
    assert a.keys() == c.keys()
    assert a["images/train/c00/0000.jpg"] != c["images/train/c00/0000.jpg"]


def test_synthetic_split_sizes_do_not_change_other_images(tmp_path):
    make_synthetic(tmp_path / "a", seed=1, **SMALL)
    make_synthetic(tmp_path / "b", seed=1, **{**SMALL, "test_per_class": 1})
    a, b = tree(tmp_path / "a"), tree(tmp_path / "b")
    assert a["images/train/c02/0002.jpg"] == b["images/train/c02/0002.jpg"]
    assert a["images/test/c01/0000.jpg"] == b["images/test/c01/0000.jpg"]


def test_synthetic_masks_inside_boxes_and_formats(tmp_path):
    out = tmp_path / "syn"
    make_synthetic(out, seed=0, **{**SMALL, "test_per_class": 6})
    boxes = read_metadata(out / "metadata" / "test")
    masks = read_metadata(out / "metadata_masks" / "test", mask_root=out / "masks")
    assert boxes.image_ids == masks.image_ids and len(boxes) == 18
    assert masks.localization_type == "masks" and boxes.localization_type == "boxes"
    shapes = set()
    for image_id in boxes.image_ids:
        w, h = boxes.image_sizes[image_id]
        shapes.add(w == h)
        assert Image.open(out / "images" / image_id).size == (w, h)
        (x0, y0, x1, y1), = boxes.boxes[image_id]
        entry = masks.masks[image_id]
        mask = np.array(Image.open(out / "masks" / entry.mask_paths[0]))
        ignore = np.array(Image.open(out / "masks" / entry.ignore_path))
        assert mask.shape == (h, w) and ignore.shape == (h, w)
        assert set(np.unique(mask)) == {0, 255} and set(np.unique(ignore)) <= {0, 255}
        ys, xs = np.nonzero(mask)
        assert (xs.min(), ys.min(), xs.max(), ys.max()) == (x0, y0, x1, y1)  # tight box
        assert not np.any(ignore & mask)
        assert 0 < x0 and 0 < y0 and x1 < w - 1 and y1 < h - 1  # object fully inside
    assert shapes == {True, False}  # square and non-square images both occur
    train = read_metadata(out / "metadata" / "train")
    assert sorted(set(train.class_labels.values())) == [0, 1, 2]
    assert (out / "classes.txt").read_text().splitlines()[0] == "0,red disk"


def test_synthetic_part_is_small_and_class_coloured_body_is_not():
    """The design: the part (few pixels) carries the class hue; the body is muted."""
    num_classes = 4
    for label in range(num_classes):
        for k in range(5):
            s = render_sample(np.random.default_rng([9, label, k]), label, num_classes, 96)
            assert s.part_mask.sum() < 0.35 * s.object_mask.sum()
            assert np.all(s.object_mask[s.part_mask])
            body = s.object_mask & ~s.part_mask
            part_rgb = s.image[s.part_mask].mean(0) / 255
            body_rgb = s.image[body].mean(0) / 255
            hue, sat, _ = colorsys.rgb_to_hsv(*part_rgb)
            d = abs(hue - class_hue(label, num_classes))
            assert min(d, 1 - d) < 0.05 and sat > 0.6
            assert colorsys.rgb_to_hsv(*body_rgb)[1] < 0.45
    assert len(PART_SHAPES) == 6


def test_synthetic_refuses_overwrite_then_force(tmp_path, capsys):
    out = tmp_path / "syn"
    args = ["prepare", "synthetic", "--out", str(out), "--num-classes", "2",
            "--train-per-class", "2", "--val-per-class", "1", "--test-per-class", "1",
            "--image-size", "40"]
    assert main(args) == 0
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*args[:-2], "--image-size", "48", "--test-per-class", "2", "--force"]) == 0
    assert len(read_metadata(out / "metadata" / "test")) == 4
    assert len(list((out / "images" / "test").rglob("*.jpg"))) == 4  # no stale files


@pytest.mark.parametrize("kwargs, match", [({"num_classes": 1}, "num_classes"),
                                           ({"train_per_class": 0}, "train_per_class"),
                                           ({"image_size": 16}, "image_size"),
                                           ({"seed": -1}, "seed")])
def test_synthetic_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_synthetic(tmp_path / "x", **{**SMALL, **kwargs})


def test_synthetic_writes_class_names(tmp_path):
    make_synthetic(tmp_path / "s", num_classes=3, train_per_class=1, val_per_class=0,
                   test_per_class=1, image_size=32, seed=0)
    names = (tmp_path / "s" / "class_names.txt").read_text().splitlines()
    classes = (tmp_path / "s" / "classes.txt").read_text().splitlines()
    assert len(names) == 3 and names == [c.split(",", 1)[1] for c in classes]
