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

from dspy_bridge.protocol._programs import PROGRAM_TYPES, canonical_program, program_id_for
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
    """A created program: its canonical definition, parsed signature and (real mode) DSPy module."""

    __slots__ = ("calls", "definition", "module", "program_id", "spec")

    def __init__(self, program_id: str, definition: dict[str, Any], spec: SignatureSpec, module: Any = None) -> None:
        self.program_id = program_id
        self.definition = definition
        self.spec = spec
        self.module = module  # the DSPy module for real workers; None for mock workers
        self.calls = 0


class Session:
    """Programs and LM settings of one ``session_id`` (``None`` is the worker-wide default)."""

    __slots__ = ("created", "lm", "lm_settings", "programs")

    def __init__(self) -> None:
        self.programs: dict[str, Program] = {}
        self.lm_settings: dict[str, Any] | None = None  # what configure_lm set, without the key
        self.lm: Any = None  # the DSPy LM (real) or None (mock)
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
    @property
    def dspy_version(self) -> str | None:
        return None

    def _make_lm(self, settings: dict[str, Any], api_key: str | None) -> Any:
        return None

    def _build_module(self, program: Program) -> Any:
        return None

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
        if "signature" not in args:
            raise HandlerFailure(ErrorType.INVALID_REQUEST, "create_program needs a 'signature' argument")
        program_type = args.get("program_type", "predict")
        if program_type not in PROGRAM_TYPES:
            raise HandlerFailure(
                ErrorType.INVALID_REQUEST,
                f"program_type {program_type!r} is not one of {', '.join(PROGRAM_TYPES)}",
                details={"argument": "program_type"},
            )
        definition = canonical_program(args)
        try:
            spec = parse_signature(definition["signature"], definition.get("instructions"))
        except SignatureError as exc:
            raise HandlerFailure(
                ErrorType.INVALID_REQUEST, f"bad signature: {exc}", details={"argument": "signature"}
            ) from exc
        program_id = program_id_for(args)
        program = Program(program_id=program_id, definition=definition, spec=spec)
        program.module = self._build_module(program)
        self.session(session_id).programs[program_id] = program
        return {"program_id": program_id, "inputs": spec.input_names, "outputs": spec.output_names}

    def cmd_execute_program(
        self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]
    ) -> dict[str, Any]:
        program = self.program(session_id, _require(args, "program_id", str))
        inputs = args.get("inputs", {})
        if not isinstance(inputs, dict):
            raise HandlerFailure(ErrorType.INVALID_REQUEST, "argument 'inputs' must be a map of input field values")
        missing = [name for name in program.spec.input_names if name not in inputs]
        unknown = [name for name in inputs if name not in program.spec.input_names]
        if missing or unknown:
            raise HandlerFailure(
                ErrorType.INVALID_REQUEST,
                f"inputs do not fit program {program.program_id}: missing {missing}, unknown {unknown}; "
                f"expected {program.spec.input_names}",
                details={"missing": missing, "unknown": unknown},
            )
        session = self.session(session_id)
        if session.lm_settings is None:
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
        return {"programs": sorted(session.programs) if session else []}

    def cmd_get_program_info(
        self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]
    ) -> dict[str, Any]:
        program = self.program(session_id, _require(args, "program_id", str))
        return {
            "program_id": program.program_id,
            "definition": program.definition,
            "inputs": [f.as_dict() for f in program.spec.inputs],
            "outputs": [f.as_dict() for f in program.spec.outputs],
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
