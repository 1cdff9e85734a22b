"""Overlays, curves, histograms and the method grid (wsol.viz)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from wsol.viz import colorize_map, draw_box, draw_label, overlay_map, render_overlay
from wsol.viz._figure import figure_png, save_png
from wsol.viz.curves import BoxAccCurves, plot_box_acc_curves, plot_pr_curves, pr_curve_from_results
from wsol.viz.grid import plot_method_grid
from wsol.viz.histograms import (
    ActivationHistograms,
    activation_histograms,
    boxes_to_mask,
    plot_activation_histograms,
)


def _png_array(png: bytes) -> np.ndarray:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


# ---- overlays -------------------------------------------------------------------------------

def test_jet_colormap_runs_from_blue_to_red():
    rgb = colorize_map(np.array([[0.0, 0.5, 1.0]]), "jet")[0].astype(int)
    # jet: 0 is dark blue, 1 is dark red, 0.5 has green as the strongest channel.
    assert rgb[0, 2] > 100 and rgb[0, 0] == 0 and rgb[0, 1] == 0
    assert rgb[2, 0] > 100 and rgb[2, 1] == 0 and rgb[2, 2] == 0
    assert rgb[1, 1] == rgb[1].max()
    # turbo (the default): dark blue-violet at 0, dark red at 1, green-yellow in the middle.
    turbo = colorize_map(np.array([[0.0, 0.5, 1.0]]))[0].astype(int)
    assert turbo[0, 2] > turbo[0, 1] and turbo[0, 2] > 50
    assert turbo[2, 0] > 100 and turbo[2, 0] > 3 * turbo[2, 2]
    assert turbo[1, 1] == turbo[1].max()
    with pytest.raises(ValueError, match="colormap"):
        colorize_map(np.zeros((2, 2)), "rainbow")


def test_overlay_weighted_by_the_map_keeps_low_regions_visible():
    image = np.full((10, 10, 3), 77, np.uint8)
    score = np.zeros((10, 10), np.float32)
    score[:, 5:] = 1.0
    score[:, 4] = 0.5
    out = overlay_map(image, score, alpha=0.8).astype(int)
    assert np.array_equal(out[:, :4], image[:, :4])  # map 0: the image itself
    heat = colorize_map(score).astype(int)
    # map 1: 0.8 colour + 0.2 image; map 0.5: 0.4 colour + 0.6 image
    assert np.all(np.abs(out[0, 7] - (0.2 * 77 + 0.8 * heat[0, 7])) <= 1)
    assert np.all(np.abs(out[0, 4] - (0.6 * 77 + 0.4 * heat[0, 4])) <= 1)
    with pytest.raises(ValueError, match="weighting"):
        overlay_map(image, score, weighting="max")


def test_overlay_blend_extremes_and_resize():
    image = np.full((20, 30, 3), 77, np.uint8)
    small = np.zeros((4, 6), np.float32)
    small[1:3, 2:4] = 1.0
    assert np.array_equal(overlay_map(image, small, alpha=0.0), image)
    full = overlay_map(image, small, alpha=1.0, colormap="jet", weighting="uniform")
    assert full.shape == image.shape
    # alpha = 1: the pure colormap; the map's centre (value 1) is red, a corner (0) is blue.
    assert full[10, 15, 0] > full[10, 15, 2]
    assert full[0, 0, 2] > full[0, 0, 0]
    half = overlay_map(image, np.zeros((20, 30), np.float32), alpha=0.5,
                       weighting="uniform").astype(int)
    blue = colorize_map(np.zeros((1, 1)))[0, 0].astype(int)
    assert np.all(np.abs(half[5, 5] - (77 + blue) / 2) <= 1)


def test_draw_box_is_inclusive_and_in_place():
    image = np.zeros((20, 20, 3), np.uint8)
    out = draw_box(image, (3, 4, 10, 12), color=(0, 255, 0), thickness=1)
    assert out is image
    assert (image[4, 3:11, 1] == 255).all() and (image[12, 3:11, 1] == 255).all()
    assert (image[4:13, 3, 1] == 255).all() and (image[4:13, 10, 1] == 255).all()
    assert image[3, 5, 1] == 0 and image[13, 5, 1] == 0 and image[8, 6, 1] == 0
    assert image[:, :, [0, 2]].max() == 0


def test_label_stays_inside_the_image():
    image = np.zeros((40, 60, 3), np.uint8)
    draw_label(image, "Bécasseau 0.97", anchor=(55, 0))  # non-ASCII, at the right edge, top
    assert image[:, :, 1].max() == 255  # the green label background was drawn
    cols = np.where(image[:, :, 1].max(axis=0) == 255)[0]
    assert cols.min() >= 0 and cols.max() < 60


def _label_height(side: int) -> int:
    image = np.zeros((side, side, 3), np.uint8)
    draw_label(image, "Laysan Albatross 0.93", anchor=(side // 4, side // 2))
    return int((image[:, :, 1] == 255).any(axis=1).sum())


def test_label_font_scales_with_the_image():
    from wsol.viz.overlay import label_font_size

    assert label_font_size((100, 300)) == 11 and label_font_size((1000, 1500)) == 45
    small, large = _label_height(200), _label_height(1000)
    assert 11 <= small < 25 and large > 3.5 * small


def test_label_keeps_accents_and_fits_small_images():
    plain, accented = np.zeros((80, 200, 3), np.uint8), np.zeros((80, 200, 3), np.uint8)
    draw_label(plain, "Becasseau", anchor=(0, 40))
    draw_label(accented, "Bécasseau", anchor=(0, 40))
    assert not np.array_equal(plain, accented)  # the accent is drawn, not a "?"
    tiny = np.zeros((32, 48, 3), np.uint8)
    draw_label(tiny, "Black footed Albatross 0.93", anchor=(0, 0))
    cols = np.where((tiny[:, :, 1] == 255).any(axis=0))[0]
    assert cols.max() < 48 and cols.min() >= 0  # shrunk / cut to the width


@pytest.mark.parametrize("weighting", ["map", "uniform"])
def test_banded_blend_equals_the_whole_image_formula(weighting):
    """The blend runs in bands of rows (a photo spans several, the last one short); every pixel
    is the formula of the module docstring, rounded, on the whole image at once."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (301, 203, 3), dtype=np.uint8)  # 61,103 px: 4 bands of 80 rows
    score = rng.random((301, 203)).astype(np.float32)
    a = (0.6 * score if weighting == "map" else np.full(score.shape, 0.6, np.float32))
    a = a.astype(np.float32)[:, :, None]
    heat = colorize_map(score).astype(np.float32)
    expected = np.clip(np.rint(image.astype(np.float32) * (1 - a) + heat * a), 0, 255)
    out = overlay_map(image, score, alpha=0.6, weighting=weighting)
    assert out.dtype == np.uint8 and np.array_equal(out, expected.astype(np.uint8))


