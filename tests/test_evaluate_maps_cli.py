"""``python -m wsol evaluate-maps`` as a real process on the parity fixtures, written as .npy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_path

REPO = Path(__file__).resolve().parents[1]


def _wsol(*args: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.run([sys.executable, "-m", "wsol", "evaluate-maps", *map(str, args)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                          check=False)


def _write_maps(npz_path: Path, root: Path) -> list[str]:
    with np.load(npz_path) as npz:
        for image_id in npz.files:
            path = root / f"{image_id}.npy"  # wsolevaluation layout: the id keeps its subdirs
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, npz[image_id].astype(np.float64))
        return list(npz.files)


@pytest.fixture(scope="module")
def boxes(tmp_path_factory):
    root = shared_path("fixtures", "metric-parity", "boxes")
    maps = tmp_path_factory.mktemp("boxmaps")
    _write_maps(root / "scoremaps.npz", maps)
    reference = json.loads((root / "reference.json").read_text())["results"]
    lines = (root / "metadata" / "test" / "class_labels.txt").read_text().split()
    labels = dict(line.split(",") for line in lines)
    return root, maps, reference, {k: int(v) for k, v in labels.items()}


def test_boxes_v2_with_top1_predictions(boxes, tmp_path):
    root, maps, reference, labels = boxes
    preds = tmp_path / "preds.csv"
    preds.write_text("".join(f"{i},{c}\n" for i, c in labels.items()))  # every top-1 right
    out = tmp_path / "results.json"
    proc = _wsol("--scoremap-root", maps, "--metadata-root", root / "metadata",  # dir with test/
                 "--predictions", preds, "--output", out)
    assert proc.returncode == 0, proc.stderr
    assert "MaxBoxAccV2" in proc.stdout and "53.056" in proc.stdout
    res = json.loads(out.read_text())
    (ref,) = [r for r in reference if r["cam_curve_interval"] == 0.01 and r["multi_contour_eval"]]
    (ref_v1,) = [r for r in reference
                 if r["cam_curve_interval"] == 0.01 and not r["multi_contour_eval"]]
    assert res["MaxBoxAccV2"] == ref["MaxBoxAccV2"]
    assert res["MaxBoxAcc"] == ref_v1["MaxBoxAcc"]
    assert res["max_box_acc_by_iou"] == ref["max_box_acc"]
    for delta, counts in ref["num_correct"].items():
        assert res["box_acc_curves"][delta] == (np.asarray(counts) * 100.0 / 120).tolist()
    # With every top-1 class right, Top-1 Loc is GT-known Loc.
    assert res["top1_loc"] == res["gt_known_loc"] == ref["max_box_acc"]["50"]
    assert res["top1_acc"] == 100.0 and res["settings"]["cam_curve_interval"] == 0.01
    # Refuses to overwrite without --force.
    again = _wsol("--scoremap-root", maps, "--metadata-root", root / "metadata", "--output", out)
    assert again.returncode == 2 and "--force" in again.stderr


def test_boxes_v1_with_top5_only_predictions(boxes, tmp_path):
    root, maps, reference, labels = boxes
    preds = tmp_path / "preds.csv"  # the GT class fifth: Top-1 Loc 0, Top-5 Loc = GT-known
    preds.write_text("".join(f"{i},{c + 1},{c + 2},{c + 3},{c + 4},{c}\n"
                             for i, c in labels.items()))
    out = tmp_path / "v1.json"
    out.write_text("old")
    proc = _wsol("--scoremap-root", maps, "--metadata-root", root / "metadata" / "test",
                 "--largest-contour", "--predictions", preds,
                 "--output", out, "--force")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    (ref,) = [r for r in reference
              if r["cam_curve_interval"] == 0.01 and not r["multi_contour_eval"]]
    assert res["max_box_acc_by_iou"] == ref["max_box_acc"]
    assert res["MaxBoxAcc"] == ref["MaxBoxAcc"] and res["settings"]["multi_contour"] is False
    for delta, counts in ref["num_correct"].items():
        assert res["box_acc_curves"][delta] == (np.asarray(counts) * 100.0 / 120).tolist()
    assert res["top1_loc"] == 0.0 and res["top5_loc"] == ref["max_box_acc"]["50"]


def test_masks(shared, tmp_path):
    root = shared("fixtures", "metric-parity", "masks")
    _write_maps(root / "scoremaps.npz", tmp_path / "maps")
    (ref,) = [r for r in json.loads((root / "reference.json").read_text())["results"]
              if r["cam_curve_interval"] == 0.001]
    out = tmp_path / "masks.json"
    proc = _wsol("--scoremap-root", tmp_path / "maps", "--metadata-root", root / "metadata",
                 "--mask-root", root / "masks", "--cam-curve-interval", "0.001", "--output", out)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert res["PxAP"] == pytest.approx(ref["PxAP"], abs=1e-9)
    assert 0 < res["pIoU"] < 100 and len(res["pr_curve"]["recall"]) == 1002


def test_bad_maps_are_named_and_nothing_is_written(boxes, tmp_path):
    root, maps, _, _ = boxes
    bad = tmp_path / "maps"
    ids = _write_maps(root / "scoremaps.npz", bad)
    nan_map = np.load(bad / f"{ids[3]}.npy")
    nan_map[5, 5] = np.nan
    np.save(bad / f"{ids[3]}.npy", nan_map)
    np.save(bad / f"{ids[7]}.npy", np.zeros((100, 100)))
    (bad / f"{ids[11]}.npy").unlink()
    out = tmp_path / "results.json"
    proc = _wsol("--scoremap-root", bad, "--metadata-root", root / "metadata", "--output", out)
    assert proc.returncode == 2
    assert "3 of 120 score maps" in proc.stderr
    for image_id, what in ((ids[3], "NaN"), (ids[7], "shape (100, 100)"), (ids[11], "missing")):
        assert f"{image_id}: " in proc.stderr and what in proc.stderr
    assert not out.exists()
    preds = tmp_path / "preds.csv"
    preds.write_text(f"{ids[0]},1\nnot/an/id.jpg,2\n")
    proc = _wsol("--scoremap-root", maps, "--metadata-root", root / "metadata",
                 "--predictions", preds, "--output", out)
    assert proc.returncode == 2 and f"{preds}:2: unknown image id" in proc.stderr
    assert not out.exists()
