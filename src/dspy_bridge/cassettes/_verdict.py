"""Is a changed answer a regression or only new wording? One verdict per output field.

Re-recording and the drift check both meet answers that differ from the recorded ones. Most are benign: the
same field with the same type and different text ("Paris" → "Paris, France"). Some are regressions that break
a program's callers: a field missing or new, a value of another type (str → int, an object's keys changed),
another ``Literal`` or ``bool`` value, a failure where there was an answer (or another error type), another
sequence of tool calls. Pure functions over the wire shape (``{ok, result | error}``), no imports beyond
stdlib: the CLI, the plugin and the recorder share them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["BENIGN", "REGRESSION", "FieldVerdict", "change_verdicts", "classify_answers", "http_verdicts", "kind_of"]

BENIGN = "benign"
REGRESSION = "regression"
_MISSING = object()


@dataclass(frozen=True)
class FieldVerdict:
    """One field that differs: ``benign`` (same type, other text) or ``regression`` (and why)."""

    field: str
    verdict: str  # BENIGN or REGRESSION
    reason: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def kind_of(value: Any) -> str:
    """A value's JSON kind (JSON Schema's type names), integers and floats alike ``number``: 1 → 1.5 is a new value,
    not a new type."""
    from dspy_bridge.protocol._schema import json_type

    kind = json_type(value)
    return "number" if kind == "integer" else kind


def _value(name: str, old: Any, new: Any, declared: str | None) -> FieldVerdict:
    old_kind, new_kind = kind_of(old), kind_of(new)
    if old_kind != new_kind:
        return FieldVerdict(name, REGRESSION, f"type {old_kind} → {new_kind}")
    if declared and "Literal[" in declared:
        return FieldVerdict(name, REGRESSION, f"Literal value {old!r} → {new!r}")
    if old_kind == "boolean":
        return FieldVerdict(name, REGRESSION, f"{old!r} → {new!r}")
    if old_kind == "object":
        if set(old) != set(new):
            lost, gained = sorted(set(old) - set(new)), sorted(set(new) - set(old))
            said = ", ".join([*(f"-{key}" for key in lost), *(f"+{key}" for key in gained)])
            return FieldVerdict(name, REGRESSION, f"keys changed ({said})")
        for key in sorted(old):
            if old[key] != new[key]:
                inner = _value(f"{name}.{key}", old[key], new[key], None)
                if inner.verdict == REGRESSION:
                    return inner
    if old_kind == "array":
        old_kinds, new_kinds = {kind_of(item) for item in old}, {kind_of(item) for item in new}
        if old and new and old_kinds != new_kinds:
            return FieldVerdict(name, REGRESSION, f"item types {sorted(old_kinds)} → {sorted(new_kinds)}")
    return FieldVerdict(name, BENIGN, f"same type ({old_kind}), different value")


def _tool_sequence(result: dict[str, Any]) -> list[str] | None:
    calls = result.get("tool_calls")
    if not isinstance(calls, list):
        return None
    return [str(call.get("tool")) if isinstance(call, dict) else str(call) for call in calls]


def classify_answers(recorded: dict[str, Any], now: dict[str, Any]) -> list[FieldVerdict]:
    """Every field whose answer differs between two responses, with its verdict (an empty list: the same)."""
    if not recorded.get("ok", True) or not now.get("ok", True):
        return _errors(recorded, now)
    old_result, new_result = recorded.get("result") or {}, now.get("result") or {}
    old_outputs, new_outputs = old_result.get("outputs", {}), new_result.get("outputs", {})
    declared = {**(old_result.get("output_types") or {}), **(new_result.get("output_types") or {})}
    verdicts = []
    if isinstance(old_outputs, dict) and isinstance(new_outputs, dict):
        for name in [*old_outputs, *(n for n in new_outputs if n not in old_outputs)]:
            old, new = old_outputs.get(name, _MISSING), new_outputs.get(name, _MISSING)
            if old is _MISSING:
                verdicts.append(FieldVerdict(name, REGRESSION, "new field"))
            elif new is _MISSING:
                verdicts.append(FieldVerdict(name, REGRESSION, "missing field"))
            elif old != new:
                verdicts.append(_value(name, old, new, declared.get(name)))
    elif old_outputs != new_outputs:
        verdicts.append(_value("outputs", old_outputs, new_outputs, None))
    old_tools, new_tools = _tool_sequence(old_result), _tool_sequence(new_result)
    if old_tools is not None and new_tools is not None and old_tools != new_tools:
        verdicts.append(FieldVerdict("tool_calls", REGRESSION, f"tool-call sequence {old_tools} → {new_tools}"))
    old_finish, new_finish = old_result.get("finish_reason"), new_result.get("finish_reason")
    if old_finish != new_finish and (old_finish or new_finish):
        verdicts.append(FieldVerdict("finish_reason", REGRESSION, f"finish reason {old_finish} → {new_finish}"))
    return verdicts


def _errors(recorded: dict[str, Any], now: dict[str, Any]) -> list[FieldVerdict]:
    old_ok, new_ok = recorded.get("ok", True), now.get("ok", True)
    if old_ok and not new_ok:
        return [FieldVerdict("error", REGRESSION, f"now fails: {(now.get('error') or {}).get('type')}")]
    if new_ok and not old_ok:
        return [FieldVerdict("error", REGRESSION, f"recorded a failure ({(recorded.get('error') or {}).get('type')})")]
    old_error, new_error = recorded.get("error") or {}, now.get("error") or {}
    if old_error.get("type") != new_error.get("type"):
        return [FieldVerdict("error", REGRESSION, f"error type {old_error.get('type')} → {new_error.get('type')}")]
    if old_error.get("message") != new_error.get("message"):
        return [FieldVerdict("error", BENIGN, "same error type, different message")]
    return []


def _gemini(body: Any) -> dict[str, Any] | None:
    """A Gemini answer as data: a parsed body (``cassettes diff`` shows HTTP bodies parsed), or a stream's
    events (``{"sse": [event, …]}``) folded into one answer: all parts in order, the last candidate's fields."""
    if not isinstance(body, dict):
        return None
    chunks = body.get("sse") if "sse" in body else [body]
    if not isinstance(chunks, list):
        return None
    chunks = [chunk for chunk in chunks if isinstance(chunk, dict)]
    candidates = [c for chunk in chunks for c in chunk.get("candidates") or [] if isinstance(c, dict)]
    if not candidates:
        return None
    parts = [part for c in candidates for part in (c.get("content") or {}).get("parts") or []]
    return {"candidates": [{**candidates[-1], "content": {"parts": parts}}]}