def test_label_drawn_on_its_patch_only():
    """The label changes pixels only around its anchor; the rest of the image is untouched."""
    image = np.full((300, 400, 3), 90, np.uint8)
    before = image.copy()
    draw_label(image, "Black-footed albatross 0.93", (200, 150))
    changed = np.argwhere(np.any(image != before, axis=2))
    assert len(changed) > 50
    assert changed[:, 0].min() >= 150 - 40 and changed[:, 0].max() < 150 + 5
    assert changed[:, 1].min() >= 200 and changed[:, 1].max() < 400


def test_render_overlay_leaves_input_alone():
    image = np.full((30, 40, 3), 50, np.uint8)
    before = image.copy()
    out = render_overlay(image, np.random.rand(7, 7), boxes=[(5, 5, 20, 20)],
                         gt_boxes=[(2, 2, 30, 25)], label="bird 0.50")
    assert np.array_equal(image, before) and out.shape == image.shape
    assert not np.array_equal(out, image)


@pytest.mark.parametrize("bad", [np.zeros((5, 5, 3), np.float32), np.zeros((5, 5), np.uint8)])
def test_overlay_rejects_bad_images(bad):
    with pytest.raises(ValueError, match="uint8 RGB"):
        overlay_map(bad, np.zeros((5, 5)))


def test_overlay_rejects_nan_maps_and_bad_boxes():
    image = np.zeros((5, 5, 3), np.uint8)
    with pytest.raises(ValueError, match="NaN"):
        overlay_map(image, np.full((5, 5), np.nan))
    with pytest.raises(ValueError, match="x1 < x0"):
        draw_box(image, (4, 0, 2, 3))
    with pytest.raises(ValueError, match="4 values"):
        draw_box(image, (1, 2, 3))


# ---- histograms -----------------------------------------------------------------------------

def test_activation_histograms_by_hand():
    # 4x4 map, box (0, 0, 1, 1) = the top-left 2x2 block with values .1 .3 / .6 1.0;
    # the 12 other pixels are .05. Four bins of width .25: fg -> bins 0, 1, 2, 3 (1.0 goes
    # into the last bin), bg -> 12 in bin 0.
    maps = torch.full((1, 4, 4), 0.05)
    maps[0, 0, 0], maps[0, 0, 1], maps[0, 1, 0], maps[0, 1, 1] = 0.1, 0.3, 0.6, 1.0
    h = activation_histograms(maps, [[(0, 0, 1, 1)]], bins=4)
    assert h.fg.tolist() == [1, 1, 1, 1]
    assert h.bg.tolist() == [12, 0, 0, 0]
    assert np.allclose(h.edges, [0, 0.25, 0.5, 0.75, 1.0])
    by_mask = activation_histograms(maps, fg_masks=boxes_to_mask([(0, 0, 1, 1)], (4, 4))[None],
                                    bins=4)
    assert by_mask.fg.tolist() == h.fg.tolist() and by_mask.bg.tolist() == h.bg.tolist()
    both = h + by_mask
    assert both.fg.tolist() == [2, 2, 2, 2] and both.bg.sum() == 24


