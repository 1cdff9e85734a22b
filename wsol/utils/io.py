"""Atomic writes: a crash never leaves a half-written result, checkpoint or table behind.

Each writer writes to a temporary file in the destination directory, flushes and fsyncs it,
then renames it over the destination (``os.replace`` is atomic on POSIX).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, writer: Callable[[IO[bytes]], None], *,
                 durable: bool = True) -> Path:
    """Call ``writer(fileobj)`` on a temporary file next to ``path`` and rename it into place.

    ``path`` never holds a partial file, whatever happens to the process. ``durable`` also
    flushes the file to the disk before the rename (``fsync``), so that it survives a crash of
    the machine; per-image outputs that are rewritten by rerunning (overlays) skip it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` to ``path`` atomically."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def read_json_object(path: str | os.PathLike, what: str = "") -> dict:
    """Read a JSON file whose top level is an object; errors name ``what`` and the path."""
    path = Path(path)
    prefix = f"{what} {path}" if what else str(path)
    if not path.is_file():
        raise FileNotFoundError(f"{prefix}: no such file")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{prefix}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{prefix}: expected a JSON object at the top level")
    return data
