"""Transforms, image loading, WSOLDataset and check_images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wsol.data.datasets import WSOLDataset, check_images
from wsol.data.metadata import Metadata, write_metadata
from wsol.data.transforms import (
    EvalTransform,
    ImageLoadError,
    Normalize,
    TrainTransform,
    build_transform,
    load_image,
    to_tensor,
)

IDENTITY = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}


def coordinate_image(width: int, height: int) -> Image.Image:
    """R = x, G = y, B = 7: pixel values tell where a crop came from."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x, y, np.full_like(x, 7)], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb, mode="RGB")


# ------------------------------------------------------------------------------ transforms


def test_eval_transform_constant_image_normalized_by_hand():
    img = Image.new("RGB", (300, 170), (255, 0, 51))
    mean, std = (0.5, 0.25, 0.1), (0.5, 0.25, 0.2)
    x = EvalTransform(mean=mean, std=std, size=224)(img)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    # (v / 255 - mean) / std: (1 - .5)/.5 = 1, (0 - .25)/.25 = -1, (.2 - .1)/.2 = .5
    expected = torch.tensor([1.0, -1.0, 0.5]).view(3, 1, 1).expand(3, 224, 224)
    torch.testing.assert_close(x, expected, atol=1e-6, rtol=0)


def test_eval_transform_resizes_non_square_to_square_without_crop():
    # Left half black, right half white, 400x100: after a square resize the edge stays at
    # the middle column (no crop, no aspect preservation).
    rgb = np.zeros((100, 400, 3), np.uint8)
    rgb[:, 200:] = 255
    x = EvalTransform(**IDENTITY, size=64)(Image.fromarray(rgb))
    assert x.shape == (3, 64, 64)
    assert torch.all(x[:, :, :31] == 0) and torch.all(x[:, :, 33:] == 1)


def test_eval_transform_rectangular_size():
    x = EvalTransform(**IDENTITY, size=(32, 48))(coordinate_image(100, 80))
    assert x.shape == (3, 32, 48)


def test_train_transform_is_a_crop_of_the_resized_image():
    img = coordinate_image(256, 256)  # already 256x256: resize is the identity
    tf = TrainTransform(**IDENTITY, resize_size=256, crop_size=224, flip_prob=0.0)
    for seed in range(5):
        torch.manual_seed(seed)
        x = tf(img) * 255
        assert x.shape == (3, 224, 224)
        left, top = int(x[0, 0, 0].round()), int(x[1, 0, 0].round())
        assert 0 <= left <= 32 and 0 <= top <= 32
        cols = torch.arange(left, left + 224, dtype=torch.float32)
        rows = torch.arange(top, top + 224, dtype=torch.float32)
        torch.testing.assert_close(x[0], cols.expand(224, 224), atol=1e-4, rtol=0)
        torch.testing.assert_close(x[1], rows[:, None].expand(224, 224), atol=1e-4, rtol=0)


def test_train_transform_deterministic_under_seed_and_varies_without():
    img = coordinate_image(300, 200)
    tf = TrainTransform(**IDENTITY, resize_size=64, crop_size=48)
    torch.manual_seed(123)
    first = [tf(img) for _ in range(6)]
    torch.manual_seed(123)
    second = [tf(img) for _ in range(6)]
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    # 6 draws of (17 x 17 offsets x 2 flips): not all identical
    assert any(not torch.equal(first[0], f) for f in first[1:])


def test_flip_mirrors_the_same_crop():
    img = coordinate_image(256, 256)
    torch.manual_seed(7)
    plain = TrainTransform(**IDENTITY, resize_size=256, crop_size=200, flip_prob=0.0)(img)
    torch.manual_seed(7)  # same crop draws; flip_prob=1 always flips
    flipped = TrainTransform(**IDENTITY, resize_size=256, crop_size=200, flip_prob=1.0)(img)
    assert torch.equal(flipped, plain.flip(-1))
    assert not torch.equal(flipped, plain)


