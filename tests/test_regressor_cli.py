"""``wsol regressor`` end to end on the synthetic fixture (tiny CNN): CREAM checkpoint ->
pseudo boxes -> regressor training (run dir, resume) -> evaluation; one-box metrics by hand."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import run_cli, tiny_overrides

from wsol.cli import main as wsol_main
from wsol.config import load_config
from wsol.data.metadata import read_metadata
from wsol.engine.checkpoint import load_checkpoint, load_method
from wsol.engine.data import build_split
from wsol.data.boxes import BoxTargetDataset
from wsol.engine.regressor import build_regressor, load_regressor_config, train_regressor
from wsol.errors import CheckpointError as RegressorCheckpointError
from wsol.errors import RunDirError
from wsol.metrics.results import threshold_from_file
from wsol.metrics.single_box import box_localization_metrics
from wsol.engine.loop import seed_everything
from wsol.engine.train import train
from wsol.localization import postprocess_maps
from wsol.localization.geometry import pseudo_boxes_from_maps
from wsol.methods.regressor import BoxEvalTransform, xywh_to_xyxy, xyxy_to_xywh
from wsol.metrics.evaluator import gt_boxes_in_eval_geometry

VAL_THRESHOLD = 0.3


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cream_ckpt(synthetic, tmp_path_factory) -> Path:
    """A tiny CREAM checkpoint trained for one epoch."""
    run_dir = tmp_path_factory.mktemp("cream") / "run"
    config = load_config(None, tiny_overrides(synthetic, run_dir, "optim.epochs=1",
                                              "method.name=cream"))
    train(config, progress=False)
    return run_dir / "checkpoints" / "best.pt"


@pytest.fixture(scope="module")
def pseudo_root(cream_ckpt, tmp_path_factory) -> Path:
    """``wsol regressor pseudo-boxes`` with the threshold read from a val results.json."""
    tmp = tmp_path_factory.mktemp("pseudo")
    val_results = tmp / "val.json"
    val_results.write_text(json.dumps({"split": "val", "settings": {"multi_contour": True},
                                       "best_threshold_by_iou": {"30": 0.1, "50": VAL_THRESHOLD}}))
    out = tmp / "pseudo"
    run_cli("regressor", "pseudo-boxes", "--checkpoint", str(cream_ckpt), "--out", str(out),
            "--threshold-from", str(val_results), "--map-size", "448", "--no-progress",
            "method.stage=fused")
    return out


def regressor_overrides(synthetic: Path, pseudo: Path, run_dir: Path, **extra) -> dict:
    return {"run_dir": str(run_dir), "model.name": "tiny_cnn", "model.width": 8,
            "model.pretrained": False, "data.root": str(synthetic / "images"),
            "data.metadata": str(pseudo), "data.image_size": 64, "data.batch_size": 16,
            "data.num_workers": 0, "optim.lr": 0.01, "optim.epochs": 2,
            "optim.lr_decay_every": 1, "device": "cpu", **extra}


# ----------------------------------------------------------------------------- pseudo boxes
def test_pseudo_boxes_are_valid_metadata_with_the_methods_boxes(synthetic, cream_ckpt, pseudo_root):
    source = read_metadata(synthetic / "metadata" / "train")
    pseudo = read_metadata(pseudo_root / "train")  # validates every line (boxes inside sizes)
    assert pseudo.image_ids == source.image_ids
    assert pseudo.class_labels == source.class_labels
    assert pseudo.image_sizes == source.image_sizes
    assert all(len(pseudo.boxes[i]) == 1 for i in pseudo.image_ids)

    report = json.loads((pseudo_root / "train" / "pseudo_boxes.json").read_text())
    assert report["threshold"] == pytest.approx(VAL_THRESHOLD)
    assert report["threshold_source"]["split"] == "val"
    assert report["stage"] == "fused" and report["map_size"] == 448
    acc = report["accuracy"]  # the synthetic train split has real boxes: diagnostics present
    assert acc["num_images"] == len(source)
    assert all(0.0 <= v <= 100.0 for v in acc["box_acc_by_iou"].values())

    # The same boxes, derived here from the method: GT-class fused map -> 448 -> largest contour.
    method, info = load_method(cream_ckpt, overrides=["method.stage=fused"])
    dataset, meta, _ = build_split(info["config"], "train", train=False, backbone=method.backbone)
    batch = info["config"]["data"]["eval_batch_size"]  # the command's batches
    raws = []
    for start in range(0, len(dataset), batch):
        idx = range(start, min(start + batch, len(dataset)))
        images = torch.stack([dataset[i]["image"] for i in idx])
        labels = torch.tensor([dataset[i]["label"] for i in idx])
        with torch.no_grad():
            raws.append(method.localization_maps(method(images), labels))
    maps = postprocess_maps(torch.cat(raws), (448, 448), "minmax")
    sizes = [(meta.image_sizes[i][1], meta.image_sizes[i][0]) for i in meta.image_ids]
    expected = pseudo_boxes_from_maps(maps, VAL_THRESHOLD, sizes)
    got = torch.tensor([pseudo.boxes[i][0] for i in meta.image_ids])
    assert torch.equal(got, expected)


def test_pseudo_boxes_refuse_overwrite_and_test_thresholds(cream_ckpt, pseudo_root, tmp_path):
    before = (pseudo_root / "train" / "localization.txt").read_text()
    code = wsol_main(["regressor", "pseudo-boxes", "--checkpoint", str(cream_ckpt), "--out",
                      str(pseudo_root), "--threshold", "0.9", "--no-progress"])
    assert code == 2
    assert (pseudo_root / "train" / "localization.txt").read_text() == before

    test_results = tmp_path / "test.json"
    test_results.write_text(json.dumps({"split": "test", "best_threshold_by_iou": {"50": 0.2}}))
    with pytest.raises(ValueError, match="never on test"):
        threshold_from_file(test_results, "50", ("test",))
    val_results = tmp_path / "val.json"
    val_results.write_text(json.dumps({"split": "val", "best_threshold_by_iou": {"50": 0.25}}))
    assert threshold_from_file(val_results, "50", ("test",))[0] == 0.25
    val_results.write_text(json.dumps({"split": "val", "PxAP": 50.0}))
    with pytest.raises(ValueError, match="no best threshold for IoU 50"):
        threshold_from_file(val_results, "50", ("test",))


def test_box_target_dataset_normalizes_the_metadata_box(synthetic, pseudo_root):
    meta = read_metadata(pseudo_root / "train")
    ds = BoxTargetDataset(synthetic / "images", meta, BoxEvalTransform(size=32))
    item = ds[0]
    w, h = meta.image_sizes[meta.image_ids[0]]
    x0, y0, x1, y1 = meta.boxes[meta.image_ids[0]][0]
    assert item["image"].shape == (3, 32, 32)
    assert item["box"].tolist() == pytest.approx([x0 / w, y0 / h, (x1 + 1 - x0) / w,
                                                  (y1 + 1 - y0) / h])
    no_boxes = read_metadata(synthetic / "metadata" / "train")
    no_boxes.boxes = None
    with pytest.raises(ValueError, match="no box"):
        BoxTargetDataset(synthetic / "images", no_boxes, BoxEvalTransform(size=32))


# ----------------------------------------------------------------------------- training
def test_regressor_train_cli_writes_its_run_dir(synthetic, pseudo_root, tmp_path):
    run_dir = tmp_path / "reg"
    run_cli("regressor", "train", "--run-dir", str(run_dir), "--metadata", str(pseudo_root),
            "--image-root", str(synthetic / "images"), "--model", "tiny_cnn", "--pretrained",
            "false", "--epochs", "2", "--lr", "0.01", "--batch-size", "16", "--image-size", "64",
            "--val-metadata", str(synthetic / "metadata" / "val"), "--device", "cpu",
            "--no-progress", "model.width=8", "data.num_workers=0", "optim.lr_decay_every=1")
    for name in ("config.yaml", "metrics.csv", "results.json", "checkpoints/last.pt",
                 "checkpoints/best.pt"):
        assert (run_dir / name).is_file(), name
    rows = list(csv.DictReader((run_dir / "metrics.csv").read_text().splitlines()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[1]["lr"]) == pytest.approx(0.001)  # step decay after epoch 1
    assert all(0.0 <= float(r["val_mean_box_acc"]) <= 100.0 for r in rows)
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt", kind="regressor")
    assert state["format"] == "wsol-checkpoint" and state["kind"] == "regressor"
    assert state["epoch"] == 2
    assert {"optimizer", "scheduler", "rng"} <= set(state)
    # the saved config round-trips and resolves back to itself
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert load_regressor_config(base=saved) == saved
    assert saved["model"]["name"] == "tiny_cnn" and saved["regressor"]["loss_weight"] == 50.0
    # never overwritten without --force
    code = wsol_main(["regressor", "train", "--run-dir", str(run_dir), "--metadata",
                      str(pseudo_root), "--image-root", str(synthetic / "images")])
    assert code == 2 and (run_dir / "checkpoints" / "best.pt").is_file()


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(synthetic, pseudo_root, tmp_path):
    def config(run_dir):
        return load_regressor_config(None, regressor_overrides(
            synthetic, pseudo_root, run_dir, **{"regressor.dropout": 0.2}))

    full = tmp_path / "full"
    train_regressor(config(full), progress=False)
    parts = tmp_path / "parts"
    first = train_regressor(config(parts), progress=False, stop_after_epochs=1)
    assert not first["finished"] and first["epochs_completed"] == 1
    assert not (parts / "results.json").exists()
    train_regressor(config(parts), progress=False, resume=True)
    a = load_checkpoint(full / "checkpoints" / "last.pt", kind="regressor")
    b = load_checkpoint(parts / "checkpoints" / "last.pt", kind="regressor")
    assert a["epoch"] == b["epoch"] == 2
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    for key in a["optimizer"]["state"]:
        assert torch.equal(a["optimizer"]["state"][key]["momentum_buffer"],
                           b["optimizer"]["state"][key]["momentum_buffer"])
    rows = list(csv.DictReader((parts / "metrics.csv").read_text().splitlines()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    # training moved the weights away from the seeded initialization
    seed_everything(0)
    init = build_regressor(config(full)).state_dict()
    assert not all(torch.equal(v, a["state_dict"][k]) for k, v in init.items())
    with pytest.raises(RunDirError, match="not a wsol run directory"):
        train_regressor(config(tmp_path / "fresh"), progress=False, resume=True)


# ----------------------------------------------------------------------------- evaluation
def test_evaluate_cli_reports_protocol_metrics(synthetic, cream_ckpt, pseudo_root, tmp_path):
    run_dir = tmp_path / "reg"
    train_regressor(load_regressor_config(None, regressor_overrides(
        synthetic, pseudo_root, run_dir, **{"optim.epochs": 1})), progress=False)
    out = tmp_path / "eval.json"
    run_cli("regressor", "evaluate", "--regressor", str(run_dir / "checkpoints" / "best.pt"),
            "--classifier", str(cream_ckpt), "--split", "test", "--output", str(out),
            "--no-progress")
    res = json.loads(out.read_text())
    assert res["num_images"] == len(read_metadata(synthetic / "metadata" / "test"))
    for key in ("top1_cls", "top5_cls", "top1_loc", "top5_loc", "gt_known_loc", "mean_box_acc"):
        assert 0.0 <= res[key] <= 100.0, key
    assert set(res["box_acc_by_iou"]) == {"30", "50", "70"}
    assert res["top1_loc"] <= res["top5_loc"] <= res["gt_known_loc"]
    assert res["gt_known_loc"] == res["box_acc_by_iou"]["50"]
    assert res["mean_box_acc"] == pytest.approx(np.mean(list(res["box_acc_by_iou"].values())))
    # refuses to overwrite; a classifier checkpoint is not a regressor
    assert wsol_main(["regressor", "evaluate", "--regressor",
                      str(run_dir / "checkpoints" / "best.pt"), "--classifier", str(cream_ckpt),
                      "--output", str(out)]) == 2
    with pytest.raises(RegressorCheckpointError, match="--classifier"):
        load_checkpoint(cream_ckpt, kind="regressor")
    assert load_checkpoint(cream_ckpt)["format"] == "wsol-checkpoint"


def test_perfect_boxes_give_100_through_the_normalized_round_trip(synthetic):
    meta = read_metadata(synthetic / "metadata" / "test")
    size = 224
    gt = gt_boxes_in_eval_geometry(meta, size)
    ids = meta.image_ids
    first = torch.tensor(np.stack([gt[i][0] for i in ids]))
    # a "regressor" that outputs the GT box: normalized (x, y, w, h) -> 224 pixels
    predicted = xywh_to_xyxy(xyxy_to_xywh(first, (size, size)), (size, size))
    labels = np.array([meta.class_labels[i] for i in ids])
    res = box_localization_metrics(predicted, [gt[i] for i in ids], labels=labels,
                                   topk=labels[:, None])
    assert res["gt_known_loc"] == res["top1_loc"] == res["top5_loc"] == 100.0
    assert res["box_acc_by_iou"] == {"30": 100.0, "50": 100.0, "70": 100.0}
    assert res["mean_box_acc"] == res["mean_iou"] == 100.0


def test_box_localization_metrics_by_hand():
    gt = [np.array([[0, 0, 9, 9]])] * 4 + [np.array([[50, 50, 59, 59], [0, 0, 9, 9]])]
    pred = np.array([
        [0, 0, 9, 4],      # 50 of 100 pixels, inside: IoU 50/100 = 0.5 (counts at 50: >=)
        [5, 0, 14, 9],     # overlap 5x10 = 50, union 150: IoU 1/3
        [20, 20, 29, 29],  # disjoint: 0
        [0, 0, 9, 9],      # exact: 1
        [0, 0, 9, 9],      # exact match with the image's second GT box: 1
    ])
    labels = np.array([0, 1, 2, 0, 1])
    topk = np.array([[0, 1], [2, 1], [2, 0], [1, 0], [0, 2]])  # top-1 right on images 0 and 2
    res = box_localization_metrics(pred, gt, labels=labels, topk=topk)
    # IoU >= 0.3: images 0, 1, 3, 4; >= 0.5: 0, 3, 4; >= 0.7: 3, 4
    assert res["box_acc_by_iou"] == pytest.approx({"30": 80.0, "50": 60.0, "70": 40.0})
    assert res["mean_box_acc"] == pytest.approx(60.0)
    assert res["gt_known_loc"] == pytest.approx(60.0)
    assert res["mean_iou"] == pytest.approx(100 * (0.5 + 1 / 3 + 0 + 1 + 1) / 5)
    assert res["top1_cls"] == pytest.approx(40.0)      # images 0, 2
    assert res["top5_cls"] == pytest.approx(80.0)      # all but image 4 (label 1 not in [0, 2])
    assert res["top1_loc"] == pytest.approx(20.0)      # image 0 only (image 2's box is wrong)
    assert res["top5_loc"] == pytest.approx(40.0)      # images 0 and 3
    assert res["top1_loc_by_iou"] == pytest.approx({"30": 20.0, "50": 20.0, "70": 0.0})
    no_cls = box_localization_metrics(pred, gt)
    assert no_cls["top1_loc"] is None and no_cls["gt_known_loc"] == pytest.approx(60.0)
    with pytest.raises(ValueError, match="together"):
        box_localization_metrics(pred, gt, labels=labels)
    with pytest.raises(ValueError, match="GT box sets"):
        box_localization_metrics(pred, gt[:3])
    with pytest.raises(ValueError, match="x0 <= x1"):
        box_localization_metrics(np.array([[5, 0, 4, 3]]), gt[:1])
