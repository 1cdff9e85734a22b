"""OpenMP defaults for wsol's processes, set before torch is imported.

``OMP_WAIT_POLICY=PASSIVE``: torch's OpenMP threads sleep at a barrier instead of spinning.
wsol's pipelines run host work next to the forward pass (JPEG decode in a prefetch thread, the
box evaluator's pool, the overlay writer of ``wsol localize``). OpenMP threads spinning between
operators take the cores that this work needs. On the 2-core benchmark machine,
``benchmarks/results/omp_wait.json`` has ``evaluate`` at about 1.2-1.4x the throughput with
``PASSIVE``; the bare forward pass and a training epoch did not move beyond the machine's noise.

The OpenMP runtime reads the variable once, when torch loads it, so this only works in a process
that has not imported torch yet: the ``wsol`` command line calls :func:`set_openmp_defaults`
first thing. A value the user set is kept. Library users who want the same can set
``OMP_WAIT_POLICY=PASSIVE`` in the environment before starting Python.
"""

from __future__ import annotations

import os
import sys

__all__ = ["OPENMP_DEFAULTS", "set_openmp_defaults"]

OPENMP_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}


def set_openmp_defaults() -> bool:
    """Put :data:`OPENMP_DEFAULTS` into ``os.environ`` where unset; False (and nothing changed)
    when torch is already imported, since the OpenMP runtime would no longer read them."""
    if "torch" in sys.modules:
        return False
    for key, value in OPENMP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    return True
