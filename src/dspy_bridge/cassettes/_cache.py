"""A parse cache for big cassettes, shared by every process: the file stays the source of truth.

Files of at least ``MIN_BYTES`` are cached as msgpack (at most ``MAX_ENTRIES`` and ``max_total_bytes()`` in
all) after their first successful parse and validation. It matters most for big files that PyYAML must read
(hand-edited or older layouts: seconds); the canonical layout parses fast anyway, and reloads from here are
faster still. Every mock worker of every pool and pytest-xdist process shares the directory, so:

- the key is the SHA-256 of the file's bytes (any edit is a new key: the cache never serves stale data),
  plus the dspy-bridge version and the entry layout;
- an entry is written to a temporary file and renamed into place (a reader sees a whole entry or none;
  concurrent writers of one key write the same bytes, the last rename wins);
- an entry is written only after the file parsed and validated, and carries a checksum of its payload and
  the key it was written for: a torn, damaged or misplaced entry is ignored (and deleted), the file is
  parsed again and the entry rebuilt. A cache failure is never an error and never a wrong answer.

Location: ``$DSPY_BRIDGE_CACHE_DIR`` or ``$XDG_CACHE_HOME/dspy-bridge`` (``~/.cache/dspy-bridge``),
subdirectory ``cassettes``; ``DSPY_BRIDGE_CASSETTE_CACHE=0`` turns it off.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing stays off a mock worker's replay path
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

from dspy_bridge._version import __version__

__all__ = ["MIN_BYTES", "cache_dir", "read", "write"]

MIN_BYTES = 256 * 1024
MAX_ENTRIES = 64  # oldest entries beyond this are deleted on write: old versions of edited files
_DEFAULT_MAX_TOTAL_BYTES = 256 * 1024 * 1024
_LAYOUT = "L2"  # L2: checksummed entries that name their key (older entries are never read)
_MAGIC = b"DBCC2\n"
_CHECKSUM_BYTES = 16
_STALE_TEMP_SECONDS = 3600  # a temporary file this old was left by a killed writer


def max_total_bytes() -> int:
    """The cache's size budget (``$DSPY_BRIDGE_CASSETTE_CACHE_MAX_BYTES``, default 256 MiB): the oldest
    entries go first; an entry larger than the whole budget is never written."""
    try:
        return int(os.environ.get("DSPY_BRIDGE_CASSETTE_CACHE_MAX_BYTES", _DEFAULT_MAX_TOTAL_BYTES))
    except ValueError:
        return _DEFAULT_MAX_TOTAL_BYTES


def cache_dir() -> Path | None:
    """Where parsed cassettes are kept, or ``None`` when caching is off."""
    if os.environ.get("DSPY_BRIDGE_CASSETTE_CACHE", "1").lower() in ("0", "false", "no", "off"):
        return None
    from pathlib import Path

    explicit = os.environ.get("DSPY_BRIDGE_CACHE_DIR")
    base = (
        Path(explicit) if explicit else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dspy-bridge"
    )
    return base / "cassettes"


def _entry(digest: str) -> Path | None:
    directory = cache_dir()
    return None if directory is None else directory / f"{digest}-{__version__}-{_LAYOUT}.msgpack"


def _checksum(payload: bytes) -> bytes:
    import hashlib

    return hashlib.blake2b(payload, digest_size=_CHECKSUM_BYTES).digest()


def _decode(blob: bytes, digest: str) -> tuple[dict[str, Any], list[dict[str, Any]], bool] | None:
    import msgpack

    head = len(_MAGIC) + _CHECKSUM_BYTES
    if not blob.startswith(_MAGIC) or blob[len(_MAGIC) : head] != _checksum(blob[head:]):
        return None
    try:
        key, meta, interactions, canonical = msgpack.unpackb(blob[head:], raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        return None
    if key != digest or type(canonical) is not bool or type(meta) is not dict or type(interactions) is not list:
        return None
    return meta, interactions, canonical


def read(digest: str) -> tuple[dict[str, Any], list[dict[str, Any]], bool] | None:
    """The cached ``(meta, interactions, canonical)`` of the file with this digest, if a sound entry exists
    (``canonical``: the file is in the canonical layout, see ``_layout``)."""
    entry = _entry(digest)
    if entry is None:
        return None
    try:
        blob = entry.read_bytes()
    except OSError:
        return None
    found = _decode(blob, digest)
    if found is None:  # damaged: drop it (the caller parses the file and writes a sound one)
        try:
            entry.unlink()
        except OSError:
            pass
    return found


def write(digest: str, meta: dict[str, Any], interactions: list[dict[str, Any]], *, canonical: bool = False) -> None:
    """Store a parsed, validated cassette (best effort: never raises)."""
    entry = _entry(digest)
    if entry is None:
        return
    import msgpack

    try:
        payload = msgpack.packb([digest, meta, interactions, canonical], use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return  # cannot happen for a checked cassette; never worth failing a load over
    if len(payload) > max_total_bytes():
        return
    import contextlib

    temp = None
    try:
        import tempfile

        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=entry.parent, prefix=".", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(_MAGIC + _checksum(payload) + payload)
        os.replace(temp, entry)  # atomic: readers in other processes see the old entry, or this one
    except OSError:
        if temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp)
        return
    _evict(entry.parent)


def _evict(directory: Path) -> None:
    """Keep the newest entries within ``MAX_ENTRIES`` and ``max_total_bytes()``; drop old temporary files."""
    import contextlib
    import time

    budget = max_total_bytes()
    with contextlib.suppress(OSError):
        for leftover in directory.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                if time.time() - leftover.stat().st_mtime > _STALE_TEMP_SECONDS:
                    leftover.unlink()
        stats = []
        for entry in directory.glob("*.msgpack"):
            with contextlib.suppress(FileNotFoundError):
                stats.append((entry, entry.stat()))
        stats.sort(key=lambda item: item[1].st_mtime, reverse=True)
        total = 0
        for index, (entry, stat) in enumerate(stats):
            total += stat.st_size
            if index >= MAX_ENTRIES or total > budget:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
