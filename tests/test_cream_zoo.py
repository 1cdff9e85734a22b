"""CREAM as an add-on to every method: training with CREAM leaves the method's weights exactly
as training without it (same seed) and learns the embeddings; ``wsol cream fit`` puts CREAM on a
trained checkpoint of any method; the inference stages work on all of them."""

from __future__ import annotations

import pytest
import torch

from conftest import run_cli, tiny_overrides
from wsol.errors import ConfigError
from wsol.methods import build_method
from wsol.methods.cream import CREAM, CREAM_OPTIONS, fit_embeddings
from wsol.models import create_model

METHODS = ("cam", "has", "acol", "spg", "adl", "cutmix")
BUFFERS = {"fg_embeddings", "bg_embeddings", "update_count"}


def _train(name: str, cream: bool, steps: int = 3) -> torch.nn.Module:
    """The engine's step (prepare_batch, forward, loss, SGD step, update_state), seeded."""
    torch.manual_seed(0)
    backbone = create_model("tiny_cnn", num_classes=3, width=4)
    method = build_method(name, backbone, cream=cream) if name != "cam" or not cream \
        else build_method("cream", backbone)
    optimizer = torch.optim.SGD(method.param_groups(0.05), lr=0.05, momentum=0.9)
    data = torch.Generator().manual_seed(1)
    method.train()
    for _ in range(steps):
        images = torch.randn(6, 3, 32, 32, generator=data)
        labels = torch.randint(0, 3, (6,), generator=data)
        optimizer.zero_grad()
        images, targets = method.prepare_batch(images, labels)
        outputs = method(images)
        loss = method.loss(outputs, targets)
        loss.backward()
        optimizer.step()
        method.update_state({k: v.detach() for k, v in outputs.items()}, labels)
    return method


@pytest.mark.parametrize("name", METHODS)
def test_cream_leaves_the_method_weights_identical_and_learns_embeddings(name, one_thread):
    plain, with_cream = _train(name, False), _train(name, True)
    assert with_cream.with_cream and not plain.with_cream
    ours, theirs = plain.state_dict(), with_cream.state_dict()
    assert set(theirs) - set(ours) == BUFFERS
    for key, value in ours.items():
        assert torch.equal(value, theirs[key]), key
    assert (with_cream.update_count > 0).any()
    init = type(with_cream)(create_model("tiny_cnn", num_classes=3, width=4))
    assert not torch.equal(with_cream.fg_embeddings, init.fg_embeddings)
    assert with_cream.fg_embeddings.shape == (3, with_cream.cream_feature_dim)
    # Inference: stage "cam" is the method's own map; the three stages have its shape.
    with_cream.eval(), plain.eval()
    images, classes = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    with torch.no_grad():
        stages = with_cream.maps_by_stage(with_cream(images), classes)
        own = plain.localization_maps(plain(images), classes)
    assert torch.allclose(stages["cam"], own)
    assert stages["calibrated"].shape == own.shape == stages["fused"].shape
    assert not torch.allclose(stages["fused"], stages["cam"])


def test_cream_on_cam_is_the_cream_method():
    torch.manual_seed(0)
    method = build_method("cream", create_model("tiny_cnn", num_classes=3, width=4))
    assert isinstance(method, CREAM) and method.name == "cream"
    assert {k for k in method.state_dict() if "backbone" not in k} == BUFFERS
    with pytest.raises(ValueError, match="already is CREAM"):
        build_method("cream", create_model("tiny_cnn", num_classes=3), cream=True)
    with pytest.raises(TypeError):
        build_method("has", create_model("tiny_cnn", num_classes=3), stage="fused")
    assert set(CREAM_OPTIONS) >= {"tau", "gamma", "stage", "iterations"}


def test_fit_embeddings_on_any_method(one_thread):
    trained = _train("spg", False)
    method = build_method("spg", create_model("tiny_cnn", num_classes=3, width=4), cream=True)
    method.load_state_dict(trained.state_dict(), strict=False)
    images = torch.randn(6, 3, 32, 32)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    fit_embeddings(method, [{"image": images, "label": labels}], "cpu", progress=False)
    assert (method.update_count > 0).any()
    feats = method.eval()(images)["features"]
    assert method.fg_embeddings.shape[1] == feats.shape[1]


@pytest.mark.slow
def test_zoo_method_with_cream_trains_fits_and_evaluates_through_the_cli(synthetic, tmp_path):
    run_dir = tmp_path / "has"
    run_cli("train", *tiny_overrides(synthetic, run_dir, "method.name=has", "optim.epochs=1",
                                     "method.cream=true", "method.stage=calibrated"))
    state = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=False)
    assert state["config"]["method"]["cream"] is True
    assert int(state["state_dict"]["update_count"].sum()) > 0
    out = tmp_path / "evaluated.json"
    run_cli("evaluate", "--checkpoint", str(run_dir / "checkpoints" / "best.pt"), "--split",
            "test", "--output", str(out), "method.stage=fused")
    assert out.is_file()
    # A plain ADL run gets CREAM after the fact.
    adl_dir = tmp_path / "adl"
    run_cli("train", *tiny_overrides(synthetic, adl_dir, "method.name=adl", "optim.epochs=1"))
    fitted = tmp_path / "adl_cream.pt"
    run_cli("cream", "fit", "--checkpoint", str(adl_dir / "checkpoints" / "best.pt"), "--out",
            str(fitted), "--no-progress")
    state = torch.load(fitted, weights_only=False)
    assert state["config"]["method"]["name"] == "adl" and state["config"]["method"]["cream"]
    assert int(state["state_dict"]["update_count"].sum()) > 0


