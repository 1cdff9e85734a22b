"""Config layer: defaults, YAML, overrides with type checks and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsol.config import DEFAULTS, ConfigError, load_config, method_kwargs, model_kwargs

REPO = Path(__file__).resolve().parents[1]


def test_defaults_then_file_then_overrides(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("optim:\n  lr: 0.5\nmethod:\n  name: cream\n  tau: 0.3\n")
    cfg = load_config(cfg_file, ["optim.lr=0.01", "method.gamma=0.9", "optim.epochs=3"])
    assert cfg["optim"]["lr"] == 0.01
    assert cfg["optim"]["epochs"] == 3
    assert cfg["optim"]["momentum"] == DEFAULTS["optim"]["momentum"]
    assert method_kwargs(cfg) == {"tau": 0.3, "gamma": 0.9}
    assert model_kwargs(cfg) == {}


def test_int_accepted_for_float_but_not_string_for_int():
    cfg = load_config(None, ["optim.lr=1"])
    assert isinstance(cfg["optim"]["lr"], float)
    with pytest.raises(ConfigError, match="optim.epochs must be an integer"):
        load_config(None, ["optim.epochs=ten"])


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'optim.lrr'"):
        load_config(None, ["optim.lrr=0.1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  rooot: x\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key 'data.rooot'"):
        load_config(bad)


def test_malformed_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["optim.lr"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_resolves(path):
    cfg = load_config(path)
    assert cfg["model"]["name"]
    from wsol.methods import list_methods

    assert cfg["method"]["name"] in list_methods()
