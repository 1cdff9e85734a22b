"""``wsol prepare folder``: class subfolders + a boxes CSV -> wsolevaluation metadata."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli
from PIL import Image

from wsol.data.folder import prepare_folder
from wsol.data.metadata import read_metadata
from wsol.errors import PrepareError


def make_tree(root: Path, per_class: dict[str, int], size=(30, 20)) -> Path:
    for k, (name, n) in enumerate(per_class.items()):
        for j in range(n):
            sub = root / name / ("nested" if j == n - 1 else "")
            sub.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", size, (10 * k, 20, 30)).save(sub / f"image_{j:04d}.jpg")
    (root / next(iter(per_class)) / "notes.txt").write_text("not an image")  # ignored
    (root / ".hidden").mkdir(exist_ok=True)  # not a class
    return root


def test_folder_cli_names_ids_and_splits(tmp_path):
    root = make_tree(tmp_path / "photos", {"tern": 6, "auk": 6, "ani": 6})
    boxes = tmp_path / "boxes.csv"
    rows = ["relative_path,x0,y0,x1,y1"]
    for name in ("ani", "auk", "tern"):
        for j in range(5):
            rows.append(f"{name}/image_{j:04d}.jpg,1,2,{10 + j},15")
    rows.append("auk/image_0000.jpg,0,0,29,19")  # a second box
    boxes.write_text("\n".join(rows) + "\n")
    out = tmp_path / "meta"
    proc = run_cli("prepare", "folder", "--root", str(root), "--boxes", str(boxes), "--out",
                   str(out), "--val-per-class", "2", "--test-per-class", "1", "--seed", "4")
    assert "train: 9 images, 3 classes" in proc.stdout
    assert (out / "class_names.txt").read_text() == "ani\nauk\ntern\n"
    metas = {s: read_metadata(out / s) for s in ("train", "val", "test")}
    assert [len(m) for m in metas.values()] == [9, 6, 3]
    all_ids = [i for m in metas.values() for i in m.image_ids]
    assert len(set(all_ids)) == 18
    # Ids keep the class folder (and deeper folders); labels follow the sorted names.
    assert "tern/nested/image_0005.jpg" in all_ids
    for m in metas.values():
        for i in m.image_ids:
            assert m.class_labels[i] == ["ani", "auk", "tern"].index(i.split("/")[0])
            assert m.image_sizes[i] == (30, 20)
    # val/test only hold images with boxes; the second box of auk/image_0000 is kept.
    for split in ("val", "test"):
        assert all(metas[split].boxes[i] for i in metas[split].image_ids)
    owner = next(s for s, m in metas.items() if "auk/image_0000.jpg" in m.image_ids)
    assert metas[owner].boxes["auk/image_0000.jpg"] == [(1, 2, 10, 15), (0, 0, 29, 19)]
    # Seeded: same seed -> same val, another seed -> (here) another one.
    again = prepare_folder(root, tmp_path / "again", boxes=boxes, val_per_class=2,
                           test_per_class=1, seed=4)
    assert again["val"].image_ids == metas["val"].image_ids
    other = prepare_folder(root, tmp_path / "other", boxes=boxes, val_per_class=2,
                           test_per_class=1, seed=5)
    assert other["val"].image_ids != metas["val"].image_ids


def test_folder_without_boxes_and_bad_input(tmp_path):
    root = make_tree(tmp_path / "p", {"a": 3, "b": 2})
    metas = prepare_folder(root, tmp_path / "o", val_per_class=1)
    assert set(metas) == {"train", "val"} and metas["val"].boxes is None
    with pytest.raises(PrepareError, match="class 'b' has 2 image"):
        prepare_folder(root, tmp_path / "x", val_per_class=2)
    boxes = tmp_path / "b.csv"
    for text, match in [("a/missing.jpg,0,0,1,1\n", r"b\.csv:1: 'a/missing\.jpg' is not an image"),
                        ("../a/image_0000.jpg,0,0,1,1\n", r"b\.csv:1: .*'\.\.'"),
                        ("a/image_0000.jpg,0,0,1\n", r"b\.csv:1: expected"),
                        ("a/image_0000.jpg,0,0,x,1\n", r"b\.csv:1: box coordinates"),
                        ("a/image_0000.jpg,5,0,1,1\n", r"b\.csv:1: box \(5,0,1,1\)"),
                        ("a/image_0000.jpg,0,0,30,1\n", r"outside the image of size 30x20")]:
        boxes.write_text(text)
        with pytest.raises(PrepareError, match=match):
            prepare_folder(root, tmp_path / "x", boxes=boxes, val_per_class=0)
    assert not (tmp_path / "x").exists()
    with pytest.raises(PrepareError, match="no class subfolders"):
        prepare_folder(tmp_path / "o" / "train", tmp_path / "x")
    with pytest.raises(FileExistsError, match="--force"):
        prepare_folder(root, tmp_path / "o", val_per_class=1)
    prepare_folder(root, tmp_path / "o", val_per_class=0, force=True)
    assert not (tmp_path / "o" / "val" / "image_ids.txt").exists()  # no stale val left
