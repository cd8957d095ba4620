"""What real and mock handler sets share: dispatch, sessions, program registry, LM config, stats.

Real (``DSPyHandlers``) and mock (``CassetteHandlers``) workers differ only in how they build an
LM and how they run a program, so ``configure_lm``, ``create_program``, ``program_not_found`` and
``lm_not_configured`` behave identically in both, and a mock can never drift from the protocol.
Programs and LM settings live per ``session_id``: two sessions never see each other's programs.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False  # typing itself stays off the mock worker's start-up path
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

from dspy_bridge.protocol._commands import (
    CONFIGURE_LM_KEYS,
    CREATE_PROGRAM_KEYS,
    EXECUTE_CONFIG_KEYS,
    EXECUTE_PROGRAM_KEYS,
    unknown_keys,
)
from dspy_bridge.protocol._programs import ADAPTERS, PROGRAM_TYPES, canonical_program, program_id_for
from dspy_bridge.protocol._signature import SignatureError, SignatureSpec, parse_signature
from dspy_bridge.protocol._taxonomy import RETRYABLE_BY_DEFAULT, ErrorType

__all__ = ["BaseHandlers", "HandlerFailure", "Program", "Session", "ShutdownRequested"]

_LM_SETTINGS = ("model", "api_base", "temperature", "max_tokens", "num_retries", "cache", "timeout")


class HandlerFailure(Exception):
    """Raised by a handler to answer with an error Response of a given taxonomy ``type``."""

    def __init__(
        self,
        type: ErrorType,
        message: str,
        *,
        retryable: bool | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.type = type
        self.message = message
        self.retryable = type in RETRYABLE_BY_DEFAULT if retryable is None else retryable
        self.details = details

    def to_error(self) -> dict[str, Any]:
        return {
            "type": str(self.type),
            "message": self.message,
            "retryable": self.retryable,
            "details": self.details,
        }


class ShutdownRequested(Exception):
    """Raised after answering a ``shutdown`` request, so the loop stops reading and says goodbye."""


class Program:
    """A created program: its canonical definition, parsed signature and (real mode) DSPy module.

    ``kind`` is ``"signature"`` or ``"module"``; a module program has no ``spec`` (its ``forward()`` decides
    its inputs and outputs). ``args`` are the create_program arguments (demos, kwargs, state) the real
    worker builds from; the definition holds only the state's digest.
    """

    __slots__ = ("args", "calls", "definition", "kind", "module", "program_id", "spec")

    def __init__(
        self,
        program_id: str,
        definition: dict[str, Any],
        spec: SignatureSpec | None,
        module: Any = None,
        *,
        kind: str = "signature",
        args: dict[str, Any] | None = None,
    ) -> None:
        self.program_id = program_id
        self.definition = definition
        self.spec = spec
        self.module = module  # the DSPy module for real workers; None for mock workers
        self.calls = 0
        self.kind = kind
        self.args: dict[str, Any] = args or {}


class Session:
    """Programs and LM settings of one ``session_id`` (``None`` is the worker-wide default)."""

    __slots__ = ("created", "lm", "lm_cache", "lm_settings", "programs", "script")

    def __init__(self) -> None:
        self.programs: dict[str, Program] = {}
        self.lm_settings: dict[str, Any] | None = None  # what configure_lm set, without the key
        self.lm: Any = None  # the DSPy LM (real) or None (mock)
        self.lm_cache: Any = None  # real: this session's DSPy memory cache (worker/_hermetic.py)
        self.script: Any = None  # real: the ``script`` command's answers (worker/_scripted.py)
        self.created = time.monotonic()


def _require(args: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = args.get(name)
    if not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise HandlerFailure(
            ErrorType.INVALID_REQUEST,
            f"argument {name!r} must be a {expected}, got {type(value).__name__}",
            details={"argument": name},
        )
    return value


class BaseHandlers:
    """Dispatch ``command`` to ``cmd_<command>``; subclasses add ``_make_lm`` and ``_run``."""

    mode: str = "base"
    extra_capabilities: tuple[str, ...] = ()
    #: Commands this handler set does not have but the other one does: the ``unknown_command`` says why.
    refused: dict[str, str] = {}

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self.started = time.monotonic()
        self.sessions: dict[str | None, Session] = {}
        self.requests_served = 0
        self.errors = 0
        self._commands: dict[str, Callable[[dict[str, Any], str | None, dict[str, Any]], Any]] = {
            name[4:]: getattr(self, name) for name in dir(self) if name.startswith("cmd_")
        }

    # -- what subclasses provide -------------------------------------------------------------
    def after_hello(self) -> None:
        """Called once the Hello is on the wire: a chance to warm up while the host has nothing to ask."""

    @property
    def dspy_version(self) -> str | None:
        return None

    def known_secrets(self) -> list[str]:
        """Keys this worker holds (given in ``configure_lm``), to scrub from any reply or log line."""
        return []

    def _make_lm(self, settings: dict[str, Any], api_key: str | None) -> Any:
        return None

    def _build_module(self, program: Program) -> Any:
        return None

    def _predictors(self, program: Program) -> list[dict[str, Any]]:
        """``[{name, signature: {inputs, outputs, instructions}, demos}]``; from the spec unless the subclass
        knows better (a real worker asks the built module's ``named_predictors()``)."""
        if program.spec is None:
            return []
        raw = program.definition.get("signature")
        return [
            {
                "name": "predict" if program.definition.get("program_type") == "chain_of_thought" else "self",
                "signature": {
                    "inputs": [_field_info(f, raw, "inputs") for f in program.spec.inputs],
                    "outputs": [_field_info(f, raw, "outputs") for f in program.spec.outputs],
                    "instructions": program.spec.instructions,
                },
                "demos": len(program.definition.get("demos") or ()),
            }
        ]

    def _run(
        self,
        session_id: str | None,
        lm_session: Session,
        program: Program,
        inputs: dict[str, Any],
        context: dict[str, Any],
    ) -> dict[str, Any]:
        """Run ``program`` on ``inputs`` with the LM of ``lm_session``; return {outputs, usage, ...}."""
        raise NotImplementedError

    # -- dispatch ---------------------------------------------------------------------------
    @property
    def capabilities(self) -> list[str]:
        return sorted(self._commands) + list(self.extra_capabilities)

    def handle(self, command: str, args: dict[str, Any], session_id: str | None, context: dict[str, Any]) -> Any:
        """Run one command; raise ``HandlerFailure`` for an error Response."""
        handler = self._commands.get(command)
        self.requests_served += 1
        if handler is None and command in self.refused:
            raise HandlerFailure(ErrorType.UNKNOWN_COMMAND, self.refused[command], details={"command": command})
        if handler is None:
            raise HandlerFailure(
                ErrorType.UNKNOWN_COMMAND,
                f"unknown command {command!r} for a {self.mode} worker; known: {', '.join(sorted(self._commands))}",
            )
        return handler(args, session_id, context)

    def session(self, session_id: str | None, *, create: bool = True) -> Session:
        existing = self.sessions.get(session_id)
        if existing is not None:
            return existing
        if not create:
            raise HandlerFailure(ErrorType.INVALID_REQUEST, f"no session {session_id!r} on this worker")
        new = self.sessions[session_id] = Session()
        return new

    def program(self, session_id: str | None, program_id: str) -> Program:
        session = self.sessions.get(session_id)
        program = session.programs.get(program_id) if session else None
        if program is None:
            known = sorted(session.programs) if session else []
            raise HandlerFailure(
                ErrorType.PROGRAM_NOT_FOUND,
                f"no program {program_id!r} in session {session_id!r}; create it first with create_program"
                + (f" (this session has: {', '.join(known)})" if known else " (this session has none)"),
                details={"program_id": program_id, "session_id": session_id},
            )
        return program

    # -- commands ---------------------------------------------------------------------------
    def cmd_ping(self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]) -> dict[str, Any]:
        return {
            "status": "ok",
            "mode": self.mode,
            "worker_id": self.worker_id,
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self.started, 3),
            "versions": {"python": sys.version.split()[0], "dspy": self.dspy_version},
        }

    def cmd_configure_lm(self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]) -> dict[str, Any]:
        _strict("configure_lm", args, CONFIGURE_LM_KEYS)
        model = _require(args, "model", str)
        if "/" not in model:
            raise HandlerFailure(
                ErrorType.INVALID_REQUEST,
                f"model {model!r} needs a provider prefix, e.g. 'gemini/gemini-2.5-flash'",
                details={"argument": "model"},
            )
        settings: dict[str, Any] = {"model": model}
        for name in _LM_SETTINGS[1:]:
            if args.get(name) is not None:
                settings[name] = args[name]
        settings.setdefault("cache", True)
        for name, kind in (
            ("temperature", (int, float)),
            ("max_tokens", int),
            ("num_retries", int),
            ("cache", bool),
            ("timeout", (int, float)),
        ):
            if name in settings and not isinstance(settings[name], kind):
                raise HandlerFailure(ErrorType.INVALID_REQUEST, f"argument {name!r} has the wrong type")
        api_key = args.get("api_key")
        if api_key is not None and not isinstance(api_key, str):
            raise HandlerFailure(ErrorType.INVALID_REQUEST, "argument 'api_key' must be a string")
        session = self.session(session_id)
        session.lm = self._make_lm(settings, api_key)
        session.lm_settings = settings
        return {"configured": dict(settings)}

    def cmd_create_program(
        self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]
    ) -> dict[str, Any]:
        _strict("create_program", args, CREATE_PROGRAM_KEYS)
        _check_program_args(args)
        definition = canonical_program(args)
        spec: SignatureSpec | None = None
        if "module" not in args:
            try:
                spec = parse_signature(definition["signature"], definition.get("instructions"))
            except SignatureError as exc:
                raise HandlerFailure(
                    ErrorType.INVALID_REQUEST, f"bad signature: {exc}", details={"argument": "signature"}
                ) from exc
        program_id = program_id_for(args)
        kind = "signature" if spec is not None else "module"
        program = Program(program_id=program_id, definition=definition, spec=spec, kind=kind, args=args)
        program.module = self._build_module(program)
        self.session(session_id).programs[program_id] = program
        return {
            "program_id": program_id,
            "kind": kind,
            "inputs": spec.input_names if spec is not None else None,
            "outputs": spec.output_names if spec is not None else None,
            "predictors": self._predictors(program),
        }

    def cmd_execute_program(
        self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]
    ) -> dict[str, Any]:
        _strict("execute_program", args, EXECUTE_PROGRAM_KEYS)
        program = self.program(session_id, _require(args, "program_id", str))
        inputs = args.get("inputs", {})
        if not isinstance(inputs, dict):
            raise HandlerFailure(ErrorType.INVALID_REQUEST, "argument 'inputs' must be a map of input field values")
        context = {**context, CALL_OPTIONS: _call_options(args)}
        expected = program.spec.input_names if program.spec is not None else list(inputs)  # modules: forward decides
        missing = [name for name in expected if name not in inputs]
        unknown = [name for name in inputs if name not in expected]
        if missing or unknown:
            raise HandlerFailure(
                ErrorType.INVALID_REQUEST,
                f"inputs do not fit program {program.program_id}: missing {missing}, unknown {unknown}; "
                f"expected {expected}",
                details={"missing": missing, "unknown": unknown},
            )
        session = self.session(session_id)
        if session.script is not None:
            lm_session = session  # scripted: the script answers, whatever LM is (or is not) configured
        elif session.lm_settings is None:
            default = self.sessions.get(None)
            if default is None or default.lm_settings is None:
                raise HandlerFailure(
                    ErrorType.LM_NOT_CONFIGURED,
                    "no language model configured for this session; call configure_lm first",
                    details={"session_id": session_id},
                )
            lm_session = default
        else:
            lm_session = session
        started = time.perf_counter()
        result = self._run(session_id, lm_session, program, inputs, context)
        program.calls += 1
        result["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 3)
        return result

    def cmd_list_programs(
        self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]
    ) -> dict[str, Any]:
        session = self.sessions.get(session_id)
        programs = session.programs if session else {}
        return {
            "programs": sorted(programs),
            "details": [
                {"program_id": pid, "kind": programs[pid].kind, **_what(programs[pid].definition)}
                for pid in sorted(programs)
            ],
        }

    def cmd_get_program_info(
        self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]
    ) -> dict[str, Any]:
        program = self.program(session_id, _require(args, "program_id", str))
        spec = program.spec
        return {
            "program_id": program.program_id,
            "kind": program.kind,
            "definition": program.definition,
            "inputs": [f.as_dict() for f in spec.inputs] if spec is not None else None,
            "outputs": [f.as_dict() for f in spec.outputs] if spec is not None else None,
            "predictors": self._predictors(program),
            "calls": program.calls,
        }

    def cmd_delete_program(
        self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]
    ) -> dict[str, Any]:
        program = self.program(session_id, _require(args, "program_id", str))
        del self.sessions[session_id].programs[program.program_id]
        return {"deleted": program.program_id}

    def cmd_get_stats(self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "mode": self.mode,
            "requests_served": self.requests_served,
            "errors": self.errors,
            "sessions": len([s for s in self.sessions if s is not None]),
            "programs": sum(len(s.programs) for s in self.sessions.values()),
            "uptime_s": round(time.monotonic() - self.started, 3),
            # Names only, never values: lets anyone check from outside that no key variable reached us.
            "environ_names": sorted(os.environ),
        }

    def cmd_reset_state(self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]) -> dict[str, Any]:
        dropped = len(self.sessions)
        self.sessions.clear()
        return {"reset": True, "sessions_dropped": dropped}

    def cmd_cleanup_session(
        self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]
    ) -> dict[str, Any]:
        target = args.get("session_id", session_id)
        if target is not None and not isinstance(target, str):
            raise HandlerFailure(
                ErrorType.INVALID_REQUEST, "'session_id' must be a string or nil", details={"argument": "session_id"}
            )
        session = self.sessions.pop(target, None)
        return {
            "session_id": target,
            "removed": session is not None,
            "programs": len(session.programs) if session else 0,
        }

    def cmd_allow_hosts(self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]) -> dict[str, Any]:
        """Worker-wide, whatever the session: turn the connect guard on (if off) and allow ``hosts`` too."""
        from dspy_bridge.protocol._commands import CommandError, allow_hosts_args

        try:
            hosts = allow_hosts_args(args.get("hosts"))["hosts"]
        except CommandError as exc:
            raise HandlerFailure(ErrorType.INVALID_REQUEST, str(exc), details={"argument": "hosts"}) from None
        return self._allow_hosts(hosts)

    def _allow_hosts(self, hosts: list[str]) -> dict[str, Any]:
        """Mock workers run no user code, so they need no guard: they accept the command and do nothing."""
        return {"guarded": False, "allowed": hosts}

    def cmd_shutdown(self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]) -> dict[str, Any]:
        return {"shutting_down": True}


