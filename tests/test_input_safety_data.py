"""Input safety of the data layer (issue 11): ids that escape their root, BOMs, labels against
the class count and the training split, decompression bombs and 16-bit images."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsol.data.metadata import (
    Metadata,
    MetadataError,
    check_labels,
    check_split_labels,
    read_metadata,
)
from wsol.data.transforms import ImageLoadError, load_image
from wsol.errors import WsolError
from wsol.utils.paths import UnsafePathError, check_relative_path, safe_join

# ------------------------------------------------------------------------------------ paths

BAD_RELATIVE = ["../x.jpg", "a/../../x.jpg", "a/..", "/etc/passwd", "C:/x.jpg", "c:x.jpg",
                "..\\x.jpg", "a\\b.jpg", "a\x00b.jpg", "//server/share/x.jpg", "", ".", "./."]


@pytest.mark.parametrize("rel", BAD_RELATIVE)
def test_check_relative_path_refuses(rel):
    with pytest.raises(UnsafePathError, match="image id"):
        check_relative_path(rel, "image id")


@pytest.mark.parametrize("rel", ["x.jpg", "a/b/c.jpg", "./a/b.jpg", "a//b.jpg", "a..b/c..jpg",
                                 "...jpg", "C/x.jpg", "0001.Black_footed_Albatross/x.jpg"])
def test_check_relative_path_accepts(rel):
    assert check_relative_path(rel, "image id") == rel


def test_safe_join_inside_and_error_type(tmp_path):
    assert safe_join(tmp_path, "a/b.npy", "score map") == tmp_path / "a" / "b.npy"
    with pytest.raises(WsolError, match=r"score map '\.\./b\.npy'"):
        safe_join(tmp_path, "../b.npy", "score map")
    with pytest.raises(ValueError):  # library callers catching ValueError keep working
        safe_join(tmp_path, "/abs.npy", "score map")


def test_safe_join_refuses_a_symlink_out_of_the_root(tmp_path):
    root, outside = tmp_path / "out", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="outside"):
        safe_join(root, "link/x.npy", "score-map path")
    # A symlinked root itself is fine: the proof is against the resolved root.
    alias = tmp_path / "alias"
    alias.symlink_to(root, target_is_directory=True)
    assert safe_join(alias, "a/x.npy") == alias / "a" / "x.npy"


# -------------------------------------------------------------------------------- metadata


def write_split(split: Path, ids: list[str], labels: list[int] | None = None,
                loc: str | None = None, prefix: bytes = b"") -> Path:
    split.mkdir(parents=True, exist_ok=True)
    labels = labels if labels is not None else [0] * len(ids)
    (split / "image_ids.txt").write_bytes(prefix + "".join(f"{i}\n" for i in ids).encode())
    (split / "class_labels.txt").write_bytes(
        prefix + "".join(f"{i},{c}\n" for i, c in zip(ids, labels)).encode())
    if loc is not None:
        (split / "localization.txt").write_text(loc)
    return split


@pytest.mark.parametrize("bad", ["../secret.jpg", "a/../../secret.jpg", "/etc/hostname",
                                 "C:/Windows/x.jpg", "a\x00.jpg", "..\\x.jpg"])
def test_metadata_refuses_ids_that_escape_the_root(tmp_path, bad):
    split = write_split(tmp_path / "test", ["ok/1.jpg", bad])
    with pytest.raises(MetadataError) as info:
        read_metadata(split)
    assert f"{split / 'image_ids.txt'}:2:" in str(info.value)
    assert "image id" in str(info.value)


@pytest.mark.parametrize("field, bad", [(1, "../m.png"), (1, "/abs/m.png"), (2, "../ig.png")])
def test_metadata_refuses_mask_paths_that_escape_the_root(tmp_path, field, bad):
    fields = ["a/m.png", "a/ig.png"]
    fields[field - 1] = bad
    loc = "a.jpg,m0.png,\n" + f"a.jpg,{fields[0]},{fields[1]}\n"
    split = write_split(tmp_path / "test", ["a.jpg"], loc=loc)
    with pytest.raises(MetadataError) as info:
        read_metadata(split)
    assert f"{split / 'localization.txt'}:2:" in str(info.value)
    assert "mask path" in str(info.value)


def test_metadata_strips_a_utf8_bom(tmp_path):
    split = write_split(tmp_path / "s", ["a/1.jpg", "a/2.jpg"], prefix=b"\xef\xbb\xbf")
    meta = read_metadata(split)
    assert meta.image_ids == ["a/1.jpg", "a/2.jpg"]
    assert meta.class_labels == {"a/1.jpg": 0, "a/2.jpg": 0}


def _meta(tmp_path: Path, name: str, labels: list[int]) -> Metadata:
    ids = [f"{name}/{k}.jpg" for k in range(len(labels))]
    return read_metadata(write_split(tmp_path / name, ids, labels))


def test_check_labels_names_file_and_line(tmp_path):
    val = _meta(tmp_path, "val", [0, 1, 3, 2])
    check_labels(val, 4)
    with pytest.raises(MetadataError) as info:
        check_labels(val, 3, "val")
    message = str(info.value)
    assert f"{tmp_path / 'val' / 'class_labels.txt'}:3:" in message
    assert "outside [0, 3)" in message


def test_check_split_labels_class_missing_from_train(tmp_path):
    train = _meta(tmp_path, "train", [0, 0, 1, 2])
    good = _meta(tmp_path, "good", [2, 1, 0])
    check_split_labels(train, good, "val", num_classes=3)
    test = _meta(tmp_path, "test", [0, 2, 3, 1])  # class 3 is in range but never trained
    with pytest.raises(MetadataError) as info:
        check_split_labels(train, test, "test", num_classes=4)
    message = str(info.value)
    assert f"{tmp_path / 'test' / 'class_labels.txt'}:3:" in message
    assert "no image in" in message and "classes missing from train: 3" in message


def test_check_split_labels_label_out_of_range_in_train(tmp_path):
    train = _meta(tmp_path, "train", [0, 1, 7])
    val = _meta(tmp_path, "val", [0, 1])
    with pytest.raises(MetadataError, match=r"train/class_labels\.txt:3: train label 7"):
        check_split_labels(train, val, "val", num_classes=2)


def test_check_split_labels_subset_keeps_lines(tmp_path):
    train = _meta(tmp_path, "train", [0, 1])
    val = _meta(tmp_path, "val", [0, 1, 5, 1])
    sub = val.subset(["val/3.jpg", "val/2.jpg"])
    with pytest.raises(MetadataError, match=r"val/class_labels\.txt:3:"):
        check_split_labels(train, sub, "val", num_classes=2)


# ---------------------------------------------------------------------------------- images


def _bomb_png(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A tiny (~1 MB) valid grayscale PNG that declares width x height pixels."""
    Image.new("1", (width, height)).save(path, optimize=True)
    return path


