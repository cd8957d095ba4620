"""What a bridge cassette may be: plain, bounded, JSON-representable data, checked on the YAML nodes.

A cassette is replayed by mock workers that must encode every answer in msgpack *and* JSON, so a file
that loads but holds something else (a YAML date, an int above 2^64, ``.nan``, an alias that makes
the tree recursive or exponentially large) would only fail later, inside a worker. ``check_nodes``
walks the composed node graph once, iteratively (no recursion, so no ``RecursionError``), before any
Python object is built, and refuses:

- aliases and merge keys (``&anchor``/``*ref``/``<<``): a billion-laughs file is 1 KB of text;
- nesting deeper than ``MAX_DEPTH``, more than ``MAX_NODES`` nodes, text above ``_format.max_bytes()``;
- any tag but str, null, bool, int, float, map and seq (dates, ``!!binary``, ``!!python/...``, unknown);
- ints outside int64/uint64, non-finite floats, map keys that are not strings.

Each refusal names the line and column. ``Cassette.load`` and ``dspy-bridge verify`` both use it.
"""

from __future__ import annotations

import math
from typing import Any

import yaml

__all__ = ["MAX_DEPTH", "MAX_NODES", "LimitError", "check_nodes"]

MAX_DEPTH = 100
MAX_NODES = 20_000_000
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1

_Y = "tag:yaml.org,2002:"
_STR, _NULL, _BOOL, _INT, _FLOAT = (_Y + name for name in ("str", "null", "bool", "int", "float"))
_MAP, _SEQ = _Y + "map", _Y + "seq"
_CONSTRUCTOR = yaml.constructor.SafeConstructor()


class LimitError(Exception):
    """A cassette is not plain bounded data; ``line``/``column`` are 1-based (or None)."""

    def __init__(self, problem: str, node: yaml.Node | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        mark = node.start_mark if node is not None else None
        self.line = mark.line + 1 if mark is not None else None
        self.column = mark.column + 1 if mark is not None else None


def _tag_name(tag: str) -> str:
    return "!!" + tag[len(_Y) :] if tag.startswith(_Y) else tag


def _check_scalar(node: yaml.ScalarNode) -> None:
    tag = node.tag
    if tag in (_STR, _NULL, _BOOL):
        return
    if tag == _INT:
        value = _CONSTRUCTOR.construct_yaml_int(node)
        if not _INT64_MIN <= value <= _UINT64_MAX:
            raise LimitError(f"the integer {node.value[:40]} is outside the int64/uint64 range", node)
        return
    if tag == _FLOAT:
        if not math.isfinite(_CONSTRUCTOR.construct_yaml_float(node)):
            raise LimitError(f"{node.value[:40]!r} is not a finite number (NaN and infinities have no JSON form)", node)
        return
    if tag == _Y + "timestamp":
        raise LimitError(
            f"{node.value[:40]!r} is read as a YAML date, which has no JSON form; quote it to keep it a string", node
        )
    raise LimitError(
        f"unsafe or unknown YAML tag {_tag_name(tag)!r}; bridge cassettes hold plain data only "
        "(maps, lists, strings, numbers, booleans, null)",
        node,
    )


def check_nodes(root: yaml.Node | None, *, allow_aliases: bool = False) -> None:
    """Raise ``LimitError`` unless the tree under ``root`` is plain, bounded, JSON-representable data.

    ``allow_aliases`` (for ``verify``, which also reads HTTP cassettes other tools wrote) accepts a
    node shared by aliases, checked once, but still refuses a recursive one.
    """
    if root is None:
        return
    done: set[int] = set()
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, leaving = stack.pop()
        if leaving:
            on_path.discard(id(node))
            done.add(id(node))
            continue
        if id(node) in on_path:
            raise LimitError("a recursive alias (a value that contains itself)", node)
        if id(node) in done:
            if not allow_aliases:
                raise LimitError("aliases (&anchor / *reference) are not allowed in bridge cassettes", node)
            continue
        if len(done) + len(on_path) >= MAX_NODES:
            raise LimitError(f"more than {MAX_NODES} values", node)
        if depth > MAX_DEPTH:
            raise LimitError(f"nested deeper than {MAX_DEPTH} levels", node)
        if isinstance(node, yaml.ScalarNode):
            _check_scalar(node)
            done.add(id(node))
            continue
        on_path.add(id(node))
        stack.append((node, depth, True))
        if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ:
            stack.extend((child, depth + 1, False) for child in reversed(node.value))
        elif isinstance(node, yaml.MappingNode) and node.tag == _MAP:
            for key, value in reversed(node.value):
                if key.tag == _Y + "merge":
                    raise LimitError("merge keys (<<) are not allowed in bridge cassettes", key)
                if not isinstance(key, yaml.ScalarNode) or key.tag != _STR:
                    raise LimitError("map keys must be strings (JSON has no other kind); quote this one", key)
                stack.append((value, depth + 1, False))
                stack.append((key, depth + 1, False))
        else:
            raise LimitError(f"unsafe or unknown YAML tag {_tag_name(node.tag)!r}", node)


def compose(text: str, loader: type[yaml.SafeLoader]) -> Any:
    """The single document's root node (``None`` for an empty file)."""
    composer = loader(text)
    try:
        return composer.get_single_node()
    finally:
        composer.dispose()
