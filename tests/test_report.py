"""``wsol report``: the self-contained HTML page, rendered in headless Chromium when present."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wsol.cli import main
from wsol.viz.report import collect_rows, load_run, metrics_table, relative_paths, unique_names
from wsol.viz.run_grid import build_run_grid, fixed_sample

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


CLASS_NAMES = ["disk", "square", "triangle"]


def _results(peak: float, split: str = "test", threshold: float = 0.3) -> dict:
    t = np.arange(0, 1, 0.01)
    curve = peak * np.exp(-((t - 0.3) ** 2) / 0.05)
    return {
        "top1_cls": 80.0, "top5_cls": 99.0, "MaxBoxAccV2": peak - 10, "MaxBoxAcc": peak - 5,
        "max_box_acc_by_iou": {"30": peak, "50": peak - 5, "70": peak - 25},
        "best_threshold_by_iou": {"50": threshold}, "thresholds": t.tolist(),
        "box_acc_curves": {"30": curve.tolist(), "50": (curve * 0.9).tolist(),
                           "70": (curve * 0.5).tolist()},
        "top1_loc": peak - 20, "top5_loc": peak - 6, "gt_known_loc": peak - 5, "num_images": 5,
        "split": split, "eval_type": "prob", "normalization": "minmax",
        "settings": {"cam_curve_interval": 0.01, "image_size": IMAGE_SIZE,
                     "multi_contour": True},
    }


def _make_run(run_dir: Path, method_name: str, images: Path, metadata: Path, peak: float,
              with_results: bool = True, num_classes: int = 3) -> Path:
    from wsol.config import dump_config, load_config
    from wsol.engine.build import build_from_config
    from wsol.engine.checkpoint import save_checkpoint

    config = load_config(overrides=[
        "model.name=tiny_cnn", "model.width=4", f"method.name={method_name}",
        f"data.root={images}", f"data.metadata={metadata}", f"data.image_size={IMAGE_SIZE}"])
    torch.manual_seed(0)
    names = (CLASS_NAMES + [f"extra{k}" for k in range(num_classes)])[:num_classes]
    method = build_from_config(config, num_classes=num_classes, pretrained=False)
    save_checkpoint(run_dir / "checkpoints" / "best.pt", method, config=config,
                    class_names=names, epoch=2)
    (run_dir / "config.yaml").write_text(dump_config(config))
    (run_dir / "metrics.csv").write_text(
        "epoch,train_loss,train_top1_cls,val_top1_cls,val_MaxBoxAccV2\n"
        "1,1.2,40,30,40.0\n2,0.9,55,45,45.5\n3,0.7,60,44,47.25\n")
    if with_results:
        results = _results(peak)
        # the final evaluation's copy of the test results (not a row of its own) ...
        (run_dir / "eval" / "test").mkdir(parents=True)
        (run_dir / "eval" / "test" / "results.json").write_text(json.dumps(results))
        # ... and the summary with the selection (train.py final_evaluation)
        results.update({"checkpoint": str(run_dir / "checkpoints" / "best.pt"), "epoch": 2,
                        "selected_on": "val", "select_metric": "MaxBoxAccV2",
                        "method": method_name, "model": "tiny_cnn"})
        (run_dir / "results.json").write_text(json.dumps(results))
    return run_dir


@pytest.fixture
def two_runs(tmp_path):
    images, metadata = _make_data(tmp_path / "data")
    cam = _make_run(tmp_path / "runs" / "cub_cam", "cam", images, metadata, peak=70.0)
    cream = _make_run(tmp_path / "runs" / "cub_cream", "cream", images, metadata, peak=80.0)
    return cam, cream


def _embedded_pngs(page: str) -> list[np.ndarray]:
    """Every inline image of the page (PNG figures, the JPEG grid) as an RGB array."""
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))
            for data in re.findall(r'src="data:image/(?:png|jpeg);base64,([A-Za-z0-9+/=]+)"',
                                   page)]


def _table(page: str) -> str:
    return page.split('<table id="metrics">')[1].split("</table>")[0]


def test_report_page(tmp_path, two_runs, capsys):
    cam, cream = two_runs
    out = tmp_path / "report.html"
    assert main(["report", str(cam), str(cream), "--out", str(out), "--grid-images", "3"]) == 0
    page = out.read_text()
    table = _table(page)
    # One row per results file: the eval/test/results.json copies of the training result are
    # not rows of their own.
    assert table.count("<tr>") == 3
    assert "cub_cam" in table and "cub_cream" in table
    # MaxBoxAccV2 = 60 (CAM) and 70 (CREAM, the best: bold); Top-1 Cls ties at 80: not bold.
    assert "<td>60.00</td>" in table and "<td><b>70.00</b></td>" in table
    assert table.count("<td>80.00</td>") == 2
    # The checkpoint's selection, the maps and the number of test images.
    assert table.count("epoch 2 of 3, best val MaxBoxAccV2") == 2
    assert "<td>test (5)</td>" in table
    assert "CREAM (stage fused)" in table and "iterations=2" in table
    # 3 classes: Top-5 Cls / Loc are trivial and left out, with a caption saying so.
    assert "Top-5" not in table and "99.00" not in table
    assert "Top-5 Cls / Top-5 Loc omitted: 3 classes" in page
    # Self-contained: no external resources (in-page anchors only), every image inline.
    assert not re.search(r'(src|href)="(?!data:|#)', page)
    pngs = _embedded_pngs(page)
    assert len(pngs) == 3  # BoxAcc curves, training curves, the grid
    assert all(p.std() > 5 for p in pngs)
    grid = pngs[-1]
    # Grid: 3 image rows x (image, cub_cam, cub_cream, cub_cream (stage cam)): wider than tall.
    assert grid.shape[1] > grid.shape[0]
    assert "data unavailable" not in page and "no grid" not in page
    assert "3 evenly spread test images" in page and "ground truth" in page

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
    assert "no results.json" in page
    # No results row, so no grid column either; the training curves are still there.
    assert 'id="training"' in page
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty), "--out", str(tmp_path / "e.html")]) == 2
    assert main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "e.html")]) == 2
    not_results = tmp_path / "x.json"
    not_results.write_text('{"hello": 1}')
    assert main(["report", str(not_results), "--out", str(tmp_path / "e.html")]) == 2


def test_grid_notes_missing_images(tmp_path):
    _, metadata = _make_data(tmp_path / "data")
    run = _make_run(tmp_path / "run", "cam", tmp_path / "missing", metadata, 50.0)
    out = tmp_path / "r.html"
    assert main(["report", str(run), "--out", str(out), "--grid-images", "2"]) == 0
    page = out.read_text()
    assert "data unavailable" in page and "missing does not exist" in page


def _evaluation(run: Path, name: str, peak: float, overrides: list[str], **extra) -> Path:
    """A `wsol evaluate` result file as commands/evaluate.py writes it."""
    results = _results(peak, threshold=0.41000000000000003)
    results.update({"checkpoint": str(run / "checkpoints" / "best.pt"), "epoch": 2,
                    "method": "cream", "model": "tiny_cnn", "overrides": overrides, **extra})
    path = run / "eval" / "test" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results))
    return path


def test_evaluate_results_and_plugin_rows(tmp_path, two_runs):
    from wsol.engine.checkpoint import load_method, save_checkpoint

    cam, cream = two_runs
    _evaluation(cream, "results_calibrated.json", 90.0, ["method.stage=calibrated"])
    # A plug-in `cream fit` checkpoint outside any run directory, evaluated with
    # --output plugin/results_test.json: its config still names the CAM run it came from.
    method, info = load_method(cam / "checkpoints" / "best.pt")
    from wsol.methods.cream import CREAM

    plugin = tmp_path / "plugin"
    config = {**info["config"], "method": {"name": "cream"}, "run_dir": str(cam)}
    save_checkpoint(plugin / "cream.pt", CREAM.from_cam(method.backbone), config=config,
                    class_names=info["class_names"], epoch=2)
    plugin_results = _results(75.0)
    plugin_results.update({"checkpoint": str(plugin / "cream.pt"), "epoch": 2,
                           "method": "cream", "overrides": []})  # no "model" key
    (plugin / "results_test.json").write_text(json.dumps(plugin_results))

    out = tmp_path / "out" / "report.html"
    assert main(["report", str(cam), str(cream), str(plugin / "results_test.json"), "--out",
                 str(out), "--grid-images", "2"]) == 0
    page = out.read_text()
    table = _table(page)
    rows = re.findall(r"<tr>.*?</tr>", table)
    assert len(rows) == 1 + 4  # header, CAM, CREAM, CREAM calibrated, plug-in
    calibrated = next(r for r in rows if "stage=calibrated" in r)
    assert "cub_cream · stage=calibrated" in calibrated
    assert "CREAM (stage calibrated)" in calibrated and ">evaluate<" in calibrated
    assert "<b>80.00</b>" in calibrated  # its MaxBoxAccV2 (90 - 10) is the best
    plug = rows[-1]
    assert "plugin" in plug and "CREAM plug-in (stage fused)" in plug
    assert "cream fit + evaluate" in plug and "tiny_cnn" in plug and ">?<" not in plug
    # Floats are printed rounded.
    assert "0.410" in page and "0.41000000000000003" not in page
    # The grid has a column per row with a checkpoint (+ CREAM's own CAM).
    assert "plug-in" in page and "no grid column" not in page
    # Paths relative to the report: no absolute tmp path anywhere on the page.
    assert str(tmp_path) not in page
    assert "../plugin/results_test.json" in page
    assert "data.root" not in page or "root: ../data/images" in page


def test_top5_marked_when_some_rows_have_few_classes(tmp_path):
    images, metadata = _make_data(tmp_path / "data")
    few = _make_run(tmp_path / "runs" / "few", "cam", images, metadata, 60.0, num_classes=3)
    many = _make_run(tmp_path / "runs" / "many", "cam", images, metadata, 60.0, num_classes=8)
    rows = re.findall(r"<tr>.*?</tr>", metrics_table(collect_rows([few, many])[1]))
    assert "Top-5 Cls" in rows[0]
    assert "n/a&dagger;" in rows[1] and "99.00" not in rows[1]
    assert "n/a" not in rows[2] and "99.00" in rows[2]


def test_metrics_table_and_names(tmp_path, two_runs):
    cam, cream = two_runs
    runs = [load_run(cam), load_run(cream)]
    table = metrics_table([r for run in runs for r in run.rows])
    assert table.count("<tr>") == 3
    assert "PxAP" not in table  # no run has it: no column
    assert "0.300" in table  # best threshold
    a, b = tmp_path / "x" / "run", tmp_path / "y" / "run"
    assert unique_names([a, b]) == ["x/run", "y/run"]
    assert unique_names([a, tmp_path / "fit" / "results_test.json"]) == ["run", "fit"]
    assert fixed_sample([f"i{k}" for k in range(9)], 3) == ["i0", "i4", "i8"]
    assert fixed_sample(["a", "b"], 5) == ["a", "b"]


def test_config_dump_is_relative_and_rounded(tmp_path):
    base = tmp_path / "docs"
    config = {"data": {"root": str(tmp_path / "data" / "images")},
              "method": {"tau": 0.34600000000000003}, "x": ["/abs/p", 1]}
    rel = relative_paths(config, base)
    assert rel == {"data": {"root": "../data/images"}, "method": {"tau": 0.346},
                   "x": [os.path.relpath("/abs/p", base), 1]}


def _grid_rows(fig) -> list[tuple[str, list[float]]]:
    """(row title, IoU of each map column) read back from the grid's cell captions."""
    n_cols = sum(1 for ax in fig.axes if ax.get_title())
    cells = [ax for ax in fig.axes if ax.images]  # the colour bar is not a cell
    assert len(cells) % n_cols == 0
    out = []
    for start in range(0, len(cells), n_cols):
        row = cells[start:start + n_cols]
        ious = [float(m.group(1)) for ax in row[1:]
                if (m := re.search(r"IoU (\d\.\d+)", ax.get_xlabel()))]
        out.append((row[0].get_ylabel(), ious))
    return out


