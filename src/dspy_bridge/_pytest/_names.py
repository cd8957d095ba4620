"""Where a test's cassettes live: ``cassettes/<module>/<Class>.<test>.yaml`` (pytest-recording's layout).

Unsafe characters become ``-``; names longer than 120 characters keep a readable prefix plus a stable
hash, so the same test always maps to the same file on every machine.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

__all__ = ["cassette_paths", "checked_explicit", "safe_name"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")
_MAX = 120


def safe_name(name: str) -> str:
    cleaned = _UNSAFE.sub("-", name).strip("-.") or "test"
    if len(cleaned) <= _MAX:
        return cleaned
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return f"{cleaned[: _MAX - 13]}-{digest}"


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
        stem = checked_explicit(explicit).removesuffix(".yaml")
    else:
        cls = getattr(item, "cls", None)
        parts = [part for part in (cls.__name__ if cls else None, item.name) if part]
        stem = str(Path(module_path.stem) / safe_name(".".join(parts)))
    bridge = base / f"{stem}.yaml"
    return bridge, bridge.with_name(bridge.stem + ".http.yaml")
