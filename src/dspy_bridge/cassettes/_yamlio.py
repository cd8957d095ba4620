"""The PyYAML side of reading cassettes: any YAML a person or an older dspy-bridge wrote.

The canonical layout (``_layout``) is read without PyYAML; this module reads everything else (block style,
comments in odd places, files from before the layout existed) and finds line/column positions for errors.
It is imported only when needed, so a mock worker replaying canonical files never pays for PyYAML.

PyYAML's C parser only does the text; building Python objects from nodes runs in its Python constructor,
which handles anchors, merge keys, recursive objects and arbitrary classes through generators and per-node
bookkeeping. Cassettes are plain trees, so a direct walk is 2-3x faster; anything unusual falls back to the
standard way. YAML is read with the safe loader only (the C one when libyaml is present).
"""

from __future__ import annotations

from typing import Any

import yaml

from dspy_bridge.cassettes._limits import check_nodes, compose

__all__ = ["SafeLoader", "YAMLError", "load_yaml", "marked", "node_mark"]

SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
YAMLError = yaml.YAMLError

_STR = "tag:yaml.org,2002:str"
_MAP, _SEQ, _MERGE = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:merge"
_CONSTRUCTOR = yaml.constructor.SafeConstructor()


class _Fallback(Exception):
    """The document uses a YAML feature the direct walk does not handle (e.g. merge keys)."""


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


def load_yaml(text: str) -> Any:
    """Plain data from YAML text, checked by ``_limits`` first (raises ``LimitError`` or ``yaml.YAMLError``)."""
    root = compose(text, SafeLoader)
    if root is None:
        return None
    check_nodes(root)  # plain, bounded, JSON-representable data only (``_limits``)
    try:
        return _construct(root, {})
    except _Fallback:
        return yaml.load(text, Loader=SafeLoader)


def node_mark(text: str, loc: tuple[int | str, ...]) -> tuple[int, int] | None:
    """1-based (line, column) of the deepest YAML node along a pydantic error location, if found."""
    node: yaml.Node | None = yaml.compose(text, Loader=SafeLoader)
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
    if node is None:
        return None
    return node.start_mark.line + 1, node.start_mark.column + 1


def marked(exc: yaml.YAMLError) -> tuple[int | None, int | None, str]:
    """(line, column, problem) of a PyYAML error, 1-based; tag errors explained for cassettes."""
    if not isinstance(exc, yaml.MarkedYAMLError):  # e.g. a reader error on a control character (no marks)
        return None, None, f"not readable as YAML: {exc}"
    mark = exc.problem_mark or exc.context_mark
    problem = " ".join(str(part) for part in (exc.context, exc.problem) if part)
    if isinstance(exc, yaml.constructor.ConstructorError) and "tag" in (exc.problem or ""):
        problem = (
            f"unsafe or unknown YAML tag ({exc.problem}); bridge cassettes hold plain data only "
            "(maps, lists, strings, numbers, booleans, null) and are never loaded with an unsafe loader"
        )
    return (mark.line + 1 if mark else None), (mark.column + 1 if mark else None), problem
