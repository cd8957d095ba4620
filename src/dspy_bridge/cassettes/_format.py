"""The bridge cassette file format (version 1): text ⇄ validated plain data.

    version: 1
    meta: {created, dspy_bridge_version, dspy_version, model, recorded_against, ...}
    interactions:
    - request:  {command, session, program?, model?, args}
      response: {ok, result, chunks?: [{field, text}]} | {ok: false, error: {type, message, retryable, details}}

Files are written in the canonical layout (``_layout``: plain YAML whose values are one-line JSON) and read
with ``json`` when they are in it; anything else (hand-edited block style, files from older versions) is read
with PyYAML's safe loader (``_yamlio``), imported only then. The data is checked by hand (``_shape``) and, if
that doubts it, by the pydantic models, which explain the problem; the checked data stays plain dicts.
Anything wrong becomes a ``CassetteCorrupt`` naming the file, the line and column, and what to do.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing stays off a mock worker's replay path
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import Any, TypeVar

    T = TypeVar("T")

    from pydantic import ValidationError

from dspy_bridge._exceptions import CassetteCorrupt
from dspy_bridge._version import __version__
from dspy_bridge.cassettes import _layout
from dspy_bridge.cassettes._shape import well_formed

__all__ = [
    "FORMAT_VERSION",
    "CassetteDocument",
    "corrupt",
    "dump_document",
    "dump_interactions",
    "max_bytes",
    "parse_document",
    "without_gc",
]

FORMAT_VERSION = 1
_DEFAULT_MAX_BYTES = 512 * 1024 * 1024


def max_bytes() -> int:
    """Largest cassette file accepted (``$DSPY_BRIDGE_CASSETTE_MAX_BYTES``, default 512 MiB)."""
    import os

    try:
        return int(os.environ.get("DSPY_BRIDGE_CASSETTE_MAX_BYTES", _DEFAULT_MAX_BYTES))
    except ValueError:
        return _DEFAULT_MAX_BYTES


_FIX = (
    "Fix it by hand (it is plain YAML), or delete it and record again with --bridge-record=rewrite "
    "(or Recorder(path, RecordMode.REWRITE))."
)


class CassetteDocument:
    """A parsed, validated cassette: ``meta`` and ``interactions`` as plain data."""

    __slots__ = ("canonical", "interactions", "meta")

    def __init__(self, meta: dict[str, Any], interactions: list[dict[str, Any]], *, canonical: bool = False) -> None:
        self.meta = meta
        self.interactions = interactions
        self.canonical = canonical  # read from the canonical layout (so new interactions may be appended)


def without_gc(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` with the cyclic garbage collector paused. Parsing or writing a big cassette builds
    tens of thousands of dicts and lists, and each collection then walks every object the process holds:
    with a few big cassettes in memory, loading one more took 2-4 times as long. The data is trees (no
    cycles), so nothing is left for the collector to find."""
    import gc

    enabled = gc.isenabled()
    gc.disable()
    try:
        return function(*args)
    finally:
        if enabled:
            gc.enable()


# -- reading -----------------------------------------------------------------------------------
def corrupt(path: str | Path, line: int | None, column: int | None, problem: str, fix: str = _FIX) -> CassetteCorrupt:
    where = f"{path}:{line}:{column}" if line is not None else str(path)
    return CassetteCorrupt(
        f"cassette {where}: {problem}. {fix}", file=str(path), line=line, column=column, problem=problem
    )


def _position(text: str, loc: tuple[int | str, ...]) -> tuple[int | None, int | None]:
    from dspy_bridge.cassettes._yamlio import YAMLError, node_mark

    try:
        mark = node_mark(text, loc)
    except YAMLError:
        return None, None
    return mark if mark is not None else (None, None)


def _validation_error(path: str | Path, text: str, exc: ValidationError) -> CassetteCorrupt:
    first = exc.errors()[0]
    loc = tuple(part for part in first["loc"] if isinstance(part, int | str))
    line, column = _position(text, loc)
    where = ".".join(str(part) for part in loc) or "<top>"
    more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
    return corrupt(path, line, column, f"{where}: {first['msg']}{more}")


