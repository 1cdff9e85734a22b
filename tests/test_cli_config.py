"""``wsol config show/list``, ``wsol models``, ``wsol methods``, and configs shipped in the wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest
import yaml
from conftest import REPO

from wsol.cli import main


class _Proc:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_cli(*args: str, check: bool = True, capsys=None) -> _Proc:
    """``wsol ARGS`` in this process (the command line is the same code as the subprocess)."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    if check:
        assert code == 0, err
    return _Proc(code, out, err)

from wsol.config import list_configs, load_config, resolve_config_path


def test_config_show_prints_the_resolved_config_and_every_option(capsys):
    proc = run_cli("config", "show", "cream_efficientnet_lite0_cub10", "method.iterations=3",
                   "optim.lr=1e-3", capsys=capsys)
    text, _, options = proc.stdout.partition("\n\n# options of model")
    config = yaml.safe_load(text)
    assert config["method"]["iterations"] == 3 and config["optim"]["lr"] == pytest.approx(1e-3)
    assert config == load_config(resolve_config_path("cream_efficientnet_lite0_cub10"),
                                 ["method.iterations=3", "optim.lr=1e-3"])
    # Every keyword of the builder and of the method is listed with its default.
    import inspect

    from wsol.methods.registry import _METHODS
    from wsol.models.registry import _MODELS

    for name in inspect.signature(_MODELS["efficientnet_lite0"]).parameters:
        if name not in ("num_classes", "pretrained"):
            assert f"#   {name} = " in options, name
    for name, param in inspect.signature(_METHODS["cream"].__init__).parameters.items():
        if name in ("self", "backbone") or param.kind in (param.VAR_POSITIONAL,
                                                          param.VAR_KEYWORD):
            continue
        assert f"#   {name} = " in options, name


def test_config_show_names_an_unknown_method(capsys):
    proc = run_cli("config", "show", "method.name=nosuch", check=False, capsys=capsys)
    assert proc.returncode == 2 and "nosuch" in proc.stderr and "wsol methods" in proc.stderr


def test_models_and_methods_list_the_registries(capsys):
    from wsol.methods import list_methods
    from wsol.models import list_models

    assert run_cli("models", capsys=capsys).stdout.split() == list_models()
    assert run_cli("methods", capsys=capsys).stdout.split() == list_methods()
    verbose = run_cli("models", "tiny*", "-v", capsys=capsys).stdout
    assert verbose.startswith("tiny_cnn") and "width = 16" in verbose


def test_config_list_and_shipped_names(capsys):
    names = run_cli("config", "list", capsys=capsys).stdout.split()
    assert names == list_configs() and "cam_efficientnet_lite0_cub10" in names
    assert resolve_config_path("cam_resnet50_cub").is_file()


def test_the_wheel_ships_the_configs(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "-w", str(tmp_path), str(REPO)], capture_output=True, text=True,
                          timeout=300)
    if proc.returncode != 0:
        pytest.skip(f"pip wheel is not available here: {proc.stderr[-300:]}")
    wheel = next(tmp_path.glob("wsol-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n.split("/")[-1][:-5] for n in names if n.startswith("wsol/configs/")
               and n.endswith(".yaml")}
    assert shipped == set(list_configs())