# ------------------------------------------------------------ inference_tau and select_stage
def test_inference_tau_changes_the_calibration_region_only(one_thread):
    """``inference_tau`` moves the Eq.11 region at inference; the Eq.3 training mask keeps
    ``tau``; ``None`` is ``tau`` (the paper's single value)."""
    trained = _train("cam", True)
    torch.manual_seed(0)
    images, classes = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 0])
    labels = torch.tensor([0, 1, 2, 1])

    def variant(**kw):
        # pi_init="cam" makes the EM start depend on the Eq.3 region, so the region's threshold
        # shows in the responsibilities (calibration alone only flips whole maps).
        method = build_method("cream", create_model("tiny_cnn", num_classes=3, width=4),
                              pi_init="cam", **kw)
        method.load_state_dict(trained.state_dict())
        return method.eval()

    same, moved = variant(tau=0.2), variant(tau=0.2, inference_tau=0.7)
    assert same.inference_tau == 0.2 and moved.inference_tau == 0.7
    with torch.no_grad():
        out = same(images)
        a, b = same.maps_by_stage(out, classes), moved.maps_by_stage(out, classes)
        torch.testing.assert_close(a["cam"], b["cam"])
        assert not torch.allclose(a["calibrated"], b["calibrated"])
        # The training-time Eq.3-4 means use tau, whatever inference_tau is.
        for x, y in zip(same._batch_means(out, labels), moved._batch_means(out, labels)):
            torch.testing.assert_close(x, y)
    torch.testing.assert_close(variant(tau=0.7).maps_by_stage(out, classes)["calibrated"],
                               b["calibrated"])
    with pytest.raises(ConfigError, match="inference_tau"):
        variant(inference_tau=float("nan"))


def test_shipped_cub10_configs_are_the_settings_the_readme_reports():
    """The CUB-subset configs carry the CREAM inference setting the headline table was measured
    with (benchmarks/results/cub10_seeds.json) and select best.pt on the plain map."""
    import json
    from pathlib import Path

    from wsol.config import load_config

    repo = Path(__file__).resolve().parents[1]
    measured = json.loads((repo / "benchmarks/results/cub10_seeds.json").read_text())
    chosen = measured["cream_inference_settings"]
    for name in ("cream", "has", "acol", "spg", "adl", "cutmix"):
        cfg = load_config(repo / "configs" / f"{name}_efficientnet_lite0_cub10.yaml")
        method = cfg["method"]
        assert method["stage"] == "calibrated", name
        assert method["iterations"] == chosen["iterations"], name
        assert method["feature_normalization"] == chosen["feature_normalization"], name
        assert method["inference_tau"] == chosen["tau"], name
        assert method["tau"] == 0.2, name  # the embeddings are learned with the paper's tau
        assert cfg["train"]["select_stage"] == "cam", name


@pytest.mark.slow
def test_select_stage_scores_validation_on_that_stage(synthetic, tmp_path):
    """train.select_stage=cam: the val metric of every epoch is the CAM map's, while the final
    test evaluation uses the configured stage (calibrated)."""
    import csv
    import json

    from wsol.engine.checkpoint import load_method
    from wsol.engine.train import evaluate_split

    run_dir = tmp_path / "run"
    run_cli("train", *tiny_overrides(synthetic, run_dir, "method.name=cream", "optim.epochs=1",
                                     "method.stage=calibrated", "train.select_stage=cam"))
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    best = run_dir / "checkpoints" / "best.pt"
    scores = {}
    for stage in ("cam", "calibrated"):
        method, info = load_method(best, method_overrides={"stage": stage})
        scores[stage] = evaluate_split(method, info["config"], "val", torch.device("cpu"),
                                       method.backbone)["MaxBoxAccV2"]
        if stage == "calibrated":
            test = evaluate_split(method, info["config"], "test", torch.device("cpu"),
                                  method.backbone)["MaxBoxAccV2"]
    assert scores["cam"] != scores["calibrated"]
    assert float(rows[-1]["val_MaxBoxAccV2"]) == pytest.approx(scores["cam"])
    results = json.loads((run_dir / "results.json").read_text())
    assert results["MaxBoxAccV2"] == pytest.approx(test)
    assert results["select_stage"] == "cam"
    assert info["config"]["method"]["stage"] == "calibrated"
    # A method without map stages refuses the option before training.
    proc = run_cli("train", *tiny_overrides(synthetic, tmp_path / "cam", "method.name=cam",
                                            "train.select_stage=cam"), check=False)
    assert proc.returncode != 0 and "select_stage" in proc.stderr
    assert not (tmp_path / "cam").exists()
