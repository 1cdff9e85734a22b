"""``wsol prepare voc`` on the real VOC2012 sample (5 images) and on hand-made annotations."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli, shared_path
from PIL import Image

from wsol.data.metadata import read_metadata
from wsol.data.voc import VOC_CLASSES, VOCObject, image_label, parse_annotation, prepare_voc
from wsol.errors import PrepareError

SAMPLE = ("data", "VOC2012-sample")


def lists(tmp_path: Path, **sets: list[str]) -> dict[str, str]:
    out = {}
    for name, names in sets.items():
        path = tmp_path / f"{name}.txt"
        path.write_text("".join(f"{n}\n" for n in names))
        out[name] = str(path)
    return out


def test_voc_sample_cli(tmp_path):
    root = shared_path(*SAMPLE)
    sets = lists(tmp_path, tr=["2007_000027", "2007_000032", "2007_000033"],
                 te=["2007_000039", "2007_000042"])
    out = tmp_path / "voc"
    proc = run_cli("prepare", "voc", "--root", str(root), "--out", str(out), "--train-set",
                   sets["tr"], "--test-set", sets["te"], "--val-per-class", "0")
    assert "train: 3 images, 8 boxes" in proc.stdout
    train, test = read_metadata(out / "train"), read_metadata(out / "test")
    assert not (out / "val").exists()
    label = {n: k for k, n in enumerate(VOC_CLASSES)}
    # 000032: 2 aeroplanes (272x106 + 65x36 px) beat 2 people (19x50 each): aeroplane.
    assert train.class_labels == {"2007_000027.jpg": label["person"],
                                  "2007_000032.jpg": label["aeroplane"],
                                  "2007_000033.jpg": label["aeroplane"]}
    assert test.class_labels == {"2007_000039.jpg": label["tvmonitor"],
                                 "2007_000042.jpg": label["train"]}
    # All boxes of each image, 1-based VOC -> 0-based inclusive; xmax=500 in a 500-wide image.
    assert train.boxes["2007_000032.jpg"] == [(103, 77, 374, 182), (132, 87, 196, 122),
                                              (194, 179, 212, 228), (25, 188, 43, 237)]
    assert test.boxes["2007_000042.jpg"] == [(262, 31, 499, 294), (0, 35, 234, 298)]
    for meta in (train, test):
        for image_id in meta.image_ids:
            with Image.open(root / "JPEGImages" / image_id) as img:
                assert meta.image_sizes[image_id] == img.size
    assert (out / "class_names.txt").read_text().splitlines() == list(VOC_CLASSES)
    assert VOC_CLASSES == tuple(sorted(VOC_CLASSES))
    rows = (out / "image_classes.csv").read_text().splitlines()
    assert rows[0] == "split,image_id,label,classes"
    assert "train,2007_000032.jpg,0,0 14" in rows


def test_voc_sample_label_boxes_only_and_default_sets(tmp_path):
    root = shared_path(*SAMPLE)
    sets = lists(tmp_path, tr=["2007_000032"], te=["2007_000027"])
    metas = prepare_voc(root, tmp_path / "o", train_set=sets["tr"], test_set=sets["te"],
                        val_per_class=0, boxes="label")
    assert metas["train"].boxes["2007_000032.jpg"] == [(103, 77, 374, 182), (132, 87, 196, 122)]
    # The sample has no Main/train.txt: the default sets name the missing file.
    with pytest.raises(PrepareError, match=r"ImageSets/Main/train\.txt does not exist"):
        prepare_voc(root, tmp_path / "d")
    # Its trainval and test lists are the same 5 images: overlapping splits are refused.
    with pytest.raises(PrepareError, match="in both .*trainval.txt and .*test.txt"):
        prepare_voc(root, tmp_path / "d", train_set="trainval", test_set="test")
    with pytest.raises(PrepareError, match="cannot carve val"):
        prepare_voc(root, tmp_path / "d", train_set=sets["tr"], test_set=sets["te"])
    with pytest.raises(FileExistsError, match="--force"):
        prepare_voc(root, tmp_path / "o", train_set=sets["tr"], test_set=sets["te"],
                    val_per_class=0)


def obj(label: int, box, difficult=False) -> VOCObject:
    return VOCObject(label, difficult, box)


def test_image_label_rule():
    # One large object beats two smaller ones of another class ...
    assert image_label([obj(3, (0, 0, 99, 99)), obj(1, (0, 0, 59, 59)),
                        obj(1, (0, 0, 59, 59))]) == 3
    # ... but their total area counts: 2 x 80x80 > 100x100.
    assert image_label([obj(3, (0, 0, 99, 99)), obj(1, (0, 0, 79, 79)),
                        obj(1, (0, 0, 79, 79))]) == 1
    # Ties go to the lower label.
    assert image_label([obj(7, (0, 0, 9, 9)), obj(2, (5, 5, 14, 14))]) == 2


XML = """<annotation><filename>{name}.jpg</filename>
<size><width>{w}</width><height>{h}</height><depth>3</depth></size>{objects}</annotation>"""
OBJ = ("<object><name>{cls}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin>"
       "<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>")


def fake_voc(tmp_path: Path, images: dict[str, list[tuple[str, int, tuple]]],
             size=(40, 30)) -> Path:
    root = tmp_path / "VOC2012"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for name, objects in images.items():
        Image.new("RGB", size, (50, 60, 70)).save(root / "JPEGImages" / f"{name}.jpg")
        body = "".join(OBJ.format(cls=c, d=d, b=b) for c, d, b in objects)
        (root / "Annotations" / f"{name}.xml").write_text(
            XML.format(name=name, w=size[0], h=size[1], objects=body))
    return root


def test_difficult_objects_and_bad_annotations(tmp_path):
    root = fake_voc(tmp_path, {
        "a": [("dog", 0, (1, 1, 10, 10)), ("cat", 1, (1, 1, 40, 30))],
        "b": [("cat", 1, (2, 2, 5, 5))],
        "c": [("bird", 0, (3, 3, 8.7, 9))],
    })
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\nb\n")
    (root / "ImageSets" / "Main" / "val.txt").write_text("c  1\n")  # per-class list form
    metas = prepare_voc(root, tmp_path / "all", val_per_class=0)
    assert metas["train"].class_labels["a.jpg"] == VOC_CLASSES.index("cat")
    assert metas["test"].boxes["c.jpg"] == [(2, 2, 7, 8)]  # 8.7 floored, then 1-based -> 0
    kept = prepare_voc(root, tmp_path / "easy", val_per_class=0, exclude_difficult=True)
    assert kept["train"].image_ids == ["a.jpg"]  # b had only a difficult object
    assert kept["train"].class_labels["a.jpg"] == VOC_CLASSES.index("dog")
    assert kept["train"].boxes["a.jpg"] == [(0, 0, 9, 9)]

    xml = root / "Annotations" / "c.xml"
    xml.write_text(XML.format(name="c", w=40, h=30, objects=OBJ.format(cls="unicorn", d=0,
                                                                         b=(1, 1, 2, 2))))
    with pytest.raises(PrepareError, match=r"c\.xml: object 1 has class 'unicorn'"):
        prepare_voc(root, tmp_path / "x", val_per_class=0)
    xml.write_text('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]><annotation/>')
    with pytest.raises(PrepareError, match="DTD"):
        parse_annotation(xml)
    xml.write_text(XML.format(name="c", w=41, h=30, objects=OBJ.format(cls="bird", d=0,
                                                                         b=(1, 1, 2, 2))))
    with pytest.raises(PrepareError, match="<size> 41x30 differs from the decoded image 40x30"):
        prepare_voc(root, tmp_path / "x", val_per_class=0)
    xml.unlink()
    with pytest.raises(PrepareError, match=r"c\.xml: annotation file does not exist"):
        prepare_voc(root, tmp_path / "x", val_per_class=0)
    (root / "ImageSets" / "Main" / "val.txt").write_text("../etc\n")
    with pytest.raises(PrepareError, match=r"val\.txt:1: .*'\.\.'"):
        prepare_voc(root, tmp_path / "x", val_per_class=0)
    assert not (tmp_path / "x").exists()  # nothing written on any error


def test_carved_val_and_val_set(tmp_path):
    images = {f"i{k}": [(("dog", "cat")[k % 2], 0, (1, 1, 10, 10))] for k in range(8)}
    root = fake_voc(tmp_path, images)
    main = root / "ImageSets" / "Main"
    (main / "train.txt").write_text("".join(f"i{k}\n" for k in range(6)))
    (main / "val.txt").write_text("i6\ni7\n")
    metas = prepare_voc(root, tmp_path / "o", val_per_class=1, seed=3)
    assert len(metas["val"]) == 2 and len(metas["train"]) == 4 and len(metas["test"]) == 2
    assert sorted(metas["val"].class_labels.values()) == [VOC_CLASSES.index("cat"),
                                                         VOC_CLASSES.index("dog")]
    (main / "mine.txt").write_text("i5\n")
    (main / "train.txt").write_text("".join(f"i{k}\n" for k in range(5)))
    metas = prepare_voc(root, tmp_path / "o", val_set="mine", force=True)
    assert metas["val"].image_ids == ["i5.jpg"] and len(metas["train"]) == 5
