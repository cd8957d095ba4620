"""The bridge cassette file format (version 1): YAML text ⇄ validated plain data.

    version: 1
    meta: {created, dspy_bridge_version, dspy_version, model, recorded_against, ...}
    interactions:
    - request:  {command, session, program?, model?, args}
      response: {ok, result, chunks?: [{field, text}]} | {ok: false, error: {type, message, retryable, details}}

YAML is read with the safe loader only (the C one when libyaml is present: ~10x faster for big
files) and checked with pydantic; the checked data stays plain dicts. Anything wrong becomes a
``CassetteCorrupt`` naming the file, the line and column, and what to do.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from dspy_bridge._exceptions import CassetteCorrupt
from dspy_bridge._version import __version__
from dspy_bridge.cassettes._limits import LimitError, check_nodes, compose
from dspy_bridge.cassettes._shape import well_formed

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = [
    "FORMAT_VERSION",
    "CassetteDocument",
    "SafeDumper",
    "SafeLoader",
    "corrupt",
    "dump_document",
    "parse_document",
]

FORMAT_VERSION = 1

SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BaseDumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

_FIX = (
    "Fix it by hand (it is plain YAML), or delete it and record again with --bridge-record=rewrite "
    "(or Recorder(path, RecordMode.REWRITE))."
)


class SafeDumper(_BaseDumper):  # type: ignore[valid-type,misc]
    """The safe (C when available) dumper; ``dump_document`` hands it ready-made nodes."""


# -- plain data <-> YAML nodes, without PyYAML's general-purpose (and slow) Python layer ---------
# PyYAML's C parser/emitter only does the text; building Python objects from nodes (and nodes
# from objects) runs in its Python constructor/representer, which handles anchors, merge keys,
# recursive objects and arbitrary classes through generators and per-node bookkeeping. Cassettes
# are plain trees, so a direct walk is 2-3x faster; anything unusual falls back to the standard way.
_STR, _NULL, _BOOL, _INT = (f"tag:yaml.org,2002:{name}" for name in ("str", "null", "bool", "int"))
_MAP, _SEQ, _MERGE = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:merge"
_CONSTRUCTOR = yaml.constructor.SafeConstructor()
_REPRESENTER = yaml.representer.SafeRepresenter(default_flow_style=False)


class _Fallback(Exception):
    """The document uses a YAML feature the fast path does not handle (e.g. merge keys)."""


def _construct(node: yaml.Node, memo: dict[int, Any]) -> Any:
    if isinstance(node, yaml.ScalarNode):
        if node.tag == _STR:
            return node.value
        constructor = _CONSTRUCTOR.yaml_constructors.get(node.tag)
        if constructor is None or node.tag in (_MAP, _SEQ):
            raise yaml.constructor.ConstructorError(
                None, None, f"could not determine a constructor for the tag {node.tag!r}", node.start_mark
            )
        return constructor(_CONSTRUCTOR, node)
    found = memo.get(id(node))
    if found is not None:  # an alias: share the object, as PyYAML does (no exponential copies)
        return found
    if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ:
        items: list[Any] = []
        memo[id(node)] = items
        items.extend(_construct(child, memo) for child in node.value)
        return items
    if isinstance(node, yaml.MappingNode) and node.tag == _MAP:
        mapping: dict[Any, Any] = {}
        memo[id(node)] = mapping
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                raise _Fallback
            key = _construct(key_node, memo)
            try:
                mapping[key] = _construct(value_node, memo)
            except TypeError as exc:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, "found unhashable key", key_node.start_mark
                ) from exc
        return mapping
    raise yaml.constructor.ConstructorError(
        None, None, f"could not determine a constructor for the tag {node.tag!r}", node.start_mark
    )


def _load_yaml(text: str) -> Any:
    root = compose(text, SafeLoader)
    if root is None:
        return None
    check_nodes(root)  # plain, bounded, JSON-representable data only (``_limits``)
    try:
        return _construct(root, {})
    except _Fallback:
        return yaml.load(text, Loader=SafeLoader)


def _node(value: Any) -> yaml.Node:
    if isinstance(value, str):
        style = "|" if "\n" in value and len(value) < 100_000 else None
        return yaml.ScalarNode(_STR, value, style=style)
    if isinstance(value, dict):
        return yaml.MappingNode(_MAP, [(_node(k), _node(v)) for k, v in value.items()], flow_style=False)
    if isinstance(value, list | tuple):
        return yaml.SequenceNode(_SEQ, [_node(item) for item in value], flow_style=False)
    if value is None:
        return yaml.ScalarNode(_NULL, "null")
    if value is True or value is False:
        return yaml.ScalarNode(_BOOL, "true" if value else "false")
    if type(value) is int:
        return yaml.ScalarNode(_INT, str(value))
    node: yaml.Node = _REPRESENTER.represent_data(value)  # floats, bytes, dates: PyYAML's own rules
    return node


class CassetteDocument:
    """A parsed, validated cassette: ``meta`` and ``interactions`` as plain data."""

    __slots__ = ("interactions", "meta")

    def __init__(self, meta: dict[str, Any], interactions: list[dict[str, Any]]) -> None:
        self.meta = meta
        self.interactions = interactions


# -- reading -----------------------------------------------------------------------------------
def corrupt(path: Path, line: int | None, column: int | None, problem: str, fix: str = _FIX) -> CassetteCorrupt:
    where = f"{path}:{line}:{column}" if line is not None else str(path)
    return CassetteCorrupt(
        f"cassette {where}: {problem}. {fix}", file=str(path), line=line, column=column, problem=problem
    )


def _node_at(root: yaml.Node | None, loc: tuple[int | str, ...]) -> yaml.Node | None:
    """The deepest YAML node along a pydantic error location (for its line and column)."""
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = next((value for key, value in node.value if key.value == str(part)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            found = node.value[part]
        else:
            found = None
        if found is None:
            break
        node = found
    return node


def _validation_error(path: Path, text: str, exc: ValidationError) -> CassetteCorrupt:
    first = exc.errors()[0]
    loc = tuple(part for part in first["loc"] if isinstance(part, int | str))
    node = _node_at(yaml.compose(text, Loader=SafeLoader), loc)
    mark = node.start_mark if node is not None else None
    where = ".".join(str(part) for part in loc) or "<top>"
    more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
    return corrupt(
        path,
        mark.line + 1 if mark else None,
        mark.column + 1 if mark else None,
        f"{where}: {first['msg']}{more}",
    )


def _explain(data: Any, text: str, path: Path) -> None:
    """The pydantic models are the reference: raise their first problem as a ``CassetteCorrupt`` with a
    position (``well_formed`` is conservative, so data it doubts may still be valid: then nothing is raised)."""
    from pydantic import ValidationError

    from dspy_bridge.cassettes._models import CassetteModel

    try:
        CassetteModel.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(path, text, exc) from exc


def parse_document(text: str, path: Path) -> CassetteDocument:
    """Parse and validate cassette text; every failure is a ``CassetteCorrupt`` with a position."""
    try:
        data = _load_yaml(text)
    except LimitError as exc:
        raise corrupt(path, exc.line, exc.column, exc.problem) from None
    except RecursionError as exc:
        raise corrupt(path, None, None, "nested too deeply (or a recursive alias)") from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        if isinstance(exc, yaml.constructor.ConstructorError) and "tag" in (exc.problem or ""):
            problem = (
                f"unsafe or unknown YAML tag ({exc.problem}); bridge cassettes hold plain data only "
                "(maps, lists, strings, numbers, booleans, null) and are never loaded with an unsafe loader"
            )
        raise corrupt(path, mark.line + 1 if mark else None, mark.column + 1 if mark else None, problem) from exc
    except yaml.YAMLError as exc:  # e.g. a reader error on a control character (it has no marks)
        raise corrupt(path, None, None, f"not readable as YAML: {exc}") from exc
    if data is None:
        raise corrupt(path, 1, 1, "the file is empty (an interrupted write by another tool?)")
    if not isinstance(data, dict):
        raise corrupt(path, 1, 1, f"the top level must be a map with 'version', got a {type(data).__name__}")
    version = data.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        node = _node_at(yaml.compose(text, Loader=SafeLoader), ("version",))
        line = node.start_mark.line + 1 if node else None
        column = node.start_mark.column + 1 if node else None
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
    return CassetteDocument(dict(data["meta"]), interactions)


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


def dump_document(document: CassetteDocument) -> str:
    """YAML text for a cassette, in a stable, review-friendly layout."""
    data = {
        "version": FORMAT_VERSION,
        "meta": document.meta,
        "interactions": [
            {"request": _ordered_request(item["request"]), "response": _ordered_response(item["response"])}
            for item in document.interactions
        ],
    }
    text: str = yaml.serialize(
        _node(data),
        Dumper=SafeDumper,
        allow_unicode=True,
        width=2**30,  # never fold a line: a folded key would hide from a line-by-line scan
    )
    return text