@pytest.mark.slow
def test_grid_selects_worst_and_best_by_iou(tmp_path, two_runs):
    cam, cream = two_runs
    _, rows = collect_rows([cam, cream])
    picked = {}
    for select in ("worst", "best"):
        fig, notes, how = build_run_grid(rows, 2, select=select)
        assert fig is not None and not notes
        assert ("lowest" if select == "worst" else "highest") in how
        picked[select] = _grid_rows(fig)
        # every map column has a caption with a class name from the checkpoint
        captions = [ax.get_xlabel() for ax in fig.axes if "IoU" in ax.get_xlabel()]
        assert captions and all(any(n in c for n in CLASS_NAMES) for c in captions)
        titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
        assert any("CREAM (stage cam)" in t for t in titles)
        assert fig.legends  # GT / prediction legend
    assert all(len(ious) == 3 for v in picked.values() for _, ious in v)
    mean = {k: [np.mean(ious) for _, ious in v] for k, v in picked.items()}
    assert mean["worst"] == sorted(mean["worst"])
    assert mean["best"] == sorted(mean["best"], reverse=True)
    assert max(mean["worst"]) <= min(mean["best"])
    with pytest.raises(ValueError, match="grid selection"):
        build_run_grid(rows, 2, select="random")


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("headless Chromium is not installed (apt-get install -y chromium)")
    return exe