# -- create/execute argument checks (user modules, demos, state, per-call options) --------------------
CALL_OPTIONS = "_call_options"  # private context key: execute_program's config/adapter/trace for _run


def _strict(command: str, args: dict[str, Any], known: tuple[str, ...]) -> None:
    problem = unknown_keys(command, args, known)
    if problem:
        unknown = sorted(key for key in args if key not in known)
        raise HandlerFailure(ErrorType.INVALID_REQUEST, problem, details={"unknown": unknown, "known": list(known)})


def _invalid(message: str, argument: str) -> HandlerFailure:
    return HandlerFailure(ErrorType.INVALID_REQUEST, message, details={"argument": argument})


def _check_program_args(args: dict[str, Any]) -> None:
    if ("signature" in args) == ("module" in args):
        raise _invalid(
            "create_program needs exactly one of 'signature' or 'module' ('package.module:Class')", "signature"
        )
    if "module" in args:
        module = args["module"]
        if not isinstance(module, str) or module.count(":") != 1 or not all(module.split(":")):
            raise _invalid(f"'module' must be 'package.module:Attribute', got {module!r}", "module")
        extra = [key for key in ("program_type", "instructions", "demos") if key in args]
        if extra:
            raise _invalid(f"{', '.join(extra)} belong to signature programs, not module programs", extra[0])
        if not isinstance(args.get("kwargs", {}), dict):
            raise _invalid("'kwargs' must be a map of constructor arguments", "kwargs")
    else:
        if "kwargs" in args:
            raise _invalid("'kwargs' belongs to module programs", "kwargs")
        program_type = args.get("program_type", "predict")
        if program_type not in PROGRAM_TYPES:
            raise _invalid(f"program_type {program_type!r} is not one of {', '.join(PROGRAM_TYPES)}", "program_type")
        demos = args.get("demos")
        if demos is not None and (not isinstance(demos, list) or not all(isinstance(d, dict) for d in demos)):
            raise _invalid("'demos' must be a list of maps (input and output field values)", "demos")
    if args.get("state") is not None and not isinstance(args["state"], dict):
        raise _invalid(
            "'state' must be the JSON map Module.save() writes (host builders read a path; workers never do)", "state"
        )
    if args.get("adapter") is not None and args["adapter"] not in ADAPTERS:
        raise _invalid(f"adapter must be one of {', '.join(ADAPTERS)}, got {args['adapter']!r}", "adapter")


