"""The canonical cassette layout: plain YAML whose every value is one line of JSON, read without PyYAML.

    # dspy-bridge cassette: one request line and one response line per interaction (values are JSON)
    version: 1
    meta: {"created": "2026-11-30T12:00:00Z", "dspy_bridge_version": "0.1.0", ...}
    interactions:
    - request: {"command": "execute_program", "session": "s1", ..., "args": {...}}
      response: {"ok": true, "result": {"outputs": {"answer": "Paris"}}}

YAML is a superset of JSON, so any YAML tool reads this file as the same data; ``read`` uses ``json``
instead (C speed: a 10,000-interaction file in ~0.2 s rather than PyYAML's seconds), and the mock worker
never imports PyYAML for it. ``read`` is strict: anything it does not recognise as exactly this layout,
or any value where JSON and YAML 1.1 could disagree (a float like ``1e5``, a raw U+2028, an escaped
surrogate pair, a huge int, deep nesting), returns ``None`` and the caller reads the file with PyYAML,
the reference. So a hand-edited file (block style, comments, anything) still loads, exactly as written.
"""

from __future__ import annotations

import json
import math
import re
from json.scanner import make_scanner  # the C scanner itself: no Python wrapper per value

TYPE_CHECKING = False  # typing stays off a mock worker's replay path
if TYPE_CHECKING:
    from typing import Any

__all__ = ["HEADER", "dump", "dump_interactions", "read"]

HEADER = "# dspy-bridge cassette: one request line and one response line per interaction (values are JSON)"

# Characters YAML does not allow raw (it refuses them) or reads as line breaks (U+0085, U+2028, U+2029):
# written as \u escapes; a file that has them raw is left to PyYAML.
_NOT_YAML_PLAIN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # JSON joins an escaped pair, PyYAML does not
_BARE_EXPONENT = re.compile(r"(?<![\w.\\])-?[0-9]+[eE][-+]?[0-9]")  # YAML 1.1 reads 1e-05 as a string
_YAML_FLOAT = re.compile(r"-?[0-9]+\.[0-9]*(?:[eE][-+][0-9]+)?\Z")
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1
_MAX_BRACKETS = 90  # nesting certainly under ``_limits.MAX_DEPTH`` (100) when a line has fewer brackets
_TOP_KEYS = frozenset({"version", "meta", "interactions"})
_MAX_CHARS = 40_000_000  # fewer than ``_limits.MAX_NODES`` (20 M) values certainly fit in this many characters


class _NotCanonical(Exception):
    """A value JSON and YAML might read differently: PyYAML decides."""


def _yaml_float(text: str) -> float:
    value = float(text)
    if not _YAML_FLOAT.match(text) or not math.isfinite(value):
        raise _NotCanonical
    return value


def _bounded_int(text: str) -> int:
    value = int(text)
    if not _INT64_MIN <= value <= _UINT64_MAX:
        raise _NotCanonical
    return value


def read(text: str) -> dict[str, Any] | None:
    """The data of a file in the canonical layout, or ``None`` when PyYAML must read it."""
    if not text.startswith(HEADER + "\n") or len(text) > _MAX_CHARS:
        return None
    if "\r" in text:
        text = text.replace("\r\n", "\n")  # a checkout with CRLF line ends
        if "\r" in text:
            return None
    if "\t" in text:
        return None  # PyYAML refuses tabs between tokens; the writer never writes one
    if ("\x7f" in text) if text.isascii() else bool(_NOT_YAML_PLAIN.search(text)):
        return None
    if ("\\ud" in text or "\\uD" in text) and _SURROGATE_ESCAPE.search(text):
        return None
    decoder = json.JSONDecoder(parse_float=_yaml_float, parse_int=_bounded_int, parse_constant=_refuse_constant)
    try:
        return _read_lines(text.split("\n"), make_scanner(decoder))  # type: ignore[arg-type]
    except (ValueError, StopIteration, RecursionError, _NotCanonical):  # JSONDecodeError is a ValueError
        return None


def _refuse_constant(name: str) -> Any:
    raise _NotCanonical  # NaN, Infinity: YAML reads them as strings, and cassettes refuse them anyway


