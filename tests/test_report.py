"""``wsol report``: the self-contained HTML page, rendered in headless Chromium when present."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wsol.cli import main
from wsol.viz.report import load_run, metrics_table, unique_names
from wsol.viz.run_grid import fixed_sample

IMAGE_SIZE = 32


def _make_data(root: Path) -> tuple[Path, Path]:
    """Five 48x40 images (a bright square on noise) and a box-format test split."""
    from wsol.data.metadata import Metadata, write_metadata

    rng = np.random.default_rng(0)
    ids, labels, sizes, boxes = [], {}, {}, {}
    for k in range(5):
        image = rng.integers(0, 60, (40, 48, 3), dtype=np.uint8)
        image[8 + k:24 + k, 10:30] = 230
        image_id = f"c{k % 3}/img{k}.png"
        (root / "images" / f"c{k % 3}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "images" / image_id)
        ids.append(image_id)
        labels[image_id] = k % 3
        sizes[image_id] = (48, 40)
        boxes[image_id] = [(10, 8 + k, 29, 23 + k)]
    meta = Metadata(image_ids=ids, class_labels=labels, image_sizes=sizes, boxes=boxes)
    write_metadata(meta, root / "metadata" / "test")
    return root / "images", root / "metadata"


def _make_run(run_dir: Path, method_name: str, images: Path, metadata: Path, peak: float,
              with_results: bool = True) -> Path:
    from wsol.config import dump_config, load_config
    from wsol.engine.build import build_from_config
    from wsol.engine.checkpoint import save_checkpoint

    config = load_config(overrides=[
        "model.name=tiny_cnn", "model.width=4", f"method.name={method_name}",
        f"data.root={images}", f"data.metadata={metadata}", f"data.image_size={IMAGE_SIZE}"])
    torch.manual_seed(0)
    method = build_from_config(config, num_classes=3, pretrained=False)
    save_checkpoint(run_dir / "checkpoints" / "best.pt", method, config=config)
    (run_dir / "config.yaml").write_text(dump_config(config))
    (run_dir / "metrics.csv").write_text(
        "epoch,train_loss,val_MaxBoxAccV2\n1,1.2,40.0\n2,0.9,45.5\n3,0.7,47.25\n")
    if with_results:
        t = np.arange(0, 1, 0.01)
        curve = peak * np.exp(-((t - 0.3) ** 2) / 0.05)
        results = {
            "top1_cls": 80.0, "top5_cls": 99.0, "MaxBoxAccV2": peak - 10, "MaxBoxAcc": peak - 5,
            "max_box_acc_by_iou": {"30": peak, "50": peak - 5, "70": peak - 25},
            "best_threshold_by_iou": {"50": 0.3}, "thresholds": t.tolist(),
            "box_acc_curves": {"30": curve.tolist(), "50": (curve * 0.9).tolist(),
                               "70": (curve * 0.5).tolist()},
            "top1_loc": peak - 20, "gt_known_loc": peak - 5,
        }
        (run_dir / "results.json").write_text(json.dumps(results))
    return run_dir


@pytest.fixture
def two_runs(tmp_path):
    images, metadata = _make_data(tmp_path / "data")
    cam = _make_run(tmp_path / "runs" / "cub_cam", "cam", images, metadata, peak=70.0)
    cream = _make_run(tmp_path / "runs" / "cub_cream", "cream", images, metadata, peak=80.0)
    return cam, cream


def _embedded_pngs(page: str) -> list[np.ndarray]:
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))
            for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_report_page(tmp_path, two_runs, capsys):
    cam, cream = two_runs
    out = tmp_path / "report.html"
    assert main(["report", str(cam), str(cream), "--out", str(out), "--grid-images", "3"]) == 0
    page = out.read_text()
    assert '<table id="metrics">' in page
    assert "cub_cam" in page and "cub_cream" in page
    # MaxBoxAccV2 = 60 (CAM) and 70 (CREAM, the best: bold); Top-1 Cls ties at 80: not bold.
    assert "<td>60.00</td>" in page and "<td><b>70.00</b></td>" in page
    assert page.count("<td>80.00</td><td>99.00</td>") == 2  # Top-1 / Top-5 Cls of both runs
    # Self-contained: no external resources, every image inline.
    assert not re.search(r'(src|href)="(?!data:)', page)
    pngs = _embedded_pngs(page)
    assert len(pngs) == 3  # BoxAcc curves, training curves, the grid
    assert all(p.std() > 5 for p in pngs)
    grid = pngs[-1]
    # Grid: 3 image rows x (image, cub_cam, cub_cream, cub_cream (cam)) columns: wider than tall.
    assert grid.shape[1] > grid.shape[0]
    assert "data unavailable" not in page and "no grid" not in page

    # Refuse to overwrite without --force.
    assert main(["report", str(cam), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["report", str(cam), "--out", str(out), "--force", "--grid-images", "0"]) == 0
    assert len(_embedded_pngs(out.read_text())) == 2


def test_report_without_data_or_results(tmp_path):
    _, metadata = _make_data(tmp_path / "data")
    run = _make_run(tmp_path / "run", "cam", tmp_path / "missing", metadata, 50.0,
                    with_results=False)
    out = tmp_path / "r.html"
    assert main(["report", str(run), "--out", str(out), "--grid-images", "2"]) == 0
    page = out.read_text()
    assert "no results.json" in page and "data unavailable" in page
    assert "missing does not exist" in page
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty), "--out", str(tmp_path / "e.html")]) == 2


def test_metrics_table_and_names(tmp_path, two_runs):
    cam, cream = two_runs
    runs = [load_run(cam), load_run(cream)]
    table = metrics_table(runs)
    assert table.count("<tr>") == 3
    assert "PxAP" not in table  # no run has it: no column
    assert "0.300" in table  # best threshold
    a, b = tmp_path / "x" / "run", tmp_path / "y" / "run"
    assert unique_names([a, b]) == ["x/run", "y/run"]
    assert fixed_sample([f"i{k}" for k in range(9)], 3) == ["i0", "i4", "i8"]
    assert fixed_sample(["a", "b"], 5) == ["a", "b"]


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("headless Chromium is not installed (apt-get install -y chromium)")
    return exe


def test_report_renders_in_headless_chromium(tmp_path, two_runs):
    exe = _chromium()
    cam, cream = two_runs
    out = tmp_path / "report.html"
    assert main(["report", str(cam), str(cream), "--out", str(out), "--grid-images", "2"]) == 0
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "shot.png"
    subprocess.run([exe, *flags, f"--screenshot={shot}", "--window-size=1200,1600",
                    out.as_uri()], capture_output=True, timeout=90, check=True)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (1600, 1200)
    assert pixels.var() > 100  # not a blank page
    dom = subprocess.run([exe, *flags, "--dump-dom", out.as_uri()], capture_output=True,
                         text=True, timeout=90, check=True).stdout
    assert '<table id="metrics">' in dom
    rows = re.findall(r"<tr>.*?</tr>", dom.split('<table id="metrics">')[1].split("</table>")[0])
    assert len(rows) == 3 and "cub_cream" in rows[2]
    assert dom.count("<img") == 3