def _call_options(args: dict[str, Any]) -> dict[str, Any]:
    """execute_program's per-call options, checked: ``{config, adapter, trace}`` (absent ones left out)."""
    options: dict[str, Any] = {}
    config = args.get("config")
    if config is not None:
        if not isinstance(config, dict):
            raise _invalid("'config' must be a map of per-call LM options", "config")
        _strict("execute_program config", config, EXECUTE_CONFIG_KEYS)
        for name, kind in (("temperature", (int, float)), ("n", int), ("max_tokens", int)):
            value = config.get(name)
            if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
                raise _invalid(f"config {name!r} has the wrong type ({type(value).__name__})", "config")
        if config.get("n") is not None and config["n"] < 1:
            raise _invalid("config 'n' must be at least 1", "config")
        options["config"] = {key: value for key, value in config.items() if value is not None}
    if args.get("adapter") is not None:
        if args["adapter"] not in ADAPTERS:
            raise _invalid(f"adapter must be one of {', '.join(ADAPTERS)}, got {args['adapter']!r}", "adapter")
        options["adapter"] = args["adapter"]
    if args.get("trace") is not None:
        if not isinstance(args["trace"], bool):
            raise _invalid("'trace' must be a boolean", "trace")
        options["trace"] = args["trace"]
    return options


def _field_info(spec: Any, raw_signature: Any, side: str) -> dict[str, Any]:
    """A field of a result: name, type, description and the prefix a structured signature gave it."""
    prefix = None
    if isinstance(raw_signature, dict):
        for item in raw_signature.get(side) or ():
            if isinstance(item, dict) and item.get("name") == spec.name:
                prefix = item.get("prefix")
    return {**spec.as_dict(), "prefix": prefix}


def _what(definition: dict[str, Any]) -> dict[str, Any]:
    if "module" in definition:
        return {"module": definition["module"]}
    return {"signature": definition.get("signature")}
