"""Precision settings: ``auto`` resolution, config checks, what runs record, memory formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from wsol.config import load_config
from wsol.errors import ConfigError
from wsol.utils import precision
from wsol.utils.precision import (autocast_context, memory_format, precision_record,
                                  resolve_amp, resolve_channels_last)

from conftest import tiny_overrides


@pytest.mark.parametrize("native", [True, False])
def test_auto_follows_native_bf16_on_the_cpu(monkeypatch, native):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    assert resolve_amp("auto", "cpu") == ("bf16" if native else False)
    assert resolve_channels_last("auto", "cpu") is native
    # Explicit values do not depend on the hardware.
    assert resolve_amp(False, "cpu") is False and resolve_amp(None, "cpu") is False
    assert resolve_amp(True, "cpu") == "bf16" and resolve_amp("bf16", "cpu") == "bf16"
    assert resolve_channels_last(True, "cpu") is True
    assert resolve_channels_last(False, "cpu") is False
    ctx = autocast_context("cpu", "auto")
    assert isinstance(ctx, torch.autocast) is native


def test_bad_values_are_refused_with_their_name():
    with pytest.raises(ValueError, match="needs a CUDA device"):
        resolve_amp("fp16", "cpu")
    with pytest.raises(ValueError, match="got 'fp8'"):
        resolve_amp("fp8", "cpu")
    with pytest.raises(ValueError, match="got 'sometimes'"):
        resolve_channels_last("sometimes", "cpu")
    with pytest.raises(ConfigError, match="eval.amp must be false, true, bf16, fp16 or auto, "
                                          "got 'fp8'"):
        load_config(None, ["eval.amp=fp8"])
    with pytest.raises(ConfigError, match="train.channels_last must be true, false or auto"):
        load_config(None, ["train.channels_last=maybe"])
    defaults = load_config(None, [])
    assert defaults["train"]["amp"] == defaults["eval"]["amp"] == "auto"
    assert defaults["train"]["channels_last"] == defaults["eval"]["channels_last"] == "auto"


def test_native_bf16_is_read_from_the_cpu_flags():
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo on this system (auto then means float32 on the CPU)")
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("flags")), [])
    assert precision.cpu_has_native_bf16() == bool({"avx512_bf16", "amx_bf16"} & set(flags))


def test_memory_format_restores_what_the_model_had():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 2, 1))
    with memory_format(model, True):
        assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
        assert not model[0].weight.is_contiguous()
    assert model[0].weight.is_contiguous()
    model.to(memory_format=torch.channels_last)  # a model that trains in NHWC stays NHWC
    with memory_format(model, True):
        pass
    assert not model[0].weight.is_contiguous()
    with memory_format(model, False):  # False leaves the format alone
        assert not model[0].weight.is_contiguous()


def test_train_saves_the_resolved_precision_and_results_record_it(synthetic, tmp_path):
    from wsol.engine.train import train

    run_dir = tmp_path / "run"
    result = train(load_config(None, tiny_overrides(synthetic, run_dir, "optim.epochs=1")),
                   progress=False)
    saved = load_config(run_dir / "config.yaml")
    expected = precision_record("auto", "auto", "cpu")
    assert saved["train"]["amp"] == expected["amp"]  # not "auto": what the run trained in
    assert saved["train"]["channels_last"] is expected["channels_last"]
    assert saved["eval"]["amp"] == "auto"  # evaluation resolves on the hardware it runs on
    assert result["finished"]
    assert json.loads((run_dir / "results.json").read_text())["precision"] == expected


def test_explicit_bf16_channels_last_training_runs_and_is_saved(synthetic, tmp_path):
    from wsol.engine.train import train

    run_dir = tmp_path / "run"
    train(load_config(None, tiny_overrides(synthetic, run_dir, "optim.epochs=1",
                                           "train.amp=bf16", "train.channels_last=true",
                                           "eval.amp=false", "eval.channels_last=false")),
          progress=False)
    saved = load_config(run_dir / "config.yaml")
    assert saved["train"]["amp"] == "bf16" and saved["train"]["channels_last"] is True
    results = json.loads((run_dir / "results.json").read_text())
    assert results["precision"] == {"amp": False, "channels_last": False}


def test_fp16_training_on_the_cpu_is_refused_before_the_run_directory_exists(synthetic,
                                                                             tmp_path):
    from wsol.engine.train import train

    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError, match="train.amp: amp='fp16' needs a CUDA device"):
        train(load_config(None, tiny_overrides(synthetic, run_dir, "train.amp=fp16")),
              progress=False)
    assert not run_dir.exists()
