"""Run directories: one writer at a time, never overwritten without ``--force``, and ``--force``
only ever removes what wsol wrote.

A run directory holds a marker ``.wsol-run.json`` (``{"format": "wsol-run", "kind",
"created", "wsol_version"}``) written when wsol creates it, and, while a process works in it, a
lock ``.wsol.lock`` (``{"pid", "host", "started", "command"}``) created with ``O_EXCL``.

- A second process that finds a live lock is refused with the holder's pid and command; a lock
  whose process is gone (same host, pid not running) is stale and taken over.
- ``--force`` on an existing directory requires the marker and that every file in it is one
  wsol writes (:data:`OWNED_PATTERNS`); anything else (a user's file) makes it refuse, naming
  the file, and nothing is deleted. Then only those files are removed.
- Left-over ``*.tmp`` files of interrupted atomic writes are removed when a run is opened.
"""

from __future__ import annotations

import fnmatch
import json
import os
import socket
import sys
import time
from pathlib import Path

import wsol
from wsol.errors import RunDirError
from wsol.utils.io import atomic_write_json

__all__ = ["MARKER", "LOCK", "OWNED_PATTERNS", "RunDir"]

MARKER = ".wsol-run.json"
LOCK = ".wsol.lock"
#: Files a wsol run writes (relative paths, ``fnmatch`` patterns); ``--force`` removes only these.
OWNED_PATTERNS = (
    MARKER, LOCK, "config.yaml", "metrics.csv", "results.json", "ranks.json", "*.log",
    "checkpoints/*.pt", "eval/*", "eval/*/*", "eval/*/*/*", "eval/*/*/*/*",
    "*.tmp", "*/*.tmp", "*/*/*.tmp", "pseudo_boxes/*", "pseudo_boxes/*/*",
)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunDir:
    """A wsol run directory (see the module docstring). Use as a context manager::

        with RunDir(path, kind="classifier").open(resume=False, force=False):
            ...  # the lock is held; released on exit
    """

    def __init__(self, path: str | os.PathLike, kind: str = "classifier") -> None:
        self.path = Path(path)
        self.kind = kind
        self._locked = False

    # ------------------------------------------------------------------ inspection
    @property
    def marker(self) -> Path:
        return self.path / MARKER

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK

    def is_wsol_run(self) -> bool:
        return self.marker.is_file()

    def foreign_files(self) -> list[str]:
        """Files under the directory that wsol does not write (relative paths)."""
        out = []
        for file in sorted(p for p in self.path.rglob("*") if not p.is_dir()):
            rel = file.relative_to(self.path).as_posix()
            if not any(fnmatch.fnmatchcase(rel, pat) for pat in OWNED_PATTERNS):
                out.append(rel)
        return out

    # ------------------------------------------------------------------ opening
    def open(self, *, resume: bool, force: bool, command: str | None = None) -> RunDir:
        """Check, create or clear the directory for a new or resumed run, take the lock."""
        if resume and force:
            raise RunDirError("--resume and --force exclude each other")
        exists = self.path.exists() and any(self.path.iterdir())
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"run directory {self.path} exists and is not a directory")
        if resume:
            if not self.is_wsol_run():
                raise RunDirError(f"--resume: {self.path} is not a wsol run directory "
                                  f"(no {MARKER})")
        elif exists:
            if not force:
                raise RunDirError(
                    f"run directory {self.path} already exists and is not empty; use --resume "
                    "to continue it or --force to replace it")
            self._check_force()
        self.path.mkdir(parents=True, exist_ok=True)
        self._check_writable()
        self.acquire(command)
        try:
            if force and exists:
                self._clear()
            self.remove_stale_tmp()
            if not self.is_wsol_run():
                atomic_write_json(self.marker, {"format": "wsol-run", "kind": self.kind,
                                                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                                "wsol_version": wsol.__version__})
        except BaseException:
            self.release()
            raise
        return self

    def _check_force(self) -> None:
        if not self.is_wsol_run():
            raise RunDirError(f"--force: {self.path} is not a wsol run directory (no {MARKER}); "
                              "refusing to delete anything in it")
        foreign = self.foreign_files()
        if foreign:
            more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
            raise RunDirError(f"--force: {self.path} holds files wsol did not write "
                              f"({', '.join(foreign[:3])}{more}); refusing to delete anything")
        self._check_lock()

    def _check_writable(self) -> None:
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise RunDirError(f"run directory {self.path} is not writable")

    def _clear(self) -> None:
        for file in sorted(self.path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            rel = file.relative_to(self.path).as_posix()
            if file.is_dir():
                if not any(file.iterdir()):
                    file.rmdir()
            elif rel not in (LOCK,):
                file.unlink()

    def discard_if_unused(self) -> bool:
        """Remove a run directory this process created if no epoch finished in it (no
        ``last.pt``) and it holds only wsol's files: a run that failed before its first epoch
        leaves no empty directory behind. Returns whether it was removed."""
        if (self.path / "checkpoints" / "last.pt").exists() or self.foreign_files():
            return False
        self.release()
        self._clear()
        for name in (LOCK, MARKER):
            (self.path / name).unlink(missing_ok=True)
        try:
            self.path.rmdir()
        except OSError:
            return False
        return True

    def remove_stale_tmp(self) -> list[Path]:
        """Delete ``.NAME.*.tmp`` files left by interrupted atomic writes (lock held)."""
        removed = []
        for tmp in self.path.rglob(".*.tmp"):
            if tmp.is_file():
                tmp.unlink()
                removed.append(tmp)
        return removed

    # ------------------------------------------------------------------ lock
    def _read_lock(self) -> dict | None:
        try:
            return json.loads(self.lock_path.read_text())
        except (OSError, ValueError):
            return None

    def _check_lock(self) -> None:
        info = self._read_lock()
        if info is None:
            return
        same_host = info.get("host") == socket.gethostname()
        pid = int(info.get("pid", -1))
        if pid == os.getpid() and same_host:
            return
        if not same_host or _pid_alive(pid):
            raise RunDirError(
                f"run directory {self.path} is in use by process {pid} on {info.get('host')} "
                f"(since {info.get('started')}: {info.get('command')}); wait for it to finish, "
                f"or delete {self.lock_path} if that process is gone")

    def acquire(self, command: str | None = None) -> None:
        """Create the lock (``O_EXCL``); refuse a live holder, take over a stale lock."""
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "command": command or " ".join(sys.argv)}
        for _ in range(2):
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._check_lock()  # raises when the holder is alive
                held = self._read_lock() or {}
                if held.get("pid") == os.getpid() and held.get("host") == info["host"]:
                    self._locked = True
                    return
                print(f"wsol: removing stale lock {self.lock_path} (process "
                      f"{held.get('pid')} is gone)", file=sys.stderr)
                self.lock_path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(info, f)
            self._locked = True
            return
        raise RunDirError(f"could not lock {self.path}")

    def release(self) -> None:
        if self._locked:
            self.lock_path.unlink(missing_ok=True)
            self._locked = False

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