def test_boxes_to_mask_unions_boxes():
    mask = boxes_to_mask([(0, 0, 1, 0), (3, 2, 3, 3)], (4, 5))
    assert mask.sum() == 2 + 2
    assert mask[0, 0] and mask[0, 1] and mask[2, 3] and mask[3, 3] and not mask[1, 1]


def test_activation_histograms_argument_errors():
    maps = torch.rand(2, 4, 4)
    with pytest.raises(ValueError, match="exactly one"):
        activation_histograms(maps)
    with pytest.raises(ValueError, match="2 maps"):
        activation_histograms(maps, [[(0, 0, 1, 1)]])
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        activation_histograms(maps[0], [[(0, 0, 1, 1)]])


def test_histograms_from_results_fold_overflow_bins():
    # The evaluator's PxAP histograms use edges = thresholds + [1, 2, 3]: the bins [1, 2) and
    # [2, 3) are folded into the last bin below 1.
    raw = {"bins": [0.0, 0.5, 1.0, 2.0, 3.0], "fg": [1, 2, 3, 0], "bg": [4, 5, 6, 0]}
    h = ActivationHistograms.from_dict(raw)
    assert np.allclose(h.edges, [0, 0.5, 1.0])
    assert h.fg.tolist() == [1, 5] and h.bg.tolist() == [4, 11]
    left_edges = ActivationHistograms.from_dict({"bins": [0.0, 0.5], "fg": [1, 2], "bg": [3, 4]})
    assert np.allclose(left_edges.edges, [0, 0.5, 1.0])
    evaluator_keys = {"bin_edges": [0.0, 0.5, 1.0, 2.0, 3.0], "inside_gt_boxes": [1, 2, 3, 0],
                      "outside_gt_boxes": [4, 5, 6, 0]}
    assert ActivationHistograms.from_dict(evaluator_keys).bg.tolist() == [4, 11]
    with pytest.raises(ValueError, match="bin edges"):
        ActivationHistograms.from_dict({"bins": [0, 1, 2, 3], "fg": [1], "bg": [1]})
    with pytest.raises(ValueError, match="keys"):
        ActivationHistograms.from_dict({"fg": [1], "bg": [1]})


def test_coarsen_sums_groups():
    h = ActivationHistograms(np.linspace(0, 1, 6), np.arange(5.0), np.ones(5))
    c = h.coarsen(2)
    assert np.allclose(c.edges, [0, 0.4, 0.8, 1.0])
    assert c.fg.tolist() == [1, 5, 4] and c.bg.tolist() == [2, 2, 1]


# ---- curves ---------------------------------------------------------------------------------

def test_box_acc_curves_from_results_and_best_threshold():
    results = {"thresholds": [0.0, 0.25, 0.5, 0.75],
               "box_acc_curves": {"50": [10, 40, 40, 5], "30": [50, 60, 70, 80]}}
    c = BoxAccCurves.from_results(results)
    assert c is not None
    assert c.best_threshold("50") == 0.25  # ties: the first maximum, like max over t
    assert c.best_threshold("30") == 0.75
    no_t = BoxAccCurves.from_results({"box_acc_curves": {"50": [1, 2, 3, 4]}})
    assert np.allclose(no_t.thresholds, [0, 0.25, 0.5, 0.75])
    assert BoxAccCurves.from_results({"MaxBoxAccV2": 50.0}) is None
    with pytest.raises(ValueError, match="4 thresholds"):
        BoxAccCurves.from_results({"thresholds": [0, .25, .5, .75], "box_acc_curves": {"50": [1]}})


def test_box_acc_figure_draws_each_method_per_iou():
    t = np.arange(0, 1, 0.1)
    a = BoxAccCurves(t, {"30": t * 100, "50": t * 50})
    b = BoxAccCurves(t, {"50": 100 - t * 100})
    fig = plot_box_acc_curves({"CAM": a, "CREAM": b})
    ax30, ax50 = fig.axes
    assert len(ax30.lines) == 1 and len(ax50.lines) == 2
    assert np.allclose(ax50.lines[1].get_ydata(), 100 - t * 100)
    assert "CREAM (max 100.0)" in [t.get_text() for t in ax50.get_legend().get_texts()]
    pixels = _png_array(figure_png(fig))
    assert pixels.std() > 5  # something was drawn


