"""Two real processes under torchrun (gloo, CPU): training with DDP, sharded evaluation whose
numbers equal a single process exactly, and CREAM's embeddings identical on both ranks."""

from __future__ import annotations

import json
import sys

import pytest

from conftest import run_cli, tiny_overrides

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "wsol"]


def _comparable(results: dict) -> dict:
    keys = ("top1_cls", "top5_cls", "top1_loc", "top5_loc", "gt_known_loc", "MaxBoxAcc",
            "MaxBoxAccV2", "max_box_acc_by_iou", "box_acc_curves", "num_images")
    return {k: results[k] for k in keys if k in results}


@pytest.mark.slow
def test_two_process_training_and_exact_distributed_evaluation(synthetic, tmp_path):
    run_dir = tmp_path / "ddp"
    # 18 test images: not a multiple of 4 per rank, so padding duplicates would show.
    run_cli("train", "--no-progress",
            *tiny_overrides(synthetic, run_dir, "method.name=cream", "optim.epochs=2"),
            launcher=TORCHRUN)
    ranks = json.loads((run_dir / "ranks.json").read_text())
    assert ranks["world_size"] == 2
    assert "fg_embeddings" in ranks["buffers"] and "bg_embeddings" in ranks["buffers"]
    for name, diffs in ranks["buffers"].items():
        assert diffs == [0.0, 0.0], f"buffer {name} differs between ranks: {diffs}"

    ddp_results = json.loads((run_dir / "eval" / "test" / "results.json").read_text())
    ckpt = run_dir / "checkpoints" / "best.pt"
    single = tmp_path / "single.json"
    run_cli("evaluate", "--checkpoint", str(ckpt), "--output", str(single), "--no-progress")
    one = json.loads(single.read_text())
    assert one["num_images"] == 18
    assert _comparable(one) == _comparable(ddp_results)

    double = tmp_path / "double.json"
    run_cli("evaluate", "--checkpoint", str(ckpt), "--output", str(double), "--no-progress",
            "--device", "cpu", launcher=TORCHRUN)
    assert _comparable(json.loads(double.read_text())) == _comparable(one)
