"""The compiled helpers (component tree, score histograms, bilinear resize) are optional in
setup.py (an install without a C compiler still works), so a build that broke would pass
silently: this catches that."""

from __future__ import annotations

import shutil
import sysconfig

import pytest

from wsol.data import resample
from wsol.localization import leveltree
from wsol.metrics import histograms


def test_helper_is_built_wherever_a_compiler_is_present():
    """The extension is optional in setup.py, so a broken build would pass silently: where a C
    compiler exists (as in CI), the helper must have been built."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}) on this machine")
    assert leveltree.available()
    assert histograms._scorebins is not None
    assert resample.available()  # built, and reproducing the installed Pillow
