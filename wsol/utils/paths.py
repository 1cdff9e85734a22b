"""Relative paths from outside (metadata ids, mask paths, output names) that cannot escape a root.

Two levels of checking:

- :func:`check_relative_path` is lexical and needs no root: it accepts a POSIX-style relative
  path (``a/b/c.jpg``) and refuses anything that could name a file outside whatever root it is
  later joined to, i.e. an empty path, a NUL or other control character, a backslash (a Windows
  separator, so ``..\\x`` cannot slip through on Windows), an absolute path (``/x``), a drive or
  UNC prefix (``C:x``, ``C:/x``, ``//server/x``) and any ``..`` component. ``.`` components and
  repeated slashes are harmless and allowed. The metadata reader applies it to every image id and
  mask path, so a bad id fails when the metadata is read (naming file:line), not when it is used.
- :func:`safe_join` adds the proof on the file system: it joins, resolves symlinks
  (``Path.resolve``) and checks that the result is still inside ``root.resolve()``. Use it for
  every *output* path built from an id (e.g. ``<out>/<image_id>.npy``): a symlink planted inside
  the output directory cannot redirect a write outside it.

Both raise :class:`UnsafePathError` (a :class:`~wsol.errors.WsolError`), whose message names what
the path is (``what``, e.g. ``"image id"``) and why it is refused.

Example::

    target = safe_join(out_dir, image_id + ".npy", "score-map path")
    target.parent.mkdir(parents=True, exist_ok=True)
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from wsol.errors import WsolError

__all__ = ["UnsafePathError", "check_relative_path", "safe_join"]

_DRIVE = re.compile(r"^[A-Za-z]:")


class UnsafePathError(WsolError, ValueError):
    """A relative path that is malformed or would point outside its root."""


def check_relative_path(relative: str, what: str = "path") -> str:
    """Return ``relative`` unchanged if it is a safe relative POSIX path, else raise.

    Refused (see the module docstring): empty, control characters (NUL included), ``\\``,
    leading ``/``, a drive (``C:``) or UNC prefix, any ``..`` component.
    """
    if not isinstance(relative, str):
        raise UnsafePathError(f"{what} must be a string, got {type(relative).__name__}")
    if not relative:
        raise UnsafePathError(f"{what} is empty")
    bad = next((c for c in relative if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        raise UnsafePathError(f"{what} {relative!r} contains the control character "
                              f"{bad!r} (NUL and control characters are not allowed)")
    if "\\" in relative:
        raise UnsafePathError(f"{what} {relative!r} contains a backslash; use '/' as the "
                              "separator of relative paths")
    if relative.startswith("/"):
        raise UnsafePathError(f"{what} {relative!r} is an absolute path; it must be relative "
                              "to its root")
    if _DRIVE.match(relative):
        raise UnsafePathError(f"{what} {relative!r} starts with a drive letter; it must be "
                              "relative to its root")
    if ".." in PurePosixPath(relative).parts:
        raise UnsafePathError(f"{what} {relative!r} contains a '..' component, which could "
                              "leave its root")
    if all(part == "." for part in PurePosixPath(relative).parts):
        raise UnsafePathError(f"{what} {relative!r} names the root itself, not a file in it")
    return relative


def safe_join(root: str | os.PathLike, relative: str, what: str = "path") -> Path:
    """``root / relative``, proven to lie inside ``root``.

    ``relative`` must pass :func:`check_relative_path`; the joined path is then resolved
    (symlinks followed, the target need not exist) and must be ``root.resolve()`` or below it.
    Returns the *unresolved* join ``Path(root) / relative`` (so messages and outputs keep the
    user's spelling of ``root``).

    Raises:
        UnsafePathError: naming ``what``, ``relative`` and ``root``.
    """
    check_relative_path(relative, what)
    root_path = Path(root)
    joined = root_path / relative
    root_real = root_path.resolve()
    real = joined.resolve()
    if real != root_real and not real.is_relative_to(root_real):
        raise UnsafePathError(f"{what} {relative!r} resolves to {real}, outside {root_path} "
                              "(a symlink inside the root points out of it)")
    return joined