def _explain(data: Any, text: str, path: str | Path) -> None:
    """The pydantic models are the reference: raise their first problem as a ``CassetteCorrupt`` with a
    position (``well_formed`` is conservative, so data it doubts may still be valid: then nothing is raised)."""
    from pydantic import ValidationError

    from dspy_bridge.cassettes._models import CassetteModel

    try:
        CassetteModel.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(path, text, exc) from exc


def _read_yaml(text: str, path: str | Path) -> Any:
    """Any YAML (not the canonical layout, or something in it JSON and YAML might read differently)."""
    from dspy_bridge.cassettes._limits import LimitError
    from dspy_bridge.cassettes._yamlio import YAMLError, load_yaml, marked

    try:
        return load_yaml(text)
    except LimitError as exc:
        raise corrupt(path, exc.line, exc.column, exc.problem) from None
    except RecursionError as exc:
        raise corrupt(path, None, None, "nested too deeply (or a recursive alias)") from exc
    except YAMLError as exc:
        line, column, problem = marked(exc)
        if text.startswith(_layout.HEADER) and not text.endswith("\n"):  # the writer ends every line
            line, column = text.count("\n") + 1, 1
            problem = f"the file ends in the middle of this line (an interrupted write?): {problem}; delete the line"
        raise corrupt(path, line, column, problem) from exc


def parse_document(text: str, path: str | Path) -> CassetteDocument:
    """Parse and validate cassette text; every failure is a ``CassetteCorrupt`` with a position."""
    data = _layout.read(text)
    canonical = data is not None
    if data is None:
        data = _read_yaml(text, path)
    if data is None:
        raise corrupt(path, 1, 1, "the file is empty (an interrupted write by another tool?)")
    if not isinstance(data, dict):
        raise corrupt(path, 1, 1, f"the top level must be a map with 'version', got a {type(data).__name__}")
    version = data.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        line, column = _position(text, ("version",))
        raise corrupt(
            path,
            line,
            column,
            f"format version {version} is newer than this dspy-bridge ({__version__}) reads "
            f"(up to version {FORMAT_VERSION})",
            "Upgrade dspy-bridge (pip install -U dspy-bridge), or re-record the cassette with this version "
            "(--bridge-record=rewrite).",
        )
    if version != FORMAT_VERSION:
        raise corrupt(path, 1, 1, f"'version' must be {FORMAT_VERSION}, got {version!r}")
    if not well_formed(data):  # the common case skips pydantic (and its import) entirely
        _explain(data, text, path)
    interactions = data.get("interactions") or []
    for interaction in interactions:
        request = interaction["request"]
        request.setdefault("session", None)
        request.setdefault("args", {})
    return CassetteDocument(dict(data["meta"]), interactions, canonical=canonical)


# -- writing -----------------------------------------------------------------------------------
_REQUEST_ORDER = ("command", "session", "program", "model", "args")


def _ordered_request(request: dict[str, Any]) -> dict[str, Any]:
    out = {key: request[key] for key in _REQUEST_ORDER if key in request and request[key] is not None}
    out.setdefault("session", None)
    out.setdefault("args", {})
    return {key: out[key] for key in _REQUEST_ORDER if key in out}


def _ordered_response(response: dict[str, Any]) -> dict[str, Any]:
    if response.get("ok"):
        if response.get("chunks") is not None:
            return {"ok": True, "result": response.get("result"), "chunks": response["chunks"]}
        return {"ok": True, "result": response.get("result")}
    return {"ok": False, "error": response.get("error")}


def _ordered(interactions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"request": _ordered_request(item["request"]), "response": _ordered_response(item["response"])}
        for item in interactions
    ]


def dump_document(document: CassetteDocument) -> str:
    """The text of a cassette in the canonical layout: stable key order, one line per request and response."""
    return _layout.dump(FORMAT_VERSION, document.meta, _ordered(document.interactions))


def dump_interactions(interactions: list[dict[str, Any]]) -> str:
    """The lines that append these interactions to a canonical file whose last line is an interaction."""
    return _layout.dump_interactions(_ordered(interactions))
