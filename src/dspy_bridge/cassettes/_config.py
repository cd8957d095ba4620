"""The ``context["cassette"]`` map a request carries to a mock worker, parsed and checked.

    {"path": str, "match_on": [..], "ignore": [..], "allow_repeats": bool,
     "synthetic": bool, "record_hint": str, "stream_chunks": int}

Only ``path`` is required (a bare string is accepted as the path); it should be absolute,
because a relative one is resolved against the worker's working directory.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing stays off a mock worker's replay path
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

from dspy_bridge._exceptions import UsageError
from dspy_bridge.cassettes._match import Matcher

__all__ = ["CassetteConfig", "cassette_context", "stream_chunk_size"]

_KEYS = frozenset({"path", "match_on", "ignore", "allow_repeats", "synthetic", "record_hint", "stream_chunks"})


def stream_chunk_size(value: Any) -> int | None:
    """``stream_chunks``: ``None``/``"recorded"`` (the recorded chunks) or N ≥ 1 characters per chunk."""
    if value is None or value == "recorded":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(
            f"stream_chunks must be 'recorded' or a whole number of characters per chunk (1 or more), got {value!r}"
        )
    return value


def _strings(value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
        raise UsageError(f'context["cassette"][{name!r}] must be a list of field names, got {value!r}')
    return tuple(value)


class CassetteConfig:
    """Which cassette answers a request, and how strictly."""

    __slots__ = ("allow_repeats", "matcher", "path", "record_hint", "stream_chunks", "synthetic")

    def __init__(
        self,
        path: str | Path | None,
        *,
        match_on: tuple[str, ...] | list[str] | None = None,
        ignore: tuple[str, ...] | list[str] = (),
        allow_repeats: bool = False,
        synthetic: bool = False,
        record_hint: str | None = None,
        stream_chunks: int | None = None,
    ) -> None:
        self.path: str | None = os.path.abspath(path) if path else None  # a str: pathlib stays off replay
        self.stream_chunks = stream_chunk_size(stream_chunks)
        self.matcher = Matcher(match_on, ignore)
        self.allow_repeats = allow_repeats
        self.synthetic = synthetic
        self.record_hint = record_hint

    @classmethod
    def from_context(cls, value: Any) -> CassetteConfig:
        """Parse ``context["cassette"]``; a wrong shape raises ``UsageError`` naming the key."""
        if isinstance(value, str):
            value = {"path": value}
        if not isinstance(value, dict):
            raise UsageError(f'context["cassette"] must be a map or a path string, got {type(value).__name__}')
        unknown = sorted(set(value) - _KEYS)
        if unknown:
            raise UsageError(f'context["cassette"] has unknown keys {unknown}; known: {sorted(_KEYS)}')
        path = value.get("path")
        if path is not None and not isinstance(path, str):
            raise UsageError(f'context["cassette"]["path"] must be a string, got {path!r}')
        for flag in ("allow_repeats", "synthetic"):
            if not isinstance(value.get(flag, False), bool):
                raise UsageError(f'context["cassette"][{flag!r}] must be true or false')
        hint = value.get("record_hint")
        if hint is not None and not isinstance(hint, str):
            raise UsageError('context["cassette"]["record_hint"] must be a string')
        if path is None and not value.get("synthetic", False):
            raise UsageError('context["cassette"] needs a "path" (or "synthetic": true)')
        return cls(
            path,
            match_on=_strings(value.get("match_on"), "match_on") or None,
            ignore=_strings(value.get("ignore"), "ignore"),
            allow_repeats=bool(value.get("allow_repeats", False)),
            synthetic=bool(value.get("synthetic", False)),
            record_hint=hint,
            stream_chunks=stream_chunk_size(value.get("stream_chunks")),
        )

    def to_context(self) -> dict[str, Any]:
        out: dict[str, Any] = {"allow_repeats": self.allow_repeats, "synthetic": self.synthetic}
        if self.path is not None:
            out["path"] = self.path
        out["match_on"] = list(self.matcher.match_on)
        if self.matcher.ignore:
            out["ignore"] = list(self.matcher.ignore)
        if self.record_hint:
            out["record_hint"] = self.record_hint
        if self.stream_chunks is not None:
            out["stream_chunks"] = self.stream_chunks
        return out


def cassette_context(
    path: str | Path | None,
    *,
    match_on: tuple[str, ...] | list[str] | None = None,
    ignore: tuple[str, ...] | list[str] = (),
    allow_repeats: bool = False,
    synthetic: bool = False,
    record_hint: str | None = None,
    stream_chunks: int | None = None,
) -> dict[str, Any]:
    """The ``context["cassette"]`` map for requests a mock worker should answer from ``path``."""
    return CassetteConfig(
        path,
        match_on=match_on,
        ignore=ignore,
        allow_repeats=allow_repeats,
        synthetic=synthetic,
        record_hint=record_hint,
        stream_chunks=stream_chunks,
    ).to_context()