def test_pr_curves(tmp_path):
    assert pr_curve_from_results({}) is None
    # The evaluator's form: from the highest threshold down, None where nothing is positive.
    precision, recall = pr_curve_from_results(
        {"pr_curve": {"precision": [None, 1.0, 0.8, 0.5], "recall": [0.0, 0.1, 0.5, 1.0]}})
    assert np.isnan(precision[0])
    fig = plot_pr_curves({"CAM": (precision, recall)}, {"CAM": 72.5})
    assert fig.axes[0].get_legend().get_texts()[0].get_text() == "CAM (PxAP 72.5)"
    assert np.allclose(fig.axes[0].lines[0].get_xdata(), [0.1, 0.5, 1.0])
    path = save_png(fig, tmp_path / "pr.png")
    assert Image.open(path).size[0] > 100


def test_histogram_and_grid_figures():
    h = ActivationHistograms(np.linspace(0, 1, 1001), np.ones(1000), np.arange(1000.0))
    fig = plot_activation_histograms({"CAM": h, "CREAM": h})
    assert len(fig.axes) == 2
    assert _png_array(figure_png(fig)).std() > 5

    images = [np.full((24, 32, 3), 90, np.uint8) for _ in range(3)]
    maps = {"CAM": [np.random.rand(24, 32) for _ in range(3)],
            "CREAM": [np.random.rand(6, 8) for _ in range(3)]}
    fig = plot_method_grid(images, maps, gt_boxes=[[(1, 1, 10, 10)]] * 3,
                           pred_boxes={"CAM": [[(2, 2, 12, 12)]] * 3}, row_titles=["a", "b", "c"])
    assert len(fig.axes) == 3 * 3 + 1  # the cells and the map's colour bar
    assert [fig.axes[k].get_title() for k in range(3)] == ["image", "CAM", "CREAM"]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[0] == "ground-truth box" and legend[1].startswith("predicted box")
    with pytest.raises(ValueError, match="2 maps for 3 images"):
        plot_method_grid(images, {"CAM": maps["CAM"][:2]})

    fig = plot_method_grid(images, maps, column_titles={"CREAM": "CREAM (stage cam)"},
                           cell_labels={"CAM": ["bird 0.90", "cat 0.40", "dog 0.70"]},
                           cell_ok={"CAM": [True, False, None]}, legend=False)
    assert len(fig.axes) == 9 and not fig.legends
    assert fig.axes[2].get_title() == "CREAM (stage cam)"
    labels = [fig.axes[3 * r + 1].xaxis.label for r in range(3)]
    assert [lb.get_text() for lb in labels] == ["bird 0.90", "cat 0.40", "dog 0.70"]
    assert labels[0].get_color() != labels[1].get_color()  # correct vs wrong
    with pytest.raises(ValueError, match="cell labels"):
        plot_method_grid(images, maps, cell_labels={"CAM": ["x"]})


# ---- training curves ------------------------------------------------------------------------

def test_training_curves_small_multiples():
    from wsol.viz.training import epoch_columns, plot_training_curves

    a = [{"epoch": "1", "train_loss": "2.0", "train_top1_cls": "10", "val_top1_cls": "",
          "val_MaxBoxAccV2": ""},
         {"epoch": "2", "train_loss": "1.5", "train_top1_cls": "30", "val_top1_cls": "25",
          "val_MaxBoxAccV2": "40"}]
    b = [{"epoch": "1", "train_loss": "1.8", "train_top1_cls": "20", "val_top1_cls": "22",
          "val_gt_known_loc": "35", "val_MaxBoxAccV2": "38", "note": "x"}]
    cols = epoch_columns(a)
    assert np.isnan(cols["val_top1_cls"][0]) and "note" not in epoch_columns(b)
    fig = plot_training_curves({"cam": a, "cream": b}, selected={"cam": ("val_MaxBoxAccV2", 2)})
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["training loss", "train Top-1 Cls", "val Top-1 Cls", "val GT-known Loc",
                      "val MaxBoxAccV2"]
    loss_ax = fig.axes[0]
    colors = {tuple(line.get_color()) for line in loss_ax.lines}
    assert len(loss_ax.lines) == 2 and len(colors) == 2  # one colour per run
    # train Top-1 is its own panel, not under "validation"
    assert np.allclose(fig.axes[1].lines[0].get_ydata(), [10, 30])
    # val panels skip the epochs without validation
    assert np.allclose(fig.axes[2].lines[0].get_xdata(), [2])
    # one legend, outside the panels; the selected epoch is ringed on its metric's panel
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts == ["cam", "cream", "selected epoch"]
    ring = [line for line in fig.axes[4].lines if line.get_marker() == "o"]
    assert len(ring) == 1 and ring[0].get_xdata()[0] == 2
    with pytest.raises(ValueError, match="no runs"):
        plot_training_curves({})
