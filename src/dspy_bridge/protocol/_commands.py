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

from dspy_bridge.protocol._programs import ADAPTERS, canonical_json
from dspy_bridge.protocol._taxonomy import ErrorType

__all__ = [
    "CONFIGURE_LM_KEYS",
    "CREATE_PROGRAM_KEYS",
    "EXECUTE_CONFIG_KEYS",
    "EXECUTE_PROGRAM_KEYS",
    "STATE_COMMANDS",
    "CommandError",
    "StubTable",
    "allow_hosts_args",
    "configure_lm_args",
    "create_program_args",
    "delete_program_args",
    "execute_args",
    "render_prompts_args",
    "script_args",
    "split_host",
    "stub_answer",
    "stub_args",
    "unknown_keys",
]

# Commands whose success changes what a worker holds for a session (replayed onto a replacement).
# ``allow_hosts`` is worker-wide: sent without a session it becomes pool-wide state every worker gets.
STATE_COMMANDS = frozenset(
    {"configure_lm", "create_program", "delete_program", "stub_program", "allow_hosts", "script"}
)


# The arguments each strict command knows; anything else is refused, never silently dropped.
CONFIGURE_LM_KEYS = (
    "model", "api_key", "api_base", "temperature", "max_tokens", "num_retries", "timeout", "cache",
)  # fmt: skip
CREATE_PROGRAM_KEYS = (
    "signature", "program_type", "instructions", "demos", "module", "kwargs", "state", "adapter", "id",
)  # fmt: skip
EXECUTE_PROGRAM_KEYS = ("program_id", "inputs", "config", "adapter", "trace", "stream")
EXECUTE_CONFIG_KEYS = ("temperature", "n", "max_tokens", "rollout_id")
_HINTS = {
    ("configure_lm", "n"): "n is a per-call option: pass execute_program(..., config={'n': 3}) instead",
}


def unknown_keys(command: str, args: dict[str, Any], known: tuple[str, ...]) -> str | None:
    """``None`` if every key of ``args`` is in ``known``, else a message naming the unknown and the known keys."""
    unknown = sorted(key for key in args if key not in known)
    if not unknown:
        return None
    hints = [_HINTS[(command, key)] for key in unknown if (command, key) in _HINTS]
    return f"{command} got unknown argument(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)}" + (
        f" ({'; '.join(hints)})" if hints else ""
    )


class CommandError(ValueError):
    """Arguments that no worker could accept; the message names the argument and what it must be."""


def configure_lm_args(model: str, *, api_key: str | None = None, **settings: Any) -> dict[str, Any]:
    """``configure_lm``: the model plus LM settings; ``None`` settings mean "not given" and are left out."""
    if not isinstance(model, str) or not model:
        raise CommandError(f"configure_lm needs a model name string, e.g. 'gemini/gemini-2.5-flash'; got {model!r}")
    args: dict[str, Any] = {"model": model, **{k: v for k, v in settings.items() if v is not None}}
    problem = unknown_keys("configure_lm", args, CONFIGURE_LM_KEYS)
    if problem:
        raise CommandError(problem)
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
    signature: str | dict[str, Any] | None = None,
    *,
    program_type: str | None = "predict",
    instructions: str | None = None,
    program_id: str | None = None,
    module: str | None = None,
    kwargs: dict[str, Any] | None = None,
    state: Any = None,
    demos: list[dict[str, Any]] | None = None,
    adapter: str | None = None,
    **unknown: Any,
) -> dict[str, Any]:
    """``create_program``: a signature program (signature, program type, instructions, demos) or a module
    program (``"pkg.mod:Class"``, constructor kwargs); both may carry saved ``state`` (a map, or a host
    path whose JSON is read here: the worker never reads host paths), an ``adapter`` and a fixed id."""
    if unknown:
        keywords = ("signature", "program_type", "instructions", "demos", "module", "kwargs", "state", "adapter")
        raise CommandError(str(unknown_keys("create_program", unknown, (*keywords, "program_id"))))
    if (signature is None) == (module is None):
        raise CommandError("create_program needs exactly one of a signature or a module ('package.module:Class')")
    args: dict[str, Any]
    if module is not None:
        if not isinstance(module, str) or module.count(":") != 1 or not all(module.split(":")):
            raise CommandError(f"module must be 'package.module:Attribute', got {module!r}")
        if program_type not in (None, "predict") or instructions is not None or demos is not None:
            raise CommandError("program_type, instructions and demos belong to signature programs, not modules")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise CommandError(f"kwargs must be a map of constructor arguments, got {type(kwargs).__name__}")
        args = {"module": module, "kwargs": dict(kwargs or {})}
    else:
        if not isinstance(signature, str | dict):
            raise CommandError(f"a program needs a signature string or map, got {type(signature).__name__}")
        if kwargs is not None:
            raise CommandError("kwargs belong to module programs (create_program(module=..., kwargs=...))")
        args = {"signature": signature, "program_type": program_type or "predict"}
        if instructions is not None:
            args["instructions"] = instructions
        if demos is not None:
            if not isinstance(demos, list) or not all(isinstance(demo, dict) for demo in demos):
                raise CommandError("demos must be a list of maps (input and output field values)")
            args["demos"] = list(demos)
    if state is not None:
        args["state"] = _read_state(state)
    if adapter is not None:
        if adapter not in ADAPTERS:
            raise CommandError(f"adapter must be one of {', '.join(ADAPTERS)}, got {adapter!r}")
        args["adapter"] = adapter
    if program_id is not None:
        args["id"] = program_id
    return args


