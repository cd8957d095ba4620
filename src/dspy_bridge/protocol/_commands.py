"""The command layer, sans I/O: what each command's arguments look like, and the one stub table.

``Pool``, ``SyncPool`` and ``Bridge`` are three faces of one API; the mock handlers answer it. All of
them build arguments here, so a command's shape is decided once (as httpx's ``build_request`` serves
both of its clients), and stubs are matched by one rule on both sides of the pipe: the host-side
stubs a recording ``Bridge`` answers itself, and the worker-side ones a mock worker answers.

Builders raise ``CommandError`` (a ``ValueError``) on arguments no worker could accept; the faces
turn it into ``UsageError``, the mock worker into an ``invalid_request`` reply.
Pure functions over plain data and no ``typing`` at import: the mock worker loads this at start-up.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself stays off the mock worker's start-up path
if TYPE_CHECKING:
    from typing import Any

from dspy_bridge.protocol._programs import canonical_json
from dspy_bridge.protocol._taxonomy import ErrorType

__all__ = [
    "STATE_COMMANDS",
    "CommandError",
    "StubTable",
    "allow_hosts_args",
    "configure_lm_args",
    "create_program_args",
    "delete_program_args",
    "execute_args",
    "split_host",
    "stub_answer",
    "stub_args",
]

# Commands whose success changes what a worker holds for a session (replayed onto a replacement).
# ``allow_hosts`` is worker-wide: sent without a session it becomes pool-wide state every worker gets.
STATE_COMMANDS = frozenset({"configure_lm", "create_program", "delete_program", "stub_program", "allow_hosts"})


class CommandError(ValueError):
    """Arguments that no worker could accept; the message names the argument and what it must be."""


def configure_lm_args(model: str, *, api_key: str | None = None, **settings: Any) -> dict[str, Any]:
    """``configure_lm``: the model plus LM settings; ``None`` settings mean "not given" and are left out."""
    if not isinstance(model, str) or not model:
        raise CommandError(f"configure_lm needs a model name string, e.g. 'gemini/gemini-2.5-flash'; got {model!r}")
    args: dict[str, Any] = {"model": model, **{k: v for k, v in settings.items() if v is not None}}
    if api_key is not None:
        args["api_key"] = api_key
    return args


def split_host(entry: str) -> tuple[str, int | None]:
    """``"host:port"``, ``"host"``, ``"[::1]:8080"`` or ``"::1"`` → (lower-case host, port or ``None`` = any)."""
    if not isinstance(entry, str) or not entry.strip():
        raise CommandError(f"an allowed host must be a non-empty 'host:port' or 'host' string, got {entry!r}")
    text = entry.strip().lower()
    if "/" in text or any(c.isspace() for c in text):
        raise CommandError(f"allowed host {entry!r} must be 'host:port' or 'host', not a URL or path")
    port_text: str | None = None
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise CommandError(f"allowed host {entry!r}: write an IPv6 address as '[::1]:8080' or '[::1]'")
        port_text = rest[1:] if rest else None
    elif text.count(":") > 1:
        host = text  # a bare IPv6 address: any port
    else:
        host, colon, port_text = text.partition(":")
        port_text = port_text if colon else None
    if not host:
        raise CommandError(f"allowed host {entry!r} has no host name")
    if port_text is None:
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise CommandError(f"allowed host {entry!r}: the port must be a number from 1 to 65535")
    return host, int(port_text)


def allow_hosts_args(hosts: Any) -> dict[str, Any]:
    """``allow_hosts``: entries ``host:port`` or ``host`` (any port), checked and written one canonical way."""
    if isinstance(hosts, str) or not isinstance(hosts, list | tuple):
        raise CommandError(f"allow_hosts needs a list of 'host:port' or 'host' strings, got {hosts!r}")
    canonical = []
    for entry in hosts:
        host, port = split_host(entry)
        shown = f"[{host}]" if ":" in host else host
        canonical.append(shown if port is None else f"{shown}:{port}")
    return {"hosts": list(dict.fromkeys(canonical))}


def create_program_args(
    signature: str | dict[str, Any],
    *,
    program_type: str = "predict",
    instructions: str | None = None,
    program_id: str | None = None,
) -> dict[str, Any]:
    """``create_program``: a signature, its program type, optional instructions and a fixed id."""
    if not isinstance(signature, str | dict):
        raise CommandError(f"a program needs a signature string or map, got {type(signature).__name__}")
    args: dict[str, Any] = {"signature": signature, "program_type": program_type}
    if instructions is not None:
        args["instructions"] = instructions
    if program_id is not None:
        args["id"] = program_id
    return args


def delete_program_args(program_id: str) -> dict[str, Any]:
    return {"program_id": _program_id(program_id, "delete_program")}


def execute_args(program_id: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """``execute_program``: which program, with which inputs (a map of input field → value)."""
    if not isinstance(inputs, dict):
        raise CommandError(f"execute_program needs 'inputs' as a map, got {type(inputs).__name__}")
    return {"program_id": _program_id(program_id, "execute_program"), "inputs": inputs}


def stub_args(
    program_id: str,
    outputs: dict[str, Any] | None = None,
    *,
    inputs: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``stub_program``: answer ``program_id`` with ``outputs`` or ``error``, for ``inputs`` (or any)."""
    args: dict[str, Any] = {"program_id": program_id}
    if outputs is not None:
        args["outputs"] = outputs
    if error is not None:
        args["error"] = error
    if inputs is not None:
        args["inputs"] = inputs
    stub_answer(args)  # validates: the same rule the mock worker applies
    return args


