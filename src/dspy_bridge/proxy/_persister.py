"""A vcrpy persister that writes atomically, under a lock, without losing a concurrent writer's work.

vcrpy's ``FilesystemPersister`` writes the final path in place (a crash truncates the cassette)
and treats an unreadable file as empty (the next recording silently overwrites it). This one:

* loads with a clear ``CassetteCorrupt`` (file, line, column, the fix) on bad YAML or shape;
* saves to a temp file in the same directory, ``fsync``s it, ``os.replace``s it over the
  cassette and ``fsync``s the directory, all under a ``filelock.FileLock``;
* merges: if another process saved the same cassette since we loaded it, interactions it added
  are kept next to ours (two xdist workers recording into one file lose nothing).

Lock files are the bridge cassettes' (``cassettes._storage.lock_path``: in a per-user temp directory,
keyed by the cassette's real path), never next to the cassettes.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from filelock import FileLock

from dspy_bridge._exceptions import CassetteCorrupt
from dspy_bridge.cassettes._storage import lock_path, write_atomic  # one routine each for both cassette kinds

__all__ = ["AtomicPersister", "lock_for"]


def lock_for(path: str | os.PathLike[str], timeout: float = 120.0) -> FileLock:
    """The inter-process lock guarding one cassette path (the same file the bridge level would use)."""
    return FileLock(lock_path(Path(path)), timeout=timeout)


def _canonical(interaction: Any) -> str:
    return json.dumps(interaction, sort_keys=True, default=repr)


class AtomicPersister:
    """One instance per open cassette (it remembers what it loaded, to merge on save).

    Registered on the proxy's per-cassette ``vcr.VCR`` with ``register_persister``.
    """

    def __init__(self, lock_timeout: float = 120.0) -> None:
        self._lock_timeout = lock_timeout
        self._loaded_text: str | None = None

    # vcrpy calls these two

    def load_cassette(self, cassette_path: str | os.PathLike[str], serializer: Any) -> Any:
        from vcr.persisters.filesystem import CassetteNotFoundError
        from vcr.serialize import deserialize

        path = Path(cassette_path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CassetteNotFoundError() from None
        except UnicodeDecodeError as exc:
            raise self._corrupt(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        if not text.strip():  # as vcrpy: an empty file is a missing cassette
            raise CassetteNotFoundError()
        self._loaded_text = text
        try:
            return deserialize(text, serializer)
        except Exception as exc:  # YAML, constructor, shape (KeyError/TypeError) or old-format errors
            raise self._corrupt(path, _describe(exc)) from exc

    def save_cassette(self, cassette_path: str | os.PathLike[str], cassette_dict: Any, serializer: Any) -> None:
        from vcr.serialize import serialize

        path = Path(cassette_path)
        text = serialize(cassette_dict, serializer)
        with lock_for(path, self._lock_timeout):
            try:
                current: str | None = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                current = None
            if current is not None and current.strip() and current != self._loaded_text:
                text = self._merge(text, current, serializer)
            write_atomic(path, text)
        self._loaded_text = text

    # helpers

    def _merge(self, ours_text: str, theirs_text: str, serializer: Any) -> str:
        """Ours, plus interactions another process saved since we loaded (and we do not have)."""
        try:
            theirs = serializer.deserialize(theirs_text)
        except Exception:  # their file is unreadable: ours is the only good copy
            return ours_text
        if not isinstance(theirs, dict) or not isinstance(theirs.get("interactions"), list):
            return ours_text
        ours = serializer.deserialize(ours_text)
        loaded: set[str] = set()
        if self._loaded_text:
            with contextlib.suppress(Exception):
                loaded = {_canonical(i) for i in serializer.deserialize(self._loaded_text).get("interactions", [])}
        have = {_canonical(i) for i in ours["interactions"]}
        added = [i for i in theirs["interactions"] if _canonical(i) not in loaded and _canonical(i) not in have]
        if not added:
            return ours_text
        ours["interactions"].extend(added)
        if isinstance(theirs.get("metadata"), dict):
            ours["metadata"] = {**theirs["metadata"], **(ours.get("metadata") or {})}
        return str(serializer.serialize(ours))

    @staticmethod
    def _corrupt(path: Path, why: str) -> CassetteCorrupt:
        return CassetteCorrupt(
            f"HTTP cassette {path} cannot be loaded: {why}. Fix it by hand, or delete it and re-record "
            "(e.g. --bridge-record=rewrite with a key set).",
            path=str(path),
        )


def _describe(exc: Exception) -> str:
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        problem = getattr(exc, "problem", None) or type(exc).__name__
        return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"
    if isinstance(exc, KeyError | TypeError | AttributeError | IndexError):
        return f"not a vcrpy cassette (expected a mapping with 'interactions' of request/response pairs; {exc!r})"
    return str(exc) or type(exc).__name__