def _read_state(state: Any) -> dict[str, Any]:
    """Saved state as a map: given as one, or read (on the host) from the JSON file ``Module.save`` wrote."""
    if isinstance(state, dict):
        return state
    import os

    if not isinstance(state, str | os.PathLike):
        raise CommandError(f"state must be a map or the path of a saved JSON state, got {type(state).__name__}")
    import json

    try:
        with open(state, encoding="utf-8") as handle:
            loaded = json.load(handle)
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot read saved state {os.fspath(state)!r}: {exc}") from None
    if not isinstance(loaded, dict):
        raise CommandError(
            f"saved state {os.fspath(state)!r} is not a JSON object (save it with module.save('x.json'))"
        )
    return loaded


def delete_program_args(program_id: str) -> dict[str, Any]:
    return {"program_id": _program_id(program_id, "delete_program")}


def render_prompts_args(program_id: str, *, adapter: str | None = None) -> dict[str, Any]:
    """``render_prompts`` (real workers): each predictor's messages as ``adapter`` (default: the program's,
    else chat) formats them, with placeholder inputs and no LM call."""
    args: dict[str, Any] = {"program_id": _program_id(program_id, "render_prompts")}
    if adapter is not None:
        if adapter not in ADAPTERS:
            raise CommandError(f"render_prompts: adapter must be one of {', '.join(ADAPTERS)}, got {adapter!r}")
        args["adapter"] = adapter
    return args


def execute_args(
    program_id: str,
    inputs: dict[str, Any],
    *,
    config: dict[str, Any] | None = None,
    adapter: str | None = None,
    trace: bool = False,
    **unknown: Any,
) -> dict[str, Any]:
    """``execute_program``: which program, with which inputs (a map of input field → value), and per-call
    LM ``config`` (temperature, n, max_tokens, rollout_id), ``adapter`` and ``trace``."""
    if unknown:
        known = tuple(key for key in EXECUTE_PROGRAM_KEYS if key != "stream")  # streaming has its own method
        raise CommandError(str(unknown_keys("execute_program", unknown, known)))
    if not isinstance(inputs, dict):
        raise CommandError(f"execute_program needs 'inputs' as a map, got {type(inputs).__name__}")
    args: dict[str, Any] = {"program_id": _program_id(program_id, "execute_program"), "inputs": inputs}
    if config:
        if not isinstance(config, dict):
            raise CommandError(f"execute_program 'config' must be a map, got {type(config).__name__}")
        problem = unknown_keys("execute_program config", config, EXECUTE_CONFIG_KEYS)
        if problem:
            raise CommandError(problem)
        args["config"] = dict(config)
    if adapter is not None:
        if adapter not in ADAPTERS:
            raise CommandError(f"adapter must be one of {', '.join(ADAPTERS)}, got {adapter!r}")
        args["adapter"] = adapter
    if trace:
        args["trace"] = True
    return args


SCRIPT_KEYS = ("script", "strict", "auto")


def script_args(script: Any, *, strict: Any = True, auto: Any = False, **unknown: Any) -> dict[str, Any]:
    """``script`` (real workers): answer this session's LM calls per predictor — ``{name: {field: value}}``
    (every call) or ``{name: [{...}, ...]}`` (successive calls); ``strict`` fails a run on an unscripted
    call, ``auto`` answers unscripted calls with schema-valid values."""
    if unknown:
        raise CommandError(str(unknown_keys("script", unknown, SCRIPT_KEYS)))
    if not isinstance(script, dict) or not all(isinstance(key, str) and key for key in script):
        raise CommandError(
            "script must be a map of predictor name → an answer map (output field → value) or a list of them, "
            f"e.g. {{'qa.predict': {{'answer': '42'}}}}; got {script!r}"
        )
    for name, entry in script.items():
        entries = entry if isinstance(entry, list) else [entry]
        if not all(isinstance(item, dict) for item in entries):
            raise CommandError(
                f"script[{name!r}] must be an answer map (output field → value) or a list of them, got {entry!r}"
            )
    for flag, value in (("strict", strict), ("auto", auto)):
        if not isinstance(value, bool):
            raise CommandError(f"script's {flag!r} must be True or False, got {value!r}")
    return {"script": {name: entry for name, entry in script.items()}, "strict": strict, "auto": auto}


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
