"""Crash-safe, multi-process-safe cassette files.

Every write goes to a temporary file in the cassette's own directory, is ``fsync``-ed, then
``os.replace``-d over the old file (atomic on POSIX): a reader sees the old file or the new one,
never half of one, and a writer killed at any point leaves the old file intact. Writers hold a
``filelock.FileLock`` (released by the kernel if the holder dies) and re-read the file under it, so
several pytest-xdist workers recording into one cassette merge their interactions instead of
overwriting each other. Lock files live outside the cassette folders (``lock_path``: one per
cassette, named by a hash of its real path, in a per-user directory under the temp dir), so
nothing but cassettes ever appears next to cassettes. Both cassette kinds use it.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import filelock

from dspy_bridge._exceptions import CassetteError

__all__ = ["LOCK_TIMEOUT", "cassette_lock", "lock_dir", "lock_path", "remove_stale_temps", "write_atomic"]

LOCK_TIMEOUT = 60.0  # seconds; a writer holds the lock only while merging and writing one file
_FILE_MODE = 0o644  # cassettes are reviewed and committed: readable by all, like any source file


def lock_dir() -> Path:
    """Where every cassette lock lives: ``<tempdir>/dspy-bridge-locks-<uid>`` (shared by xdist processes)."""
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    directory = Path(tempfile.gettempdir()) / f"dspy-bridge-locks-{uid}"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return directory


def lock_path(path: Path) -> Path:
    """The lock file of one cassette: keyed by its resolved absolute path, never beside it."""
    digest = hashlib.sha256(os.path.realpath(path).encode()).hexdigest()[:32]
    return lock_dir() / f"{digest}.lock"


@contextlib.contextmanager
def cassette_lock(path: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold the cassette's inter-process lock; a timeout says who to look for."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(lock_path(path)), timeout=timeout)
    try:
        lock.acquire()
    except filelock.Timeout as exc:
        raise CassetteError(
            f"could not lock cassette {path} within {timeout:g} s: another process is writing it "
            f"(lock file {lock_path(path)}); if none is, the lock holder is stuck, not dead "
            "(a dead holder's lock is released by the kernel)",
            file=str(path),
        ) from exc
    try:
        yield
    finally:
        lock.release()


def remove_stale_temps(path: Path) -> int:
    """Delete temporary files left by killed writers. Call only while holding the lock."""
    removed = 0
    for leftover in glob.glob(os.path.join(glob.escape(str(path.parent)), f".{glob.escape(path.name)}.*.tmp")):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(leftover)
            removed += 1
    return removed


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str | bytes) -> None:
    """Replace ``path`` with ``text`` so that no crash can leave a torn or empty file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8") if isinstance(text, str) else text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, _FILE_MODE)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    _fsync_directory(path.parent)  # make the rename itself durable