def test_flip_probability_is_about_half():
    img = coordinate_image(40, 40)
    tf = TrainTransform(**IDENTITY, resize_size=40, crop_size=40)
    torch.manual_seed(0)
    flips = sum(bool(tf(img)[0, 0, 0] > tf.normalize.mean[0] + 0.05) for _ in range(400))
    # first column is x=39 when flipped, x=0 otherwise; Binomial(400, .5): 4.5 sigma = +-45
    assert 155 <= flips <= 245


def test_transform_reproducible_in_dataloader_workers(tmp_path):
    root, meta = make_split(tmp_path, n=6)
    ds = WSOLDataset(root, meta, TrainTransform(**IDENTITY, resize_size=40, crop_size=24))

    def run():
        torch.manual_seed(5)
        loader = torch.utils.data.DataLoader(ds, batch_size=3, shuffle=True, num_workers=2)
        return [(b["image"], b["index"]) for b in loader]

    a, b = run(), run()
    assert len(a) == 2
    for (xa, ia), (xb, ib) in zip(a, b):
        assert torch.equal(ia, ib) and torch.equal(xa, xb)


def test_build_transform_train_and_eval():
    tr = build_transform(True, resize_size=64, crop_size=48)
    ev = build_transform(False, resize_size=64, crop_size=48)
    img = coordinate_image(90, 70)
    assert isinstance(tr, TrainTransform) and tr(img).shape == (3, 48, 48)
    assert isinstance(ev, EvalTransform) and ev(img).shape == (3, 48, 48)


@pytest.mark.parametrize("kwargs, match", [
    ({"resize_size": 200, "crop_size": 224}, "larger than resize_size"),
    ({"resize_size": 0}, "resize_size must be positive"),
    ({"resize_size": (1, 2, 3)}, "resize_size must be an int"),
    ({"flip_prob": 1.5}, "flip_prob"),
    ({"std": (1.0, 0.0, 1.0)}, "std must be positive"),
    ({"mean": (0.5, 0.5)}, "3 values"),
])
def test_train_transform_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainTransform(**kwargs)


def test_normalize_invert_roundtrip():
    norm = Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    x = torch.rand(2, 3, 5, 5)
    torch.testing.assert_close(norm.invert(norm(x)), x)


# ----------------------------------------------------------------------------- load_image


@pytest.mark.parametrize("mode, value", [("L", 100), ("RGBA", (10, 20, 30, 0)), ("P", 3),
                                         ("CMYK", (0, 0, 0, 0))])
def test_load_image_converts_to_rgb(tmp_path, mode, value):
    img = Image.new(mode, (9, 5), value)
    path = tmp_path / ("a.png" if mode != "CMYK" else "a.jpg")
    img.save(path)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (9, 5)
    if mode == "L":
        assert out.getpixel((0, 0)) == (100, 100, 100)
    if mode == "RGBA":  # alpha dropped, colour kept
        assert out.getpixel((0, 0)) == (10, 20, 30)


def test_load_image_palette_with_transparency(tmp_path):
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    path = tmp_path / "p.png"
    img.save(path, transparency=0)
    assert load_image(path).getpixel((1, 1)) == (200, 100, 50)


def test_load_image_missing_names_the_file(tmp_path):
    path = tmp_path / "nope" / "x.jpg"
    with pytest.raises(ImageLoadError, match=r"nope[/\\]x\.jpg.*does not exist"):
        load_image(path)


def test_load_image_truncated_jpeg_names_the_file(tmp_path):
    path = tmp_path / "trunc.jpg"
    coordinate_image(128, 128).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="trunc.jpg: cannot decode"):
        load_image(path)
    assert issubclass(ImageLoadError, ValueError)


def test_load_image_not_an_image(tmp_path):
    path = tmp_path / "text.png"
    path.write_text("hello")
    with pytest.raises(ImageLoadError, match="text.png"):
        load_image(path)


def test_to_tensor_range_and_layout():
    x = to_tensor(coordinate_image(5, 3))
    assert x.shape == (3, 3, 5)
    assert x[0, 2, 4] == pytest.approx(4 / 255) and x[1, 2, 4] == pytest.approx(2 / 255)