def _value(line: str, prefix: str, scan: Any) -> Any:
    """The one JSON value after ``prefix`` (``scan`` is the C scanner: no per-call Python wrapper)."""
    if line.count("{") + line.count("[") > _MAX_BRACKETS:
        raise _NotCanonical
    value, end = scan(line, len(prefix))
    if end != len(line) and line[end:].strip(" "):
        raise _NotCanonical  # something after the value (a comment, a second value): PyYAML decides
    return value


def _read_lines(lines: list[str], scan: Any) -> dict[str, Any] | None:
    data: dict[str, Any] = {}
    items: list[dict[str, Any]] | None = None  # the open ``interactions:`` list, while its items follow
    request: Any = None
    waiting = False  # a request line was read; its response line must come next
    bare = False  # "interactions:" with no value on its line (null in YAML unless items follow)
    for line in lines:
        if not line.strip(" "):
            continue
        if line.lstrip(" ").startswith("#"):
            if _NOT_YAML_PLAIN.search(line):  # (values are checked by the JSON scanner; comments are not)
                return None
            continue
        if waiting:
            if not line.startswith("  response: "):
                return None
            assert items is not None
            items.append({"request": request, "response": _value(line, "  response: ", scan)})
            waiting = False
            continue
        if line.startswith("- request: ") and items is not None:
            request = _value(line, "- request: ", scan)
            waiting = True
            continue
        key, colon, rest = line.partition(":")
        if not colon or key not in _TOP_KEYS or key in data or (rest and rest[0] != " "):
            return None
        items = None  # a top-level key ends the list
        rest = rest.strip()
        if key != "interactions":
            data[key] = _value(line, f"{key}: ", scan)
        elif rest == "[]":
            data[key] = []
        elif rest == "":
            items = data[key] = []
            bare = True
        else:
            return None
    if waiting:
        return None
    if bare and not data["interactions"]:
        data["interactions"] = None  # "interactions:" with nothing under it is null in YAML
    return data


# -- writing -------------------------------------------------------------------------------------------
def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def _float_text(value: float) -> str:
    text = repr(value)
    if "e" in text and "." not in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}.0e{exponent}"
    return text


def _slow_json(value: Any) -> str:
    """JSON for a value holding a float that Python writes without a dot (``1e-05``), which YAML 1.1
    would read as a string: such floats get one (``1.0e-05``)."""
    if type(value) is float:
        return _float_text(value)
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(f"{json.dumps(str(k), ensure_ascii=False)}: {_slow_json(v)}" for k, v in value.items())
            + "}"
        )
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_slow_json(item) for item in value) + "]"
    return json.dumps(value, ensure_ascii=False)


_ENCODE = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode


def _json(value: Any) -> str:
    """One value's JSON, safe for YAML 1.1 (``_plain`` then escapes the characters YAML refuses)."""
    text = _ENCODE(value)
    # Python writes every exponent with a sign: without "e-"/"e+" (fast to look for) there is no bare one.
    if ("e-" in text or "e+" in text) and _BARE_EXPONENT.search(text):  # rare, or a string holding "1e-5"
        text = _slow_json(value)
    return text


def _plain(text: str) -> str:
    """``text`` with the characters YAML refuses or reads as line breaks written as ``\\u`` escapes (they can
    only be inside JSON strings: JSON's own syntax is ASCII)."""
    if ("\x7f" in text) if text.isascii() else _NOT_YAML_PLAIN.search(text):
        return _NOT_YAML_PLAIN.sub(_escape, text)
    return text


def dump_interactions(interactions: list[dict[str, Any]]) -> str:
    """The lines of these interactions (each ``request``/``response`` map already in canonical order)."""
    return _plain(
        "".join(
            f"- request: {_json(item['request'])}\n  response: {_json(item['response'])}\n" for item in interactions
        )
    )


def dump(version: int, meta: dict[str, Any], interactions: list[dict[str, Any]]) -> str:
    """The whole file."""
    head = f"{HEADER}\nversion: {version}\nmeta: {_plain(_json(meta))}\n"
    if not interactions:
        return head + "interactions: []\n"
    return head + "interactions:\n" + dump_interactions(interactions)
