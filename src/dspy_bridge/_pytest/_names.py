"""Where a test's cassettes live: ``cassettes/<module>/<Class>.<test>.bridge.yaml`` (bridge level) and
``….http.yaml`` (HTTP level), in pytest-recording's directory layout.

The bridge level has its own suffix so that pytest-recording's own cassette for the same test
(``cassettes/<module>/<test>.yaml``) never collides with it. Projects recorded before the suffix keep
their files: when ``<test>.yaml`` exists and ``<test>.bridge.yaml`` does not, the old file is read *and*
written (no churn in existing cassette folders; rename it to move to the new name).

Unsafe characters become ``-``; names longer than 120 characters keep a readable prefix plus a stable
hash, so the same test always maps to the same file on every machine.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

__all__ = ["BRIDGE_SUFFIX", "HTTP_SUFFIX", "cassette_paths", "checked_explicit", "resolve_bridge_path", "safe_name"]

BRIDGE_SUFFIX = ".bridge.yaml"
HTTP_SUFFIX = ".http.yaml"
_LEGACY_SUFFIX = ".yaml"

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")
_MAX = 120


def safe_name(name: str) -> str:
    cleaned = _UNSAFE.sub("-", name).strip("-.") or "test"
    if len(cleaned) <= _MAX:
        return cleaned
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return f"{cleaned[: _MAX - 13]}-{digest}"


def _stem_of(explicit: str) -> str:
    for suffix in (BRIDGE_SUFFIX, HTTP_SUFFIX, _LEGACY_SUFFIX):
        if explicit.endswith(suffix):
            return explicit.removesuffix(suffix)
    return explicit


def resolve_bridge_path(base: Path, stem: str) -> Path:
    """``<stem>.bridge.yaml``, unless only the pre-suffix ``<stem>.yaml`` exists: then that one."""
    new = base / f"{stem}{BRIDGE_SUFFIX}"
    legacy = base / f"{stem}{_LEGACY_SUFFIX}"
    if not new.exists() and legacy.exists():
        return legacy
    return new


def checked_explicit(name: str) -> str:
    """A mark's ``cassette=`` name, refused (``UsageError``) if it could leave the cassette directory."""
    from dspy_bridge._exceptions import UsageError

    path = Path(name)
    if not name or path.is_absolute() or ".." in path.parts or "\\" in name or "\x00" in name:
        raise UsageError(
            f"cassette name {name!r} must be a relative path inside the cassette directory "
            "(no absolute path, no '..'): e.g. cassette='shared/qa.yaml'"
        )
    return name


def cassette_paths(item: pytest.Item, root: str | None, explicit: str | None) -> tuple[Path, Path]:
    """(bridge cassette, HTTP cassette) for ``item``; ``explicit`` is the mark's ``cassette=`` name."""
    module_path = Path(str(item.path))
    base = Path(root) if root else module_path.parent / "cassettes"
    if explicit:
        stem = _stem_of(checked_explicit(explicit))
    else:
        cls = getattr(item, "cls", None)
        parts = [part for part in (cls.__name__ if cls else None, item.name) if part]
        stem = str(Path(module_path.stem) / safe_name(".".join(parts)))
    return resolve_bridge_path(base, stem), base / f"{stem}{HTTP_SUFFIX}"
