"""Which environment a zygote daemon serves: a fingerprint both sides compute and compare the same way.

A forked worker behaves like a spawned one only if the daemon that forked it runs the client's Python,
packages and dspy-bridge sources. The fingerprint names them — Python executable and version, dspy-bridge
version and source stamp, DSPy version, and a hash of the installed distributions (their
``name-version.dist-info`` directory names, what ``importlib.metadata`` reads). The daemon refuses a client
whose fingerprint differs and says which fields differ; ``daemon status`` shows the same comparison.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import sys
from collections.abc import Iterable
from pathlib import Path

__all__ = ["environment_fingerprint", "fingerprint_mismatch"]

_FIELDS = {
    "python": "Python executable",
    "prefix": "Python environment (sys.prefix)",
    "python_version": "Python version",
    "dspy_bridge": "dspy-bridge version",
    "dspy_bridge_source": "dspy-bridge source stamp (edited files since the daemon started?)",
    "dspy": "DSPy version",
    "distributions": "installed-distribution hash (packages installed, removed or upgraded?)",
}
_PACKAGE_ROOT = Path(__file__).parents[1]  # src/dspy_bridge: every module of ours


@functools.cache
def environment_fingerprint() -> dict[str, str]:
    """What must match between a daemon and a client for forked workers to behave like spawned ones."""
    from importlib.metadata import PackageNotFoundError, version

    def dist_version(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return {
        "python": os.path.realpath(sys.executable),  # python, python3, python3.11: one interpreter
        "prefix": sys.prefix,  # which environment: venvs share the real interpreter but not their packages
        "python_version": sys.version.split()[0],
        "dspy_bridge": dist_version("dspy-bridge"),
        "dspy_bridge_source": _source_stamp(_PACKAGE_ROOT),
        "dspy": dist_version("dspy"),
        "distributions": _distributions_hash(sys.path),
    }


def _distributions_hash(entries: Iterable[str]) -> str:
    """Hash of the ``name-version.dist-info`` names in the site directories (~1 ms, no metadata parsing)."""
    names: set[str] = set()
    for entry in entries:
        if os.path.basename(entry.rstrip(os.sep)) not in ("site-packages", "dist-packages"):
            continue
        with contextlib.suppress(OSError), os.scandir(entry) as scan:
            names.update(e.name for e in scan if e.name.endswith((".dist-info", ".egg-info")))
    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:16]


def _source_stamp(root: Path) -> str:
    """Sizes and mtimes of our own modules: an editable install changes code without changing version."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        info = path.stat()
        digest.update(f"{path.relative_to(root)}:{info.st_size}:{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def fingerprint_mismatch(ours: dict[str, str], theirs: object) -> str | None:
    """None when compatible, else a sentence naming every field that differs, with both values."""
    if not isinstance(theirs, dict):
        return "the client sent no environment fingerprint"
    differences = [
        f"{_FIELDS.get(key, key)}: daemon {ours.get(key)!r}, client {theirs.get(key)!r}"
        for key in sorted(set(ours) | set(theirs))
        if ours.get(key) != theirs.get(key)
    ]
    if not differences:
        return None
    return (
        "incompatible environment: "
        + "; ".join(differences)
        + " — restart the daemon from this environment (`dspy-bridge daemon stop && dspy-bridge daemon start`)"
    )
