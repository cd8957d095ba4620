"""A parse cache for big cassettes: YAML stays the source of truth, msgpack makes reloads cheap.

PyYAML builds Python objects in Python even with the C parser, so a 10,000-interaction cassette
takes seconds to parse, and every mock worker of a pool parses it again. Files of at least
``MIN_BYTES`` are cached (at most ``MAX_ENTRIES`` and ``max_total_bytes()`` in all) after their first successful parse and validation, keyed by the SHA-256
of their bytes (any edit is a new key, so the cache can never serve stale data). Small files are
never cached: they parse in milliseconds. Every cache failure is silent and falls back to YAML.

Location: ``$DSPY_BRIDGE_CACHE_DIR`` or ``$XDG_CACHE_HOME/dspy-bridge`` (``~/.cache/dspy-bridge``),
subdirectory ``cassettes``; ``DSPY_BRIDGE_CASSETTE_CACHE=0`` turns it off.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import msgpack

from dspy_bridge._version import __version__

__all__ = ["MIN_BYTES", "cache_dir", "read", "write"]

MIN_BYTES = 256 * 1024
MAX_ENTRIES = 64  # oldest entries beyond this are deleted on write: old versions of edited files
_DEFAULT_MAX_TOTAL_BYTES = 256 * 1024 * 1024
_LAYOUT = "L1"  # entries written since cassettes are checked against ``_limits`` (older ones are never read)


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
    explicit = os.environ.get("DSPY_BRIDGE_CACHE_DIR")
    base = (
        Path(explicit) if explicit else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dspy-bridge"
    )
    return base / "cassettes"


def _entry(digest: str) -> Path | None:
    directory = cache_dir()
    return None if directory is None else directory / f"{digest}-{__version__}-{_LAYOUT}.msgpack"


def read(digest: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """The cached ``(meta, interactions)`` of the file with this digest, if any."""
    entry = _entry(digest)
    if entry is None:
        return None
    try:
        meta, interactions = msgpack.unpackb(entry.read_bytes(), raw=False, strict_map_key=False)
    except (OSError, ValueError, TypeError, msgpack.UnpackException):
        return None
    if not isinstance(meta, dict) or not isinstance(interactions, list):
        return None
    return meta, interactions


def write(digest: str, meta: dict[str, Any], interactions: list[dict[str, Any]]) -> None:
    """Store a parsed, validated cassette (best effort: never raises)."""
    entry = _entry(digest)
    if entry is None:
        return
    try:
        payload = msgpack.packb([meta, interactions], use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return  # cannot happen for a checked cassette; never worth failing a load over
    if len(payload) > max_total_bytes():
        return
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=entry.parent, prefix=".", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.replace(temp, entry)
    except OSError:
        with contextlib.suppress(OSError, UnboundLocalError):
            os.unlink(temp)
        return
    _evict(entry.parent)


def _evict(directory: Path) -> None:
    """Keep the newest entries within ``MAX_ENTRIES`` and ``max_total_bytes()``."""
    budget = max_total_bytes()
    with contextlib.suppress(OSError):
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
