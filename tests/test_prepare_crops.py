"""``wsol prepare crops``: geometry, determinism, layouts, the real CUB subset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, shared_path
from PIL import Image

from wsol.data.crops import image_rng, plan_crop, prepare_crops
from wsol.data.metadata import read_metadata
from wsol.data.prepare import prepare_cub
from wsol.errors import PrepareError

CUB_SUBSET = ("data", "CUB_200_2011-classes001-010")


def area(box):
    return (box[2] - box[0] + 1) * (box[3] - box[1] + 1)


# ---------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("seed", range(40))
def test_plan_crop_contains_the_box_and_hits_the_cover(seed):
    rng = np.random.default_rng(seed)
    width, height = int(rng.integers(50, 600)), int(rng.integers(50, 600))
    x0, y0 = int(rng.integers(0, width - 10)), int(rng.integers(0, height - 10))
    x1, y1 = int(rng.integers(x0, width)), int(rng.integers(y0, height))
    crop = plan_crop((width, height), [(x0, y0, x1, y1)], rng, 0.4, 1.0)
    cx0, cy0, cx1, cy1 = crop.window
    assert 0 <= cx0 <= x0 and 0 <= cy0 <= y0 and x1 <= cx1 <= width - 1 and y1 <= cy1 <= height - 1
    assert crop.size == (cx1 - cx0 + 1, cy1 - cy0 + 1)
    # The moved box is the same box, in crop coordinates.
    assert crop.boxes == [(x0 - cx0, y0 - cy0, x1 - cx0, y1 - cy0)]
    assert crop.cover == pytest.approx(area((x0, y0, x1, y1)) / (crop.size[0] * crop.size[1]))
    assert 0.4 <= crop.target_cover <= 1.0
    assert crop.cover >= crop.target_cover - 1e-12  # rounding only ever raises the cover
    if not crop.clipped:  # and then by little: one pixel row/column at most per side
        assert area((x0, y0, x1, y1)) / ((crop.size[0] + 1) * (crop.size[1] + 1)) \
            <= crop.target_cover


def test_plan_crop_small_image_gives_the_whole_image_and_says_so():
    rng = np.random.default_rng(0)
    crop = plan_crop((100, 80), [(5, 5, 94, 74)], rng, 0.4, 0.4)  # box = 79 % of the image
    assert crop.window == (0, 0, 99, 79)
    assert crop.clipped and crop.cover == pytest.approx(90 * 70 / 8000)


def test_plan_crop_one_side_clipped_grows_the_other():
    rng = np.random.default_rng(0)
    # A wide box spanning the whole width: the width cannot grow, so the height takes it all.
    crop = plan_crop((200, 400), [(0, 100, 199, 149)], rng, 0.5, 0.5)
    assert crop.size[0] == 200
    assert crop.size[1] == 100  # 200*50 / 0.5 = 20000 px = 200 x 100
    assert not crop.clipped and crop.cover == pytest.approx(0.5)


def test_plan_crop_union_and_first():
    boxes = [(10, 10, 19, 19), (60, 60, 69, 69)]
    union = plan_crop((200, 200), boxes, image_rng(0, "a"), 1.0, 1.0, "union")
    assert union.window == (10, 10, 69, 69) and union.boxes == [(0, 0, 9, 9), (50, 50, 59, 59)]
    first = plan_crop((200, 200), boxes, image_rng(0, "a"), 1.0, 1.0, "first")
    assert first.window == (10, 10, 19, 19) and first.boxes == [(0, 0, 9, 9)]


def test_margin_split_varies_between_sides():
    lefts = set()
    for k in range(30):
        crop = plan_crop((1000, 1000), [(400, 400, 499, 499)], image_rng(k, "x"), 0.5, 0.5)
        lefts.add(400 - crop.window[0])
    assert len(lefts) > 10  # not always centred


# ------------------------------------------------------------------------------ synthetic


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "data"
    run_cli("prepare", "synthetic", "--out", str(out), "--num-classes", "2",
            "--train-per-class", "4", "--val-per-class", "2", "--test-per-class", "3",
            "--image-size", "96", "--seed", "3")
    (out / "class_names.txt").write_text("red disk\ngreen square\n")
    return out


def test_crops_cli_on_synthetic_deterministic(tiny, tmp_path):
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        proc = run_cli("prepare", "crops", "--from", str(tiny), "--out", str(out),
                       "--seed", "5")
        assert "box cover min" in proc.stdout
        outs.append(out)
    for split in ("train", "val", "test"):
        for f in ("image_ids", "class_labels", "image_sizes", "localization"):
            a = (outs[0] / "metadata" / split / f"{f}.txt").read_bytes()
            assert a == (outs[1] / "metadata" / split / f"{f}.txt").read_bytes()
    assert (outs[0] / "crops.csv").read_bytes() == (outs[1] / "crops.csv").read_bytes()
    img = "test/c01/0002.jpg"
    assert (outs[0] / "images" / img).read_bytes() == (outs[1] / "images" / img).read_bytes()
    assert (outs[0] / "class_names.txt").read_text() == "red disk\ngreen square\n"
    other = tmp_path / "c"
    run_cli("prepare", "crops", "--from", str(tiny), "--out", str(other), "--seed", "6")
    assert (other / "crops.csv").read_bytes() != (outs[0] / "crops.csv").read_bytes()


def test_crops_metadata_matches_images_and_source(tiny, tmp_path):
    out = tmp_path / "crops"
    metas = prepare_crops(tiny, out, seed=0, min_cover=0.5, max_cover=0.9)
    rows = {r.split(",")[1]: r.split(",") for r in
            (out / "crops.csv").read_text().splitlines()[1:]}
    for split, meta in metas.items():
        src = read_metadata(tiny / "metadata" / split)
        back = read_metadata(out / "metadata" / split)
        assert back.image_ids == src.image_ids and back.class_labels == src.class_labels
        for image_id in meta.image_ids:
            crop_img = Image.open(out / "images" / image_id)
            assert crop_img.size == back.image_sizes[image_id]
            cx0, cy0 = int(rows[image_id][2]), int(rows[image_id][3])
            (sx0, sy0, sx1, sy1), = src.boxes[image_id]
            assert back.boxes[image_id] == [(sx0 - cx0, sy0 - cy0, sx1 - cx0, sy1 - cy0)]
            cover = float(rows[image_id][7])
            assert cover >= 0.5 - 1e-6
            # Pixels are the source's pixels (same JPEG content up to re-encoding).
            source = np.asarray(Image.open(tiny / "images" / image_id).convert("RGB"),
                                dtype=np.float64)
            w, h = crop_img.size
            window = source[cy0:cy0 + h, cx0:cx0 + w]
            assert np.abs(np.asarray(crop_img, dtype=np.float64) - window).mean() < 6
    stats = json.loads((out / "crops.json").read_text())["splits"]
    assert set(stats) == {"train", "val", "test"} and stats["test"]["images"] == 6
    assert 0.5 <= stats["test"]["cover"]["min"] <= stats["test"]["cover"]["mean"]


def test_crops_refuses_bad_input(tiny, tmp_path):
    with pytest.raises(PrepareError, match="0 < min_cover <= max_cover <= 1"):
        prepare_crops(tiny, tmp_path / "x", min_cover=0.0)
    with pytest.raises(PrepareError, match="0 < min_cover <= max_cover <= 1"):
        prepare_crops(tiny, tmp_path / "x", min_cover=0.8, max_cover=0.6)
    with pytest.raises(PrepareError, match="pass --image-root"):
        prepare_crops(tiny / "metadata", tmp_path / "x")
    with pytest.raises(PrepareError, match="no split directory"):
        prepare_crops(tmp_path, tmp_path / "x")
    # Mask-only localization cannot be cropped.
    with pytest.raises(PrepareError, match="no box localization"):
        prepare_crops(tiny / "metadata_masks", tmp_path / "x", image_root=tiny / "images")
    out = tmp_path / "done"
    prepare_crops(tiny, out)
    with pytest.raises(FileExistsError, match="--force"):
        prepare_crops(tiny, out)
    prepare_crops(tiny, out, force=True)
    proc = run_cli("prepare", "crops", "--from", str(tiny), "--out", str(out), check=False)
    assert proc.returncode != 0 and "--force" in proc.stderr
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------------- real CUB subset


def test_crops_on_the_cub_subset(tmp_path):
    root = shared_path(*CUB_SUBSET)
    meta_dir = tmp_path / "cub10"
    prepare_cub(root, meta_dir, val_per_class=5, seed=0, workers=2)
    out = tmp_path / "crops"
    metas = prepare_crops(meta_dir, out, image_root=root / "images", seed=0, workers=2)
    assert {s: len(m) for s, m in metas.items()} == {"train": 250, "val": 50, "test": 243}
    stats = json.loads((out / "crops.json").read_text())["splits"]
    covers = [float(r.split(",")[7]) for r in (out / "crops.csv").read_text().splitlines()[1:]]
    assert len(covers) == 543 and min(covers) >= 0.4 and max(covers) <= 1.0
    assert 0.6 < stats["test"]["cover"]["mean"] < 0.85
    # The crops really are large-object images: the source boxes cover far less.
    src = read_metadata(meta_dir / "test")
    src_cover = np.mean([area(src.boxes[i][0]) / np.prod(src.image_sizes[i])
                         for i in src.image_ids])
    assert src_cover < 0.5 < stats["test"]["cover"]["mean"]
    assert (out / "class_names.txt").read_text().splitlines()[0] == "Black footed Albatross"
    back = read_metadata(out / "metadata" / "test")
    image_id = back.image_ids[0]
    assert Image.open(out / "images" / image_id).size == back.image_sizes[image_id]
