"""``Bridge``: a client bound to one pool, one session and (optionally) one cassette.

It is what the pytest ``bridge`` fixture hands a test, and what applications use when they want the
pool's session affinity without repeating ``session_id=`` everywhere:

    with SyncPool(PoolConfig(mode="mock")) as pool:
        bridge = Bridge(pool)
        bridge.configure_lm("gemini/gemini-2.5-flash")
        answer = bridge.run("question -> answer", question="2+2?")

Every request carries the session id and a context (test id, cassette reference for mock workers).
When a recorder is attached, every exchange is recorded on the host side, around the pool.
Sync methods block; the ``a``-prefixed ones are awaitable from any event loop (the pool runs on its own).
Arguments are built by ``protocol._commands`` (as for ``Pool`` and ``SyncPool``), host-side stubs
live in the same ``StubTable`` the mock worker uses, and errors are built by ``pool._errors``.
"""

from __future__ import annotations

import asyncio
import uuid
import warnings
from collections import Counter
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Protocol

from dspy_bridge._exceptions import HandlerError, UsageError
from dspy_bridge.pool._errors import error_info, handler_error, usage_errors
from dspy_bridge.protocol import _commands as commands

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Bridge", "ExchangeRecorder", "RequestSender"]

DEFAULT_MODEL = "gemini/gemini-2.5-flash"


class RequestSender(Protocol):
    """What a Bridge needs from a pool: ``SyncPool`` satisfies it."""

    def submit(
        self,
        command: str,
        args: dict[str, Any] | None = None,
        *,
        session_id: str | None = None,
        context: dict[str, Any] | None = None,
    ) -> Future[Any]: ...


class ExchangeRecorder(Protocol):
    """What a Bridge needs from a recorder: ``cassettes.Recorder`` satisfies it."""

    def record(self, request: dict[str, Any], response: dict[str, Any]) -> None: ...


