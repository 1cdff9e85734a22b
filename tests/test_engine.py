"""The training engine end to end on a small synthetic set: train -> evaluate, resume
equivalence, run-directory protection, evaluate CLI and score maps, CREAM plug-in fitting."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from wsol.errors import RunDirError
import torch

from wsol.config import load_config
from wsol.engine.checkpoint import CheckpointError, load_checkpoint, load_method
from wsol.engine.train import train

from conftest import run_cli, tiny_overrides


def tiny_config(data: Path, run_dir: Path, *extra: str) -> dict:
    return load_config(None, tiny_overrides(data, run_dir, *extra))


def test_train_then_evaluate_writes_a_complete_run(synthetic, tmp_path):
    run_dir = tmp_path / "run"
    result = train(tiny_config(synthetic, run_dir), progress=False)
    assert result["finished"] and result["epochs_completed"] == 2
    for name in ("config.yaml", "metrics.csv", "results.json", "checkpoints/last.pt",
                 "checkpoints/best.pt", "eval/test/results.json"):
        assert (run_dir / name).is_file(), name
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[1]["lr"]) == pytest.approx(0.001)  # step decay after epoch 1
    assert "val_MaxBoxAccV2" in rows[0]
    results = json.loads((run_dir / "results.json").read_text())
    for key in ("top1_cls", "top1_loc", "gt_known_loc", "MaxBoxAccV2", "MaxBoxAcc"):
        assert 0.0 <= results[key] <= 100.0, key
    assert results["top1_loc"] <= results["gt_known_loc"] + 1e-9
    assert set(results["max_box_acc_by_iou"]) == {"30", "50", "70"}
    hist = results["score_histograms"]  # fg/bg activation histograms (the paper's Fig. 1)
    pixels = sum(hist["inside_gt_boxes"]) + sum(hist["outside_gt_boxes"])
    assert pixels == results["num_images"] * 64 * 64
    assert sum(hist["inside_gt_boxes"]) > 0 and sum(hist["outside_gt_boxes"]) > 0
    # the resolved config round-trips
    assert load_config(run_dir / "config.yaml")["optim"]["epochs"] == 2


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(synthetic, tmp_path):
    full = tmp_path / "full"
    train(tiny_config(synthetic, full), progress=False)
    parts = tmp_path / "parts"
    first = train(tiny_config(synthetic, parts), progress=False, stop_after_epochs=1)
    assert not first["finished"] and first["epochs_completed"] == 1
    train(tiny_config(synthetic, parts), progress=False, resume=True)
    a = load_checkpoint(full / "checkpoints" / "last.pt")
    b = load_checkpoint(parts / "checkpoints" / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    for key in a["optimizer"]["state"]:
        assert torch.equal(a["optimizer"]["state"][key]["momentum_buffer"],
                           b["optimizer"]["state"][key]["momentum_buffer"])
    rows = list(csv.DictReader(open(parts / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]


def test_existing_run_dir_is_never_overwritten_without_force(synthetic, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    keep = run_dir / "precious.txt"
    keep.write_text("do not lose me")
    with pytest.raises(RunDirError, match="--force"):
        train(tiny_config(synthetic, run_dir), progress=False)
    assert keep.read_text() == "do not lose me"
    proc = run_cli("train", "--run-dir", str(run_dir), "model.name=tiny_cnn",
                   f"data.root={synthetic / 'images'}", f"data.metadata={synthetic / 'metadata'}",
                   check=False)
    assert proc.returncode == 2 and "--force" in proc.stderr
    assert keep.read_text() == "do not lose me"
    with pytest.raises(RunDirError, match="not a wsol run directory"):
        train(tiny_config(synthetic, tmp_path / "fresh"), progress=False, resume=True)


def test_bad_inputs_name_the_culprit(synthetic, tmp_path):
    proc = run_cli("train", "--run-dir", str(tmp_path / "r"), "optim.epochs=two", check=False)
    assert proc.returncode == 2 and "optim.epochs" in proc.stderr
    proc = run_cli("train", "--run-dir", str(tmp_path / "r2"),
                   f"data.root={synthetic / 'images'}", f"data.metadata={tmp_path / 'nowhere'}",
                   check=False)
    assert proc.returncode == 2 and "nowhere" in proc.stderr
    not_ckpt = tmp_path / "x.pt"
    torch.save({"weights": 1}, not_ckpt)
    with pytest.raises(CheckpointError, match="not a wsol checkpoint"):
        load_method(not_ckpt)


def test_evaluate_cli_scoremaps_match_evaluate_maps(synthetic, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_config(synthetic, run_dir, "optim.epochs=1"), progress=False)
    ckpt = run_dir / "checkpoints" / "best.pt"
    maps = tmp_path / "maps"
    out = tmp_path / "eval.json"
    run_cli("evaluate", "--checkpoint", str(ckpt), "--split", "test", "--output", str(out),
            "--save-scoremaps", str(maps), "--no-progress")
    res = json.loads(out.read_text())
    ids = (synthetic / "metadata" / "test" / "image_ids.txt").read_text().split()
    assert all((maps / f"{i}.npy").is_file() for i in ids)
    # the same maps through the stand-alone evaluator give the same numbers
    out2 = tmp_path / "maps.json"
    run_cli("evaluate-maps", "--scoremap-root", str(maps), "--metadata-root",
            str(synthetic / "metadata" / "test"), "--cam-curve-interval", "0.01",
            "--image-size", "64",
            "--output", str(out2))
    res2 = json.loads(out2.read_text())
    assert res2["MaxBoxAccV2"] == pytest.approx(res["MaxBoxAccV2"], abs=1e-9)
    assert res2["max_box_acc_by_iou"] == pytest.approx(res["max_box_acc_by_iou"])
    # refuses to overwrite
    proc = run_cli("evaluate", "--checkpoint", str(ckpt), "--output", str(out), check=False)
    assert proc.returncode == 2 and "--force" in proc.stderr


def test_cream_fit_on_a_cam_checkpoint(synthetic, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_config(synthetic, run_dir, "optim.epochs=1"), progress=False)
    cream_ckpt = tmp_path / "cream.pt"
    run_cli("cream", "fit", "--checkpoint", str(run_dir / "checkpoints" / "best.pt"),
            "--out", str(cream_ckpt), "--no-progress", "method.iterations=2")
    method, info = load_method(cream_ckpt)
    assert info["method"] == "cream" and method.iterations == 2
    assert bool((method.update_count > 0).all())  # every class got embeddings
    cam, _ = load_method(run_dir / "checkpoints" / "best.pt")
    for key, value in cam.backbone.state_dict().items():
        assert torch.equal(value, method.backbone.state_dict()[key]), key
    out = tmp_path / "calibrated.json"
    run_cli("evaluate", "--checkpoint", str(cream_ckpt), "--output", str(out), "--no-progress",
            "method.stage=calibrated")
    assert 0.0 <= json.loads(out.read_text())["MaxBoxAccV2"] <= 100.0


def test_evaluate_cli_on_a_mask_split_reports_pxap(synthetic, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_config(synthetic, run_dir, "optim.epochs=1", "data.test_splits=[]"),
          progress=False)
    out = tmp_path / "masks.json"
    proc = run_cli("evaluate", "--checkpoint", str(run_dir / "checkpoints" / "best.pt"),
                   "--split", "masks:test", "--output", str(out), "--no-progress",
                   f"data.mask_metadata={synthetic / 'metadata_masks'}",
                   f"data.mask_root={synthetic / 'masks'}")
    res = json.loads(out.read_text())
    assert 0.0 <= res["PxAP"] <= 100.0 and 0.0 <= res["pIoU"] <= 100.0
    assert "PxAP" in proc.stdout and res["num_images"] == 18
