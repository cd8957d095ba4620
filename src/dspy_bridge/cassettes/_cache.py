"""A parse cache for big cassettes: YAML stays the source of truth, msgpack makes reloads cheap.

PyYAML builds Python objects in Python even with the C parser, so a 10,000-interaction cassette
takes seconds to parse, and every mock worker of a pool parses it again. Files of at least
``MIN_BYTES`` are cached (at most ``MAX_ENTRIES``) after their first successful parse and validation, keyed by the SHA-256
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
    return None if directory is None else directory / f"{digest}-{__version__}.msgpack"


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
        return  # e.g. a YAML timestamp someone typed by hand: such a file just is not cached
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
    with contextlib.suppress(OSError):
        entries = sorted(directory.glob("*.msgpack"), key=lambda p: p.stat().st_mtime, reverse=True)
        for stale in entries[MAX_ENTRIES:]:
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
