"""OpenMP defaults of wsol's processes (``wsol.utils.threads``), in real subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = ("import os, sys\n"
         "from wsol.utils.threads import set_openmp_defaults\n"
         "{before}\n"
         "changed = set_openmp_defaults()\n"
         "print(changed, os.environ.get('OMP_WAIT_POLICY'))\n")


def _probe(before: str = "", env_value: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if env_value is not None:
        env["OMP_WAIT_POLICY"] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE.format(before=before)], env=env,
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_passive_wait_is_the_default_before_torch_is_imported():
    assert _probe() == "True PASSIVE"


def test_a_value_the_user_set_is_kept():
    assert _probe(env_value="ACTIVE") == "True ACTIVE"


def test_nothing_changes_once_torch_is_imported():
    assert _probe(before="import torch") == "False None"


def test_the_command_line_runs_with_passive_waiting():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = ("import os, sys\nfrom wsol.cli import main\nsys.argv = ['wsol', 'methods']\n"
            "main()\nimport torch\nprint('policy', os.environ.get('OMP_WAIT_POLICY'))\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip().splitlines()[-1] == "policy PASSIVE"
