"""Atomic writes: a failing writer leaves the previous file untouched and no temporary behind."""

from __future__ import annotations

import json
import os
import stat

import pytest

from wsol.utils.io import atomic_write, atomic_write_json


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "results.json"
    atomic_write_json(path, {"MaxBoxAccV2": 65.7})

    def broken(f):
        f.write(b'{"half": ')
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError, match="crash mid-write"):
        atomic_write(path, broken)
    assert json.loads(path.read_text()) == {"MaxBoxAccV2": 65.7}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_written_files_get_umask_permissions_not_0600(tmp_path):
    path = atomic_write_json(tmp_path / "a" / "b.json", [1, 2])
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    assert json.loads(path.read_text()) == [1, 2]