def _answer_shape(data: dict[str, Any] | None) -> tuple[Any, list[str], str]:
    candidate = ((data or {}).get("candidates") or [{}])[0]
    parts = (candidate.get("content") or {}).get("parts") or []
    calls = [str((part.get("functionCall") or {}).get("name")) for part in parts if "functionCall" in part]
    text = "".join(str(part.get("text", "")) for part in parts if not part.get("thought"))
    return candidate.get("finishReason"), calls, text


def http_verdicts(old: dict[str, Any], new: dict[str, Any]) -> list[FieldVerdict]:
    """An HTTP interaction as ``cassettes diff`` shows it (``{status: code, body: parsed}``): status, finish
    reason and function calls are regressions; other text is benign."""
    old_response, new_response = old.get("response") or {}, new.get("response") or {}
    old_status, new_status = old_response.get("status"), new_response.get("status")
    if old_status != new_status:
        return [FieldVerdict("status", REGRESSION, f"status {old_status} → {new_status}")]
    old_finish, old_calls, old_text = _answer_shape(_gemini(old_response.get("body")))
    new_finish, new_calls, new_text = _answer_shape(_gemini(new_response.get("body")))
    verdicts = []
    if old_finish != new_finish:
        verdicts.append(FieldVerdict("finish_reason", REGRESSION, f"finish reason {old_finish} → {new_finish}"))
    if old_calls != new_calls:
        verdicts.append(FieldVerdict("function_calls", REGRESSION, f"function calls {old_calls} → {new_calls}"))
    if old_text != new_text:
        verdicts.append(FieldVerdict("text", BENIGN, "the answer's text differs"))
    if not verdicts and old_response != new_response:
        verdicts.append(FieldVerdict("response", BENIGN, "headers or metadata differ"))
    return verdicts


def change_verdicts(level: str, old: dict[str, Any], new: dict[str, Any]) -> list[FieldVerdict]:
    """Verdicts for one changed interaction of a cassette diff (a changed request is a regression)."""
    if old.get("request") != new.get("request"):
        return [FieldVerdict("request", REGRESSION, "the request differs (a new prompt or program)")]
    if level == "http":
        return http_verdicts(old, new)
    return classify_answers(old.get("response") or {}, new.get("response") or {})
