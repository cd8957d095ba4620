"""Where a test's cassettes live: ``cassettes/<module>/<Class>.<test>.yaml`` (pytest-recording's layout).

Unsafe characters become ``-``; names longer than 120 characters keep a readable prefix plus a stable
hash, so the same test always maps to the same file on every machine.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

__all__ = ["cassette_paths", "safe_name"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")
_MAX = 120


def safe_name(name: str) -> str:
    cleaned = _UNSAFE.sub("-", name).strip("-.") or "test"
    if len(cleaned) <= _MAX:
        return cleaned
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return f"{cleaned[: _MAX - 13]}-{digest}"


def cassette_paths(item: pytest.Item, root: str | None, explicit: str | None) -> tuple[Path, Path]:
    """(bridge cassette, HTTP cassette) for ``item``; ``explicit`` is the mark's ``cassette=`` name."""
    module_path = Path(str(item.path))
    base = Path(root) if root else module_path.parent / "cassettes"
    if explicit:
        stem = explicit.removesuffix(".yaml")
    else:
        cls = getattr(item, "cls", None)
        parts = [part for part in (cls.__name__ if cls else None, item.name) if part]
        stem = str(Path(module_path.stem) / safe_name(".".join(parts)))
    bridge = base / f"{stem}.yaml"
    return bridge, bridge.with_name(bridge.stem + ".http.yaml")