class Bridge:
    """A session-bound client: programs created through it are visible only through it."""

    def __init__(
        self,
        pool: RequestSender,
        *,
        session_id: str | None = None,
        context: dict[str, Any] | None = None,
        recorder: ExchangeRecorder | None = None,
        lm_defaults: dict[str, Any] | None = None,
        mode: str = "mock",
        host_stubs: bool = False,
        observer: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
        pinned_lm: dict[str, Any] | None = None,
        pinned_reason: str = "",
    ) -> None:
        self.pool = pool
        self.session_id = session_id or f"s-{uuid.uuid4().hex[:12]}"
        self.context: dict[str, Any] = dict(context or {})
        self.recorder = recorder
        self.lm_defaults: dict[str, Any] = dict(lm_defaults or {})
        self.mode = mode
        self.requests = 0
        # Real workers have no stub_program: with host_stubs the Bridge answers stubbed programs itself,
        # from the same table (and matching rule) a mock worker uses, so a test that stubs behaves the
        # same while it records on real workers.
        self.host_stubs = host_stubs
        self.observer = observer  # sees every (request, response) pair, e.g. the drift check
        # LM settings this session may not change (the plugin pins an integration test's route through the
        # cassette proxy); a configure_lm that differs is refused with ``pinned_reason``, never overridden.
        self.pinned_lm: dict[str, Any] = dict(pinned_lm or {})
        self.pinned_reason = pinned_reason
        self._stubs = commands.StubTable()
        self.outcomes: Counter[str] = Counter()  # where execute answers came from: cassette, stub, miss, …

    def __repr__(self) -> str:
        return f"<Bridge mode={self.mode} session={self.session_id} requests={self.requests}>"

    # -- the one path every request takes ---------------------------------------------------
    def _submit(self, command: str, args: dict[str, Any]) -> Future[Any]:
        if command == "configure_lm" and self.pinned_lm:
            self._check_pinned(args)
        self.requests += 1
        request = {"command": command, "args": args, "session_id": self.session_id}
        replayed = self._answer_on_host(request)
        if replayed is not None:
            return replayed
        future = self.pool.submit(command, args, session_id=self.session_id, context=self.context)
        future.add_done_callback(lambda done: self._observe(request, done))
        return future

    def _check_pinned(self, args: dict[str, Any]) -> None:
        changed = sorted(name for name, value in self.pinned_lm.items() if name in args and args[name] != value)
        if changed:  # names only: a value may be a key
            given = ", ".join(f"{name}=…" for name in changed)
            raise UsageError(f"configure_lm({given}) refused: {self.pinned_reason}")

    def _host_stub(self, command: str, args: dict[str, Any]) -> dict[str, Any] | None:
        """A stub registered here, or the stubbed answer to an ``execute_program``, as a Response map."""
        if command == "stub_program":
            with usage_errors():
                program_id = self._stubs.add(self.session_id, args)
            return {"ok": True, "result": {"stubbed": program_id}}
        if command == "execute_program":
            answer = self._stubs.answer(self.session_id, str(args.get("program_id")), args.get("inputs"))
            if answer is None:
                return None
            if "error" in answer:
                return {"ok": False, "error": answer["error"]}
            return {"ok": True, "result": {"outputs": answer["outputs"], "usage": {}, "source": "stub"}}
        return None

    def _answer_on_host(self, request: dict[str, Any]) -> Future[Any] | None:
        """Answers that never reach a worker: host-side stubs, and in ``new_episodes`` what the
        cassette already has (only the rest runs on real workers)."""
        answer = self._host_stub(request["command"], request["args"]) if self.host_stubs else None
        source = "stub"
        if answer is None:
            lookup = getattr(self.recorder, "lookup", None)
            answer = lookup(request) if lookup is not None else None
            source = "cassette"
        if answer is None:
            return None
        future: Future[Any] = Future()
        if request["command"] == "execute_program":
            self.outcomes[source] += 1
        if answer.get("ok", True):
            future.set_result(answer.get("result"))
        else:
            future.set_exception(handler_error(answer.get("error") or {}, session_id=self.session_id))
        return future

    def _observe(self, request: dict[str, Any], done: Future[Any]) -> None:
        """Count answer sources, feed the recorder and the observer (runs on the pool's thread)."""
        if done.cancelled():
            return
        error = done.exception()
        if error is None:
            result = done.result()
            if request["command"] == "execute_program" and isinstance(result, dict):
                self.outcomes[str(result.get("source", "lm"))] += 1
            response: dict[str, Any] = {"ok": True, "result": result}
        elif isinstance(error, HandlerError):
            if error.type == "cassette_miss":
                self.outcomes["miss"] += 1
            response = {"ok": False, "error": error_info(error)}
        else:
            return  # crashes, timeouts, a closed pool: not an answer worth recording
        if self.recorder is not None:
            self.recorder.record(request, response)
        if self.observer is not None:
            self.observer(request, response)

    def request(self, command: str, args: dict[str, Any] | None = None) -> Any:
        """Send any protocol command in this session and wait for its result."""
        return self._submit(command, dict(args or {})).result()

    async def arequest(self, command: str, args: dict[str, Any] | None = None) -> Any:
        return await asyncio.wrap_future(self._submit(command, dict(args or {})))

    # -- commands (arguments built once, in protocol._commands) -------------------------------
    def _lm_args(self, model: str | None, settings: dict[str, Any]) -> dict[str, Any]:
        merged = {**self.lm_defaults, **{k: v for k, v in settings.items() if v is not None}}
        chosen = model if model is not None else merged.pop("model", DEFAULT_MODEL)
        merged.pop("model", None)
        with usage_errors():
            return commands.configure_lm_args(chosen, **merged)

    def configure_lm(self, model: str | None = None, **settings: Any) -> dict[str, Any]:
        """Configure this session's LM (in integration mode the plugin fills api_base/key/cache)."""
        result: dict[str, Any] = self.request("configure_lm", self._lm_args(model, settings))
        return result

    async def aconfigure_lm(self, model: str | None = None, **settings: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.arequest("configure_lm", self._lm_args(model, settings))
        return result

    @staticmethod
    def _program_args(
        signature: str | dict[str, Any],
        program_type: str,
        program_id: str | None,
        instructions: str | None,
        legacy_id: str | None,
    ) -> dict[str, Any]:
        if legacy_id is not None:
            warnings.warn("Bridge.create_program(id=...) is deprecated; use program_id=", DeprecationWarning, 3)
            program_id = program_id if program_id is not None else legacy_id
        with usage_errors():
            return commands.create_program_args(
                signature, program_type=program_type, instructions=instructions, program_id=program_id
            )

    def create_program(
        self,
        signature: str | dict[str, Any],
        program_type: str = "predict",
        *,
        program_id: str | None = None,
        instructions: str | None = None,
        id: str | None = None,
    ) -> str:
        """Create a program in this session; returns its deterministic id (``id=`` is the old name)."""
        args = self._program_args(signature, program_type, program_id, instructions, id)
        return str(self.request("create_program", args)["program_id"])

    async def acreate_program(
        self,
        signature: str | dict[str, Any],
        program_type: str = "predict",
        *,
        program_id: str | None = None,
        instructions: str | None = None,
        id: str | None = None,
    ) -> str:
        args = self._program_args(signature, program_type, program_id, instructions, id)
        return str((await self.arequest("create_program", args))["program_id"])

    def delete_program(self, program_id: str) -> None:
        with usage_errors():
            args = commands.delete_program_args(program_id)
        self.request("delete_program", args)

    def execute(self, program_id: str, /, **inputs: Any) -> Any:
        """Run a program; returns its outputs as a plain map, or with ``model=Flight`` (a class or a
        typing form; an input called ``model`` that is not a type stays an input) the rebuilt value."""
        target = _type_target(inputs)
        with usage_errors():
            args = commands.execute_args(program_id, inputs)
        return _typed_outputs(self.request("execute_program", args), target)

    async def aexecute(self, program_id: str, /, **inputs: Any) -> Any:
        target = _type_target(inputs)
        with usage_errors():
            args = commands.execute_args(program_id, inputs)
        return _typed_outputs(await self.arequest("execute_program", args), target)

    def run(self, signature: str | dict[str, Any], program_type: str = "predict", /, **inputs: Any) -> dict[str, Any]:
        """Create (idempotently: ids are deterministic) and execute in one call."""
        outputs: dict[str, Any] = self.execute(self.create_program(signature, program_type), **inputs)
        return outputs

    def stub(
        self,
        program_id: str,
        outputs: dict[str, Any] | None = None,
        *,
        inputs: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        """Answer ``program_id`` (for ``inputs``, or any) with ``outputs`` or ``error`` (mock workers, or
        host-side while recording on real workers)."""
        with usage_errors():
            args = commands.stub_args(program_id, outputs, inputs=inputs, error=error)
        self.request("stub_program", args)

    def close(self) -> None:
        """Forget this session: the pool drops it and its worker frees its programs (without waiting)."""
        close_session = getattr(self.pool, "submit_close_session", None)
        if close_session is not None:
            close_session(self.session_id)
        else:
            self.request("cleanup_session", {})


def _type_target(inputs: dict[str, Any]) -> Any:
    """Pop ``model=`` from execute's keyword arguments when it names a type to rebuild (``_typed``)."""
    from dspy_bridge._typed import is_type_target

    if "model" in inputs and is_type_target(inputs["model"]):
        return inputs.pop("model")
    return None


def _typed_outputs(result: dict[str, Any], target: Any) -> Any:
    outputs = dict(result["outputs"])
    if target is None:
        return outputs
    from dspy_bridge._typed import rebuild

    return rebuild(outputs, target, result.get("output_types"))
