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


def _npy_header_only(path: Path, shape: tuple[int, ...], dtype: str = "<f8") -> None:
    """A valid .npy header announcing ``shape`` followed by (almost) no data."""
    from numpy.lib import format as npy_format

    with open(path, "wb") as f:
        npy_format.write_array_header_1_0(
            f, {"descr": dtype, "fortran_order": False, "shape": shape})
        f.write(b"\0" * 64)


def test_unsafe_or_wrong_npy_files_are_refused_before_loading(boxes, tmp_path):
    import pickle

    root, _, _, _ = boxes
    bad = tmp_path / "maps"
    ids = _write_maps(root / "scoremaps.npz", bad)
    good = np.load(bad / f"{ids[0]}.npy")
    with open(bad / f"{ids[1]}.npy", "wb") as f:
        np.savez(f, good)  # an .npz archive under an .npy name
    (bad / f"{ids[2]}.npy").write_bytes(pickle.dumps(good))  # a pickle, not an .npy
    np.save(bad / f"{ids[3]}.npy", np.array([good], dtype=object).reshape(-1)[:1],
            allow_pickle=True)  # an object array (pickled payload)
    _npy_header_only(bad / f"{ids[4]}.npy", (100_000, 100_000))  # 80 GB announced, 64 B there
    np.save(bad / f"{ids[5]}.npy", (good * 255).astype(np.uint8))
    np.save(bad / f"{ids[6]}.npy", np.asfortranarray(good))  # valid: Fortran order is fine
    out = tmp_path / "results.json"
    proc = _wsol("--scoremap-root", bad, "--metadata-root", root / "metadata", "--output", out)
    assert proc.returncode == 2, proc.stderr
    assert "5 of 120 score maps" in proc.stderr
    for image_id, what in ((ids[1], ".npz archive"), (ids[2], "a pickle"),
                           (ids[3], "Python objects"), (ids[4], "shape (100000, 100000)"),
                           (ids[5], "dtype uint8")):
        line = next(x for x in proc.stderr.splitlines() if f"{image_id}: " in x)
        assert what in line and f"{image_id}.npy" in line, line
    assert ids[6] not in proc.stderr
    assert not out.exists()


def test_thread_counts_give_identical_results(boxes, tmp_path):
    root, maps, _, _ = boxes
    outs = []
    for threads in ("1", "3"):
        out = tmp_path / f"t{threads}.json"
        proc = _wsol("--scoremap-root", maps, "--metadata-root", root / "metadata",
                     "--threads", threads, "--io-threads", threads, "--output", out)
        assert proc.returncode == 0, proc.stderr
        res = json.loads(out.read_text())
        res.pop("arguments")
        outs.append(res)
    assert outs[0] == outs[1]
    proc = _wsol("--scoremap-root", maps, "--metadata-root", root / "metadata", "--threads", "0",
                 "--output", tmp_path / "x.json")
    assert proc.returncode == 2 and "--threads must be >= 1" in proc.stderr


def test_help_imports_only_its_own_command():
    code = ("import sys\nfrom wsol.cli import main\ntry:\n    main(['evaluate-maps', '--help'])\n"
            "except SystemExit:\n    pass\nprint(' '.join(sorted(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=True)
    imported = set(proc.stdout.splitlines()[-1].split())
    assert "wsol.commands.evaluate_maps" in imported
    assert not {"torch", "cv2", "numpy", "wsol.commands.train", "wsol.commands.report"} & imported