def test_decompression_bomb_is_an_image_load_error(tmp_path):
    path = _bomb_png(tmp_path / "bomb.png")
    assert path.stat().st_size < 5_000_000
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning either
        with pytest.raises(ImageLoadError) as info:
            load_image(path)
    assert str(path) in str(info.value)
    assert "limit" in str(info.value)


def test_pixel_limit_is_configurable(tmp_path, monkeypatch):
    path = tmp_path / "small.png"
    Image.new("RGB", (100, 50), (10, 20, 30)).save(path)
    assert load_image(path).size == (100, 50)
    with pytest.raises(ImageLoadError, match="100x50 = 5000 pixels"):
        load_image(path, max_pixels=4999)
    monkeypatch.setenv("WSOL_MAX_IMAGE_PIXELS", "4000")
    with pytest.raises(ImageLoadError, match="limit of 4000"):
        load_image(path)
    monkeypatch.setenv("WSOL_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ImageLoadError, match="WSOL_MAX_IMAGE_PIXELS"):
        load_image(path)


def test_wsol_limit_replaces_pils_own_check(tmp_path, monkeypatch):
    # PIL warns above Image.MAX_IMAGE_PIXELS and raises above twice that; wsol's limit rules.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = tmp_path / "mid.png"
    Image.new("RGB", (100, 30), (5, 6, 7)).save(path)  # 3000 px: > 2 x PIL's 1000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(path, max_pixels=10_000).size == (100, 30)
        with pytest.raises(ImageLoadError, match=str(path)):
            load_image(path, max_pixels=2_000)
    assert Image.MAX_IMAGE_PIXELS == 1000  # PIL's setting is restored


@pytest.mark.parametrize("suffix, dtype", [(".png", "<u2"), (".tif", ">u2")])
def test_16bit_image_decodes_to_scaled_8bit(tmp_path, suffix, dtype):
    values = np.array([[0, 257, 1000], [32768, 65535, 12850]], dtype=dtype)
    path = tmp_path / f"g16{suffix}"
    Image.fromarray(values).save(path)
    with Image.open(path) as check:
        assert check.mode.startswith("I;16")  # really a 16-bit file
    out = np.asarray(load_image(path))
    assert out.shape == (2, 3, 3)
    expected = np.rint(values / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(out[..., 0], expected)
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    assert out.min() == 0 and out.max() == 255 and not (out == 255).all()


def test_32bit_integer_image_with_8bit_values_is_kept(tmp_path):
    values = np.array([[0, 17, 255]], dtype=np.int32)
    path = tmp_path / "i32.tif"
    Image.fromarray(values, mode="I").save(path)
    np.testing.assert_array_equal(np.asarray(load_image(path))[..., 1], [[0, 17, 255]])


@pytest.mark.parametrize("mode, value, rgb", [
    ("L", 77, (77, 77, 77)), ("LA", (77, 10), (77, 77, 77)),
    ("RGBA", (1, 2, 3, 0), (1, 2, 3)), ("1", 1, (255, 255, 255)),
])
def test_other_modes_decode_to_rgb(tmp_path, mode, value, rgb):
    path = tmp_path / f"img_{mode}.png"
    Image.new(mode, (4, 3), value).save(path)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (4, 3)
    assert tuple(np.asarray(img)[1, 2]) == rgb


def test_palette_png_decodes(tmp_path):
    path = tmp_path / "p.png"
    img = Image.new("P", (5, 5), 3)
    img.putpalette([0, 0, 0, 10, 10, 10, 20, 20, 20, 200, 100, 50] + [0] * 756)
    img.save(path)
    assert tuple(np.asarray(load_image(path))[0, 0]) == (200, 100, 50)


def test_loaded_image_survives_its_file(tmp_path):
    path = tmp_path / "x.png"
    Image.new("RGB", (3, 3), (9, 8, 7)).save(path)
    img = load_image(path)
    os.remove(path)
    assert tuple(np.asarray(img)[2, 2]) == (9, 8, 7)
