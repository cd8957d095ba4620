"""Scripted runs: real DSPy and the user's module, every LM call answered from the test's per-predictor script.

``script`` (a session command) stores ``{predictor: answer | [answers]}``; while it is set, the session's runs
use a ``dspy.LM`` whose custom engine (``complete(Request) -> Response``, DSPy 3.4's public engine contract)
answers each call for the predictor the ``CallLog`` saw the adapter format for:

* **The predictor's name** is its ``named_predictors()`` name (``agent.react``, ``agent.extract.predict``); a
  script key may leave out a final ``.predict`` (``agent.extract``), as ``ChainOfThought`` adds one.
* **The answer is formatted by the adapter that asked** — ``format_assistant_message_content`` of the
  ChatAdapter, the JSONAdapter, or DSPy's JSON fallback — for the signature it rendered, so the module parses
  it exactly as it would a model's reply. A ``dspy.ToolCalls`` field under native function calling becomes
  the response's tool-call parts. Output fields the entry leaves out get schema-valid values (``reasoning``
  too), so a script says only what matters; a field the signature lacks is an error naming the fields.
* **A list** answers successive calls, **a map** every call. ``auto=True`` answers unscripted calls with
  schema-valid values (a ReAct ``next_tool_name`` picks ``finish``). Otherwise an unscripted call, or one past
  the end of a list, fails the run with ``script_miss`` naming the predictor, the call number and the prompt
  — even when the module swallowed the exception (``strict``); never a silent "No more responses".
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from typing import Any

from dspy_bridge.protocol._schema import generate
from dspy_bridge.protocol._taxonomy import ErrorType
from dspy_bridge.worker._base import HandlerFailure
from dspy_bridge.worker._calls import NO_PREDICTOR, current_step
from dspy_bridge.worker._dspy_types import schema_of

__all__ = ["PROMPT_CHARS", "Script", "ScriptMiss", "script_from_args", "scripted_lm"]

PROMPT_CHARS = 300  # how much of the last user message a miss quotes


class ScriptMiss(Exception):
    """An LM call the script does not answer (raised inside DSPy's engine call; the run re-raises it)."""


def script_from_args(args: dict[str, Any]) -> Script:
    """Check a ``script`` request's arguments (the host builder's rule, ``_commands.script_args``)."""
    from dspy_bridge.protocol._commands import CommandError, script_args

    try:
        checked = script_args(**args)
    except (CommandError, TypeError) as exc:
        raise HandlerFailure(ErrorType.INVALID_REQUEST, str(exc), details={"argument": "script"}) from None
    return Script(checked["script"], strict=checked["strict"], auto=checked["auto"])


class _Counter:
    """Deterministic ``Randomness`` for ``_schema.generate``: auto values are the same on every run."""

    def __init__(self, seed: str) -> None:
        self._seed = seed
        self._n = 0

    def next(self, bound: int) -> int:
        self._n += 1
        digest = hashlib.sha256(f"{self._seed}:{self._n}".encode()).digest()
        return int.from_bytes(digest[:4], "big") % bound

    def word(self) -> str:
        return f"{self.next(16**6):06x}"


@dataclass
class Script:
    """One session's script and how far each predictor has got (call numbers start at 1)."""

    answers: dict[str, Any]
    strict: bool = True
    auto: bool = False
    calls: dict[str, int] = field(default_factory=dict)
    misses: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def key_for(self, predictor: str) -> str | None:
        if predictor in self.answers:
            return predictor
        if predictor.endswith(".predict") and predictor[: -len(".predict")] in self.answers:
            return predictor[: -len(".predict")]
        return None

    def check_names(self, names: list[str]) -> None:
        """Every script key must name a predictor of the session's programs (a typo would fail much later)."""
        known = set(names) | {name[: -len(".predict")] for name in names if name.endswith(".predict")}
        unknown = sorted(key for key in self.answers if key not in known)
        if unknown:
            raise HandlerFailure(
                ErrorType.INVALID_REQUEST,
                f"script names predictor(s) {unknown} that no program of this session has; its predictors: "
                f"{', '.join(names) or 'none'} (a final '.predict' may be left out)",
                details={"argument": "script", "unknown": unknown, "predictors": names},
            )

    def next_entry(self, predictor: str, prompt: str) -> tuple[int, dict[str, Any] | None]:
        """(call number, the scripted answer) — ``None`` with ``auto``; raises ``ScriptMiss`` otherwise."""
        with self._lock:
            number = self.calls[predictor] = self.calls.get(predictor, 0) + 1
        key = self.key_for(predictor)
        entry = self.answers.get(key) if key is not None else None
        if isinstance(entry, list):
            entry = entry[number - 1] if number <= len(entry) else None
            why = f"its script has {len(self.answers[key])} answer(s)" if entry is None and key else ""
        else:
            why = "" if entry is not None else "the script has no entry for it"
        if entry is not None or self.auto:
            return number, entry
        shown = prompt if len(prompt) <= PROMPT_CHARS else prompt[:PROMPT_CHARS] + "…"
        scripted = ", ".join(sorted(self.answers)) or "none"
        message = (
            f"unscripted LM call: predictor {predictor!r}, call #{number} ({why}; scripted predictors: {scripted}). "
            f"Add an answer for it to bridge.script({{...}}), or pass auto=True for schema-valid filler. "
            f"Prompt (last user message): {shown}"
        )
        raise self.fail(message, unscripted=True)

    def fail(self, message: str, *, unscripted: bool = False) -> ScriptMiss:
        """Note a problem for ``take_misses`` (so the run fails with it even if the module swallowed the
        error) and return the exception to raise inside DSPy. An unscripted call counts only when strict."""
        if self.strict or not unscripted:
            with self._lock:
                self.misses.append(message)
        return ScriptMiss(message)

    def take_misses(self) -> list[str]:
        with self._lock:
            misses, self.misses = self.misses, []
        return misses


def _auto_value(name: str, annotation: Any, seed: str) -> Any:
    schema = schema_of(annotation)
    choices = schema.get("enum") if isinstance(schema, dict) else None
    if name == "next_tool_name" and isinstance(choices, list) and "finish" in choices:
        return "finish"  # auto=True lets a ReAct agent end at once instead of looping to max_iters
    if isinstance(schema, dict) and schema.get("type") == "object" and not schema.get("properties"):
        return {}  # an open map (tool arguments): invented keys would only break the tool
    return generate(schema, _Counter(f"{seed}:{name}"), name)


def _last_user_text(request: Any) -> str:
    for message in reversed(request.messages):
        if message.role == "user":
            return str(message.text or "")
    return ""


def _unknown_fields(entry: dict[str, Any], step: Any, full_signature: Any) -> list[str]:
    known = set(step.signature.output_fields) | set(getattr(full_signature, "output_fields", {}) or {})
    return sorted(key for key in entry if key not in known)


class ScriptedEngine:
    """The engine behind a scripted ``dspy.LM`` (sync; ``AsyncScriptedEngine`` wraps it for ``acall``)."""

    supports_function_calling = True  # so an adapter with use_native_function_calling sends tools
    supports_reasoning = False
    supports_response_schema = False

    def __init__(self, script: Script) -> None:
        self.script = script

    def complete(self, request: Any) -> Any:
        from dspy.lm15 import Message, Response, TextPart, ToolCallPart, Usage

        step = current_step()
        predictor = step.predictor if step is not None else NO_PREDICTOR
        number, entry = self.script.next_entry(predictor, _last_user_text(request))
        if step is None or step.signature is None:
            raise self.script.fail(
                f"LM call #{number} of {predictor} came from no adapter (the LM was called directly): a script "
                "answers predictors' calls only"
            )
        full_signature = getattr(step.module, "signature", None)
        entry = dict(entry or {})
        unknown = _unknown_fields(entry, step, full_signature)
        if unknown:
            names = ", ".join(step.signature.output_fields)
            raise self.script.fail(
                f"script for predictor {predictor!r}, call #{number}, gives field(s) {unknown} its signature does "
                f"not have; its output fields: {names}"
            )
        parts: list[Any] = []
        tool_calls = self._native_tool_calls(entry, step, full_signature, request)
        seed = f"{predictor}:{number}"
        outputs = {
            name: entry[name] if name in entry else _auto_value(name, info.annotation, seed)
            for name, info in step.signature.output_fields.items()
        }
        if outputs or not tool_calls:
            parts.append(TextPart(step.adapter.format_assistant_message_content(step.signature, outputs)))
        for index, call in enumerate(tool_calls):
            parts.append(ToolCallPart(id=f"call_{number}_{index}", name=call["name"], input=call["args"]))
        return Response(
            id=f"scripted-{predictor}-{number}",
            model="scripted",
            message=Message.assistant(tuple(parts)),
            finish_reason="tool_call" if tool_calls else "stop",
            usage=Usage(input_tokens=0, output_tokens=0, total_tokens=0),
        )

    @staticmethod
    def _native_tool_calls(entry: dict[str, Any], step: Any, full_signature: Any, request: Any) -> list[Any]:
        """A ``dspy.ToolCalls`` field the adapter removed for native function calling → tool-call parts."""
        if not request.tools or full_signature is None:
            return []
        import dspy

        for name, info in full_signature.output_fields.items():
            if info.annotation is dspy.ToolCalls and name not in step.signature.output_fields and name in entry:
                value = entry.pop(name)
                calls = value.get("tool_calls") if isinstance(value, dict) else value
                return [{"name": str(c["name"]), "args": dict(c.get("args") or {})} for c in calls or ()]
        return []


class AsyncScriptedEngine:
    def __init__(self, sync: ScriptedEngine) -> None:
        self.sync = sync
        self.supports_function_calling = sync.supports_function_calling

    async def complete(self, request: Any) -> Any:
        return self.sync.complete(request)


def scripted_lm(dspy: Any, script: Script) -> Any:
    """A ``dspy.LM`` answering from ``script``: no cache (a scripted answer is not a model's), no retries."""
    engine = ScriptedEngine(script)
    return dspy.LM(
        "scripted/script", engine=engine, async_engine=AsyncScriptedEngine(engine), cache=False, num_retries=0
    )