# --------------------------------------------------------------------------------- dataset


def make_split(tmp_path: Path, n: int = 4) -> tuple[Path, Metadata]:
    root = tmp_path / "images"
    ids, labels, sizes = [], {}, {}
    for k in range(n):
        image_id = f"c{k % 2}/img_{k}.png"
        (root / f"c{k % 2}").mkdir(parents=True, exist_ok=True)
        w, h = 30 + 5 * k, 20 + 3 * k
        Image.new("RGB", (w, h), (10 * k, 0, 0)).save(root / image_id)
        ids.append(image_id)
        labels[image_id] = k % 2
        sizes[image_id] = (w, h)
    return root, Metadata(image_ids=ids, class_labels=labels, image_sizes=sizes)


def test_dataset_items(tmp_path):
    root, meta = make_split(tmp_path, n=4)
    split_dir = write_metadata(meta, tmp_path / "meta" / "test")
    for source in (meta, split_dir, str(split_dir)):
        ds = WSOLDataset(root, source, EvalTransform(**IDENTITY, size=16))
        assert len(ds) == 4 and ds.num_classes == 2
        item = ds[3]
        assert set(item) == {"image", "label", "image_id", "index"}
        assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.float32
        assert item["label"] == 1 and item["image_id"] == "c1/img_3.png" and item["index"] == 3
        assert item["image"][0, 0, 0].item() == pytest.approx(30 / 255)
    assert ds[-1]["index"] == 3
    with pytest.raises(IndexError):
        ds[4]


def test_dataset_without_transform_keeps_original_size(tmp_path):
    root, meta = make_split(tmp_path, n=2)
    item = WSOLDataset(root, meta)[1]
    assert item["image"].shape == (3, 23, 35)


def test_dataset_batches_with_default_collate(tmp_path):
    root, meta = make_split(tmp_path, n=4)
    ds = WSOLDataset(root, meta, EvalTransform(**IDENTITY, size=8))
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 8, 8)
    assert batch["label"].tolist() == [0, 1, 0, 1] and batch["index"].tolist() == [0, 1, 2, 3]
    assert batch["image_id"][2] == "c0/img_2.png"


def test_dataset_num_classes_override(tmp_path):
    root, meta = make_split(tmp_path, n=2)
    assert WSOLDataset(root, meta, num_classes=10).num_classes == 10
    with pytest.raises(ValueError, match="num_classes=1"):
        WSOLDataset(root, meta, num_classes=1)


def test_dataset_missing_image_names_it(tmp_path):
    root, meta = make_split(tmp_path, n=2)
    (root / "c1" / "img_1.png").unlink()
    ds = WSOLDataset(root, meta)
    ds[0]
    with pytest.raises(ImageLoadError, match=r"c1[/\\]img_1\.png"):
        ds[1]


def test_dataset_bad_root(tmp_path):
    _, meta = make_split(tmp_path, n=1)
    with pytest.raises(ValueError, match="not a directory"):
        WSOLDataset(tmp_path / "absent", meta)


def test_check_images_reports_missing_corrupt_and_size(tmp_path):
    root, meta = make_split(tmp_path, n=5)
    (root / "c0" / "img_0.png").unlink()
    (root / "c1" / "img_1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    Image.new("RGB", (7, 7)).save(root / "c0" / "img_2.png")  # metadata says 40x26
    report = check_images(root, meta)
    assert report.checked == 5 and not report.ok
    assert report.missing == ["c0/img_0.png"]
    assert [i for i, _ in report.corrupt] == ["c1/img_1.png"]
    assert report.size_mismatch == [("c0/img_2.png", (40, 26), (7, 7))]
    assert "1 of 5 missing: c0/img_0.png" in report.summary()
    fast = check_images(root, meta, decode=False)
    assert fast.missing == ["c0/img_0.png"] and not fast.corrupt and not fast.size_mismatch


def test_check_images_all_present(tmp_path):
    root, meta = make_split(tmp_path, n=3)
    report = check_images(root, meta)
    assert report.ok and report.summary() == "all 3 images present"