def stub_answer(args: dict[str, Any]) -> dict[str, Any]:
    """The answer a ``stub_program`` request registers: ``{"outputs": …}`` or ``{"error": {…}}``."""
    _program_id(args.get("program_id"), "stub_program")
    if args.get("inputs") is not None and not isinstance(args["inputs"], dict):
        raise CommandError("stub_program 'inputs' must be a map of input field → value (or left out for any)")
    outputs, error = args.get("outputs"), args.get("error")
    if (outputs is None) == (error is None):
        raise CommandError("stub_program needs exactly one of 'outputs' (a map) or 'error' (a map)")
    if outputs is not None:
        if not isinstance(outputs, dict):
            raise CommandError(f"stub_program 'outputs' must be a map of output field → value, got {outputs!r}")
        return {"outputs": dict(outputs)}
    if not isinstance(error, dict):
        raise CommandError(
            f"stub_program 'error' must be a map like {{'type': 'lm_error', 'message': …}}, got {error!r}"
        )
    kind = str(error.get("type", ErrorType.LM_ERROR))
    if kind not in _ERROR_TYPES:
        raise CommandError(f"stub_program 'error.type' must be one of {', '.join(sorted(_ERROR_TYPES))}; got {kind!r}")
    return {
        "error": {
            "type": kind,
            "message": str(error.get("message", "stubbed error")),
            "retryable": bool(error.get("retryable", False)),
            "details": dict(error["details"]) if error.get("details") else None,
        }
    }


_ERROR_TYPES = frozenset(str(member) for member in ErrorType)


class StubTable:
    """Canned answers per (session, program), newest first; inputs compared as canonical JSON."""

    __slots__ = ("_stubs",)

    def __init__(self) -> None:
        # (session_id, program_id) -> [(canonical inputs or None for any, answer)]
        self._stubs: dict[tuple[str | None, str], list[tuple[str | None, dict[str, Any]]]] = {}

    def add(self, session_id: str | None, args: dict[str, Any]) -> str:
        """Register the stub a ``stub_program`` request describes; returns its program id."""
        answer = stub_answer(args)
        inputs = args.get("inputs")
        key = None if inputs is None else canonical_json(inputs)
        program_id: str = args["program_id"]
        self._stubs.setdefault((session_id, program_id), []).insert(0, (key, answer))
        return program_id

    def answer(self, session_id: str | None, program_id: str, inputs: Any) -> dict[str, Any] | None:
        """The newest stub for these inputs (or for any inputs), else ``None``."""
        entries = self._stubs.get((session_id, program_id))
        if not entries:
            return None
        key = canonical_json(inputs)
        for stub_key, answer in entries:
            if stub_key is None or stub_key == key:
                return answer
        return None

    def forget(self, session_id: str | None = None, *, everything: bool = False) -> None:
        """Drop one session's stubs (or all of them)."""
        if everything:
            self._stubs.clear()
        else:
            self._stubs = {key: value for key, value in self._stubs.items() if key[0] != session_id}

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._stubs.values())


def _program_id(value: Any, command: str) -> str:
    if not isinstance(value, str) or not value:
        raise CommandError(f"{command} needs a string 'program_id', got {value!r}")
    return value