def test_report_renders_in_headless_chromium(tmp_path, two_runs):
    exe = _chromium()
    cam, cream = two_runs
    _evaluation(cream, "results_calibrated.json", 90.0, ["method.stage=calibrated"])
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
    rows = re.findall(r"<tr>.*?</tr>", _table(dom))
    assert len(rows) == 4 and "cub_cream" in rows[2]
    assert "CREAM (stage calibrated)" in rows[3] and "epoch 2 of 3, best val" in rows[3]
    # The sections, each with its figure: BoxAcc curves, training curves, grid (+ legend).
    for anchor in ("metrics-section", "boxacc", "training", "grid", "runs"):
        assert f'id="{anchor}"' in dom, anchor
    assert dom.count("<img") == 3
    assert "ground truth" in dom and "prediction" in dom and "Protocol:" in dom


def _make_example_module():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "docs" / "make_example.py"
    spec = importlib.util.spec_from_file_location("make_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_example_screenshot_and_bad_runs(tmp_path, two_runs):
    make_example = _make_example_module()
    with pytest.raises(SystemExit, match="no checkpoints/best.pt"):
        make_example.best_checkpoint(tmp_path)
    with pytest.raises(SystemExit):  # --bcam is required
        make_example.main(["--cam", str(two_runs[0]), "--cream", str(two_runs[1])])
    _chromium()
    out = tmp_path / "report.html"
    assert main(["report", *map(str, two_runs), "--out", str(out), "--grid-images", "0"]) == 0
    png = make_example.screenshot(out, tmp_path / "report.png", width=900)
    image = Image.open(png)
    # the whole page, white space below it cropped, in 256 colours
    assert image.size[0] == 900 and 600 < image.size[1] < 6000 and image.mode == "P"
    rows = np.asarray(image.convert("L"))
    assert (rows[-60:] < 250).any() and (rows[-30:] >= 250).all()
