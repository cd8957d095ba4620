"""What makes two requests "the same": canonical forms, matchers, and the closest-match diff.

A request is compared as the plain map a cassette stores::

    {command, session, program (canonical definition), model, args}

Key order, whitespace in signatures (via ``protocol._programs.canonical_program``) and volatile
fields (``VOLATILE_ARGS``) never matter. ``match_on`` names the fields that must be equal
(default: command + program definition + inputs + the per-call ``config`` and ``adapter``); ``ignore`` removes sub-fields first. A
``Matcher`` turns a request into one string key, so lookup is a dict access, not a scan; only a
miss pays for a scan, to find the closest recording and explain the difference field by field.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing stays off a mock worker's replay path
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Any

from dspy_bridge._exceptions import UsageError
from dspy_bridge.protocol._programs import canonical_json

__all__ = [
    "DEFAULT_MATCH_ON",
    "MATCH_FIELDS",
    "REPLAYED_COMMANDS",
    "VOLATILE_ARGS",
    "VOLATILE_RESULT_KEYS",
    "FieldDiff",
    "Matcher",
    "canonical_args",
    "canonical_image",
    "canonical_response",
    "closest",
    "plain",
    "short",
]

#: Commands a mock worker answers from a cassette; the others it handles itself, like a real worker.
REPLAYED_COMMANDS = frozenset({"execute_program"})
#: Top-level args that change on every call and never take part in matching or recording.
#: ``stream`` says how the answer travels, not what it is: a streamed call replays a plain recording and back.
VOLATILE_ARGS = frozenset({"deadline", "timestamp", "elapsed_ms", "request_id", "started_at", "stream"})
#: Result keys stripped before writing (timing, and the mock's own ``source`` marker).
VOLATILE_RESULT_KEYS = frozenset({"elapsed_ms", "source"})
_VOLATILE_USAGE_SUFFIXES = ("_ms", "_s", "_seconds", "latency", "duration", "timestamp", "created")

# Per-call options take part by default: an n=3 or json-adapter recording never answers a plain call.
DEFAULT_MATCH_ON: tuple[str, ...] = ("command", "program", "inputs", "args.config", "args.adapter")
#: Field roots a matcher may name; ``inputs`` and ``program_id`` are shorthands for ``args.…``.
MATCH_FIELDS = ("command", "program", "model", "args", "inputs", "program_id")
_ROOTS = frozenset({"command", "program", "model", "args"})
_MISSING = "\x00<missing>"


def plain(value: Any) -> Any:
    """Plain, YAML-safe data: maps with string keys, lists for tuples; sorted map keys."""
    if isinstance(value, dict):
        return {str(key): plain(value[key]) for key in sorted(value, key=str)}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def canonical_args(args: dict[str, Any]) -> dict[str, Any]:
    """Request args as recorded and matched: sorted keys, volatile top-level fields dropped, image
    inputs replaced by their digest (``canonical_image``)."""
    kept = {key: value for key, value in args.items() if key not in VOLATILE_ARGS}
    if isinstance(kept.get("inputs"), dict):
        kept["inputs"] = _digest_images(kept["inputs"])
    result: dict[str, Any] = plain(kept)
    return result


def canonical_image(value: Any) -> dict[str, Any] | None:
    """``{"image_sha256", "mime"}`` for an image input (``{"data": <base64>, "mime": "image/…"}`` or
    ``{"url": "data:image/…;base64,…"}``), else ``None``. The digest is of the decoded bytes, so a
    cassette never holds the image and any base64 spelling of the same bytes matches."""
    if not isinstance(value, dict):
        return None
    data, mime = value.get("data"), value.get("mime")
    url = value.get("url")
    if isinstance(url, str) and len(value) == 1 and url.startswith("data:") and ";base64," in url:
        mime, _, data = url[5:].partition(";base64,")
    elif not (isinstance(data, str) and set(value) <= {"data", "mime"}):
        return None
    import base64
    import binascii
    import hashlib

    try:
        raw = base64.b64decode("".join(str(data).split()), validate=True)
    except (binascii.Error, ValueError):
        raw = str(data).encode()
    return {"image_sha256": hashlib.sha256(raw).hexdigest(), "mime": mime or None}


def _digest_images(value: Any) -> Any:
    image = canonical_image(value)
    if image is not None:
        return image
    if isinstance(value, dict):
        return {key: _digest_images(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_digest_images(item) for item in value]
    return value


def _stable_usage(usage: Any) -> Any:
    if not isinstance(usage, dict):
        return usage
    return {
        key: _stable_usage(value)
        for key, value in usage.items()
        if not (isinstance(key, str) and key.endswith(_VOLATILE_USAGE_SUFFIXES))
    }


def canonical_response(response: dict[str, Any]) -> dict[str, Any]:
    """``{ok, result, chunks?}`` or ``{ok: false, error}`` without timing; tracebacks are dropped (paths churn)."""
    ok = response.get("ok", "error" not in response or response.get("error") is None)
    if ok:
        result = response.get("result")
        if isinstance(result, dict):
            result = {key: value for key, value in result.items() if key not in VOLATILE_RESULT_KEYS}
            if "usage" in result:
                result["usage"] = _stable_usage(result["usage"])
        canonical = {"ok": True, "result": plain_keep_order(result)}
        chunks = response.get("chunks")
        if isinstance(chunks, list):  # a streamed answer: its chunks, in order (docs/cassettes.md)
            canonical["chunks"] = [{"field": str(c["field"]), "text": str(c["text"])} for c in chunks]
        return canonical
    error = dict(response.get("error") or {})
    details = error.get("details")
    if isinstance(details, dict) and "traceback" in details:
        details = {key: value for key, value in details.items() if key != "traceback"}
    return {
        "ok": False,
        "error": {
            "type": str(error.get("type", "internal")),
            "message": str(error.get("message", "")),
            "retryable": bool(error.get("retryable", False)),
            "details": plain_keep_order(details) if details else None,
        },
    }


def plain_keep_order(value: Any) -> Any:
    """Like ``plain`` but keeps map order (output fields read best in the order DSPy gave them)."""
    if isinstance(value, dict):
        return {str(key): plain_keep_order(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain_keep_order(item) for item in value]
    return value


def _parse_field(name: str) -> tuple[str, ...]:
    parts = tuple(part for part in name.strip().split(".") if part)
    if not parts:
        raise UsageError("an empty field name in match_on/ignore")
    if parts[0] in ("inputs", "program_id"):
        return ("args", *parts)
    if parts[0] not in _ROOTS:
        raise UsageError(
            f"cannot match on {name!r}: a field must start with one of {', '.join(MATCH_FIELDS)} "
            "(e.g. 'inputs', 'inputs.question', 'program.signature', 'args.config')"
        )
    return parts


def _get(value: Any, path: Sequence[str]) -> Any:
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _without(value: Any, path: Sequence[str]) -> Any:
    """A copy of ``value`` with the sub-field at ``path`` removed (only the maps on the way are copied)."""
    if not path or not isinstance(value, dict) or path[0] not in value:
        return value
    copy = dict(value)
    if len(path) == 1:
        del copy[path[0]]
    else:
        copy[path[0]] = _without(copy[path[0]], path[1:])
    return copy


class FieldDiff:
    """One compared field of a miss: its dotted name, whether it matched, and both values."""

    __slots__ = ("field", "recorded", "requested", "same")

    def __init__(self, field: str, same: bool, recorded: Any, requested: Any) -> None:
        self.field = field
        self.same = same
        self.recorded = recorded
        self.requested = requested

    def as_dict(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "same": self.same,
            "recorded": None if self.recorded is _MISSING else self.recorded,
            "requested": None if self.requested is _MISSING else self.requested,
        }

    def __str__(self) -> str:
        if self.same:
            return f"  same  {self.field}"
        return f"  DIFF  {self.field}: recorded {short(self.recorded)} | requested {short(self.requested)}"


def short(value: Any, limit: int = 160) -> str:
    """A one-line, bounded rendering of a value for messages."""
    text = "<absent>" if value is _MISSING else canonical_json(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Matcher:
    """Compiled ``match_on`` + ``ignore``: the key of a request, and how two requests differ."""

    __slots__ = ("ignore", "ignore_paths", "match_on", "paths", "spec")

    def __init__(self, match_on: Iterable[str] | None = None, ignore: Iterable[str] = ()) -> None:
        self.match_on = tuple(match_on) if match_on else DEFAULT_MATCH_ON
        self.ignore = tuple(ignore)
        self.paths = tuple(_parse_field(name) for name in self.match_on)
        self.ignore_paths = tuple(_parse_field(name) for name in self.ignore)
        self.spec = (self.match_on, self.ignore)

    def _prepared(self, request: dict[str, Any]) -> dict[str, Any]:
        for path in self.ignore_paths:  # usually none
            request = _without(request, path)
        return request

    def key(self, request: dict[str, Any]) -> str:
        """One string that is equal for exactly the requests this matcher calls the same."""
        prepared = self._prepared(request)
        return canonical_json([_get(prepared, path) for path in self.paths])

    def diff(self, recorded: dict[str, Any], requested: dict[str, Any]) -> list[FieldDiff]:
        """Field-by-field comparison; maps (program, inputs) are compared one sub-field deeper."""
        left, right = self._prepared(recorded), self._prepared(requested)
        diffs: list[FieldDiff] = []
        for name, path in zip(self.match_on, self.paths, strict=True):
            a, b = _get(left, path), _get(right, path)
            if a is _MISSING and b is _MISSING:
                continue  # an optional field neither side has (args.config on plain calls): nothing to show
            if isinstance(a, dict) and isinstance(b, dict) and a != b:
                for sub in sorted(set(a) | set(b)):
                    sa, sb = a.get(sub, _MISSING), b.get(sub, _MISSING)
                    diffs.append(FieldDiff(f"{name}.{sub}", canonical_json(sa) == canonical_json(sb), sa, sb))
            else:
                diffs.append(FieldDiff(name, canonical_json(a) == canonical_json(b), a, b))
        return diffs

    def score(self, recorded: dict[str, Any], requested: dict[str, Any]) -> float:
        """How close two requests are: 1 per equal field, fractions for partly equal maps.

        Plain ``==`` here (not canonical JSON): it only ranks candidates, on the miss path, for
        every recording in the cassette.
        """
        total = 0.0
        left, right = self._prepared(recorded), self._prepared(requested)
        for path in self.paths:
            a, b = _get(left, path), _get(right, path)
            if a == b:
                total += 1.0
            elif isinstance(a, dict) and isinstance(b, dict):
                keys = a.keys() | b.keys()
                total += 0.9 * sum(1 for k in keys if k in a and k in b and a[k] == b[k]) / len(keys)
        return total


def closest(
    requests: Iterable[tuple[int, dict[str, Any]]], requested: dict[str, Any], matcher: Matcher
) -> tuple[int, dict[str, Any]] | None:
    """The recorded request most like ``requested`` (same command first; earliest wins ties)."""
    best: tuple[float, int, dict[str, Any]] | None = None
    for index, recorded in requests:
        score = matcher.score(recorded, requested)
        if recorded.get("command") == requested.get("command"):
            score += 100.0
        if best is None or score > best[0]:
            best = (score, index, recorded)
    return None if best is None else (best[1], best[2])
