"""Friction points of a new user's first hour (issue 16) that live in the engine and commands."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli, tiny_overrides

from wsol.config import load_config
from wsol.engine.train import train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_top5_is_not_reported_with_fewer_than_six_classes(synthetic, tmp_path):
    run = tmp_path / "run"
    result = train(load_config(None, tiny_overrides(synthetic, run, "optim.epochs=1")),
                   progress=False)
    test = result["splits"]["test"]
    assert test["top5_cls"] is None and test["top5_loc"] is None
    assert "3 classes" in test["top5_note"]
    assert test["top1_cls"] is not None and test["gt_known_loc"] is not None


def test_every_subcommand_help_has_a_description(capsys):
    from wsol.cli import main

    for args in (["cream", "fit"], ["config", "show"], ["train"], ["evaluate"], ["localize"],
                 ["models"], ["methods"]):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            main([*args, "--help"])
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        usage, _, rest = out.partition("\n\n")
        assert rest.strip() and not rest.lstrip().startswith(("positional", "options")), args


def test_model_num_classes_override_says_where_the_count_comes_from(synthetic, tmp_path):
    proc = run_cli("train", *tiny_overrides(synthetic, tmp_path / "r", "model.num_classes=3"),
                   check=False)
    assert proc.returncode == 2 and "comes from the metadata" in proc.stderr
    assert not Path(tmp_path / "r").exists()


def test_overrides_may_be_split_around_options(synthetic, tmp_path):
    from wsol.cli import build_parser, main

    argv = ["config", "show", "optim.lr=0.5", "method.name=cream"]
    assert main(argv) == 0
    parser_args = ["train", "--run-dir", "x", "optim.lr=0.5", "--no-progress", "seed=3"]

    parser = build_parser(parser_args)
    args, extra = parser.parse_known_args(parser_args)
    assert extra == ["seed=3"]
    assert main(["train", "--run-dir", str(tmp_path / "r"), "optim.epochs=1", "--no-progress",
                 "optim.epochs=0"]) == 2  # the second override was read (epochs 0 refused)
    with pytest.raises(SystemExit):
        main(["train", "--run-dir", str(tmp_path / "r"), "--no-progress", "--nosuch"])
    # the one subprocess: the message a user sees
    proc = run_cli("train", "--run-dir", str(tmp_path / "r"), "--no-progress", "stray",
                   check=False)
    assert proc.returncode == 2 and "must look like key=value" in proc.stderr


def test_reported_thresholds_are_rounded(synthetic, tmp_path):
    import json

    run = tmp_path / "run"
    train(load_config(None, tiny_overrides(synthetic, run, "optim.epochs=1",
                                           "eval.cam_curve_interval=0.001")), progress=False)
    text = (run / "results.json").read_text()
    results = json.loads(text)
    assert all(len(repr(t)) <= 6 for t in results["thresholds"])  # 0.346, not 0.34600000000000003
    assert "0000000000" not in text
