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
from typing import TYPE_CHECKING, Any, Protocol, cast

from dspy_bridge._exceptions import BridgeError, CassetteMiss, HandlerError, UsageError
from dspy_bridge._result import Result
from dspy_bridge.pool._errors import error_info, handler_error, usage_errors
from dspy_bridge.pool._streaming import StreamChunk, StreamEnd, StreamEvent, iterate_blocking, stream_args
from dspy_bridge.protocol import _commands as commands
from dspy_bridge.worker._streaming import chunk_text, rechunk

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

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


class StreamSender(RequestSender, Protocol):
    """What ``Bridge.stream`` needs from a pool: ``submit`` with ``on_chunk`` (``SyncPool`` has it)."""

    def submit(
        self,
        command: str,
        args: dict[str, Any] | None = None,
        *,
        session_id: str | None = None,
        context: dict[str, Any] | None = None,
        on_chunk: Callable[[str, str], None] | None = None,
    ) -> Future[Any]: ...


class ExchangeRecorder(Protocol):
    """What a Bridge needs from a recorder: ``cassettes.Recorder`` satisfies it."""

    def record(self, request: dict[str, Any], response: dict[str, Any]) -> None: ...


class Bridge:
    """A session-bound client: programs created through it are visible only through it.

    Its public methods set ``__tracebackhide__``: a failing test's report starts at the test's own line and
    ends with the diagnosis, not with the pool's internals.
    """

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
        self._schemas: dict[str, tuple[dict[str, Any], list[str] | None]] = {}  # program id -> output schemas
        self.outcomes: Counter[str] = Counter()  # where execute answers came from: cassette, stub, miss, …
        # LM calls behind this session's answers and what they cost (USD, DSPy's price table), whether made now
        # or when the cassette that answered was recorded: the plugin's spend and budget figures.
        self.lm_calls = 0
        self.cost_usd = 0.0
        self.cost_unknown = 0
        self.created: list[dict[str, Any]] = []  # create_program arguments, in order (the prompt lock renders them)

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
            refused = self._impossible_stub(str(args.get("program_id")), answer["outputs"])
            if refused is not None:
                return refused
            return {"ok": True, "result": {"outputs": answer["outputs"], "usage": {}, "source": "stub"}}
        return None

    def _impossible_stub(self, program_id: str, outputs: dict[str, Any]) -> dict[str, Any] | None:
        """A host-side stub gets the mock worker's check: an answer real DSPy could never return is refused.

        The schemas come from the real worker's ``create_program`` result, seen in ``_observe``.
        """
        known = self._schemas.get(program_id)
        if known is None:
            return None
        from dspy_bridge.protocol._schema import answer_mismatch

        schemas, names = known
        if names and names[0] == "reasoning" and "reasoning" not in outputs:
            names = names[1:]  # as on the mock worker: a stub may leave chain-of-thought's reasoning out
        problem = answer_mismatch(outputs, schemas, names)
        if problem is None:
            return None
        message = f"stub for program {program_id} is not an answer real DSPy could return: {problem['message']}"
        details = {"program_id": program_id, "field": problem.get("field"), "expected": problem.get("expected")}
        return {"ok": False, "error": {"type": "invalid_request", "message": message, "details": details}}

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

    def _observe(self, request: dict[str, Any], done: Future[Any], chunks: list[dict[str, str]] | None = None) -> None:
        """Count answer sources, feed the recorder and the observer (runs on the pool's thread)."""
        if done.cancelled():
            return
        error = done.exception()
        if error is None:
            result = done.result()
            if request["command"] == "execute_program" and isinstance(result, dict):
                source = str(result.get("source", "lm"))
                self.outcomes[source] += 1
                if source in ("lm", "cassette"):  # LM calls made now, or made when the cassette was recorded
                    self._count_spend(result)
                hits = result.get("cache_hits")
                if isinstance(hits, int) and hits > 0:  # answers DSPy's cache gave, not the cassette
                    self.outcomes["dspy_cache"] += hits
            if request["command"] == "create_program" and isinstance(result, dict):
                self._learn_schema(result)
            response: dict[str, Any] = {"ok": True, "result": result}
            if chunks is not None:  # a streamed answer: the cassette keeps its chunks
                response["chunks"] = list(chunks)
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

    def _count_spend(self, result: dict[str, Any]) -> None:
        calls = result.get("lm_calls")
        self.lm_calls += int(calls) if isinstance(calls, int) else 0
        cost = result.get("cost")
        if isinstance(cost, int | float) and not isinstance(cost, bool):
            self.cost_usd += float(cost)
        elif calls:
            self.cost_unknown += 1  # a model without a known price: the sum is a lower bound

    def _learn_schema(self, result: dict[str, Any]) -> None:
        """Keep a program's output schemas (a real worker reports them) for checking host-side stubs."""
        schema = result.get("schema")
        outputs = schema.get("outputs") if isinstance(schema, dict) else None
        if isinstance(outputs, dict) and outputs:
            names = None if result.get("kind") == "module" else list(outputs)  # a module's outputs are open
            self._schemas[str(result.get("program_id"))] = (dict(outputs), names)

    def request(self, command: str, args: dict[str, Any] | None = None) -> Any:
        """Send any protocol command in this session and wait for its result."""
        __tracebackhide__ = True
        future = self._submit(command, dict(args or {}))
        try:
            result = future.result()
        except BridgeError as exc:
            raise _surfaced(exc) from exc.__cause__
        if command == "create_program" and isinstance(result, dict):
            self._learn_schema(result)  # before the next stub (the done-callback may not have run yet)
        return result

    async def arequest(self, command: str, args: dict[str, Any] | None = None) -> Any:
        __tracebackhide__ = True
        future = self._submit(command, dict(args or {}))
        try:
            return await asyncio.wrap_future(future)
        except BridgeError as exc:
            raise _surfaced(exc) from exc.__cause__

    # -- commands (arguments built once, in protocol._commands) -------------------------------
    def _lm_args(self, model: str | None, settings: dict[str, Any]) -> dict[str, Any]:
        merged = {**self.lm_defaults, **{k: v for k, v in settings.items() if v is not None}}
        chosen = model if model is not None else merged.pop("model", DEFAULT_MODEL)
        merged.pop("model", None)
        with usage_errors():
            return commands.configure_lm_args(chosen, **merged)

    def configure_lm(self, model: str | None = None, **settings: Any) -> dict[str, Any]:
        """Configure this session's LM (in integration mode the plugin fills api_base/key/cache)."""
        __tracebackhide__ = True
        result: dict[str, Any] = self.request("configure_lm", self._lm_args(model, settings))
        return result

    async def aconfigure_lm(self, model: str | None = None, **settings: Any) -> dict[str, Any]:
        __tracebackhide__ = True
        result: dict[str, Any] = await self.arequest("configure_lm", self._lm_args(model, settings))
        return result

    @staticmethod
    def _program_args(
        signature: str | dict[str, Any] | None,
        program_type: str,
        program_id: str | None,
        instructions: str | None,
        legacy_id: str | None,
        definition: dict[str, Any],
    ) -> dict[str, Any]:
        if legacy_id is not None:
            warnings.warn("Bridge.create_program(id=...) is deprecated; use program_id=", DeprecationWarning, 3)
            program_id = program_id if program_id is not None else legacy_id
        with usage_errors():
            return commands.create_program_args(
                signature, program_type=program_type, instructions=instructions, program_id=program_id, **definition
            )

    def create_program(
        self,
        signature: str | dict[str, Any] | None = None,
        program_type: str = "predict",
        *,
        program_id: str | None = None,
        instructions: str | None = None,
        id: str | None = None,
        **definition: Any,
    ) -> str:
        """Create a program in this session; returns its deterministic id (``id=`` is the old name).

        A signature program (``signature``, ``program_type``, ``instructions``, ``demos=``) or a user module
        (``module="pkg.mod:Class", kwargs={...}``); both take ``state=`` (a saved-state map or the path of the
        JSON ``module.save()`` wrote, read here) and ``adapter="chat"|"json"``. Unknown keywords are refused.
        """
        __tracebackhide__ = True
        args = self._program_args(signature, program_type, program_id, instructions, id, definition)
        program = str(self.request("create_program", args)["program_id"])
        self.created.append(args)
        return program

    async def acreate_program(
        self,
        signature: str | dict[str, Any] | None = None,
        program_type: str = "predict",
        *,
        program_id: str | None = None,
        instructions: str | None = None,
        id: str | None = None,
        **definition: Any,
    ) -> str:
        __tracebackhide__ = True
        args = self._program_args(signature, program_type, program_id, instructions, id, definition)
        program = str((await self.arequest("create_program", args))["program_id"])
        self.created.append(args)
        return program

    def delete_program(self, program_id: str) -> None:
        __tracebackhide__ = True
        with usage_errors():
            args = commands.delete_program_args(program_id)
        self.request("delete_program", args)

    @staticmethod
    def _execute_args(
        program_id: str, inputs: dict[str, Any], config: dict[str, Any] | None, adapter: str | None, trace: bool
    ) -> dict[str, Any]:
        with usage_errors():
            return commands.execute_args(program_id, inputs, config=config, adapter=adapter, trace=trace)

    @staticmethod
    def _answer(result: dict[str, Any], full: bool, target: Any = None) -> Any:
        if full:
            return Result.from_response(result)
        return _typed_outputs(result, target)

    def execute(
        self,
        program_id: str,
        /,
        *,
        full: bool = False,
        config: dict[str, Any] | None = None,
        adapter: str | None = None,
        trace: bool = False,
        **inputs: Any,
    ) -> Any:
        """Run a program; returns its outputs as a plain map, or with ``full=True`` a ``Result`` (completions,
        usage per model, cost, lm_calls, trace, tool_calls, source). ``config`` (temperature, n, max_tokens,
        rollout_id) and ``adapter`` apply to this call only; ``trace=True`` asks for the per-predictor trace.
        ``model=Flight`` (a class or a typing form; an input called ``model`` that is not a type stays an
        input) returns the rebuilt value."""
        __tracebackhide__ = True
        target = _type_target(inputs)
        args = self._execute_args(program_id, inputs, config, adapter, trace)
        return self._answer(self.request("execute_program", args), full, target)

    async def aexecute(
        self,
        program_id: str,
        /,
        *,
        full: bool = False,
        config: dict[str, Any] | None = None,
        adapter: str | None = None,
        trace: bool = False,
        **inputs: Any,
    ) -> Any:
        __tracebackhide__ = True
        target = _type_target(inputs)
        args = self._execute_args(program_id, inputs, config, adapter, trace)
        return self._answer(await self.arequest("execute_program", args), full, target)

    def run(self, signature: str | dict[str, Any], program_type: str = "predict", /, **inputs: Any) -> dict[str, Any]:
        """Create (idempotently: ids are deterministic) and execute in one call."""
        __tracebackhide__ = True
        outputs: dict[str, Any] = self.execute(self.create_program(signature, program_type), **inputs)
        return outputs

    # -- streaming (docs/programs-contract.md, "Streaming") ----------------------------------
    def stream(self, program_id: str, /, **inputs: Any) -> Iterator[StreamEvent]:
        """Run a program streaming, as ``dspy.streamify`` does: ``StreamChunk(field, text)`` items as the
        worker makes them, then one ``StreamEnd`` (``.outputs``, ``.result``). Recorded with its chunks;
        answers the host gives itself (host stubs, ``new_episodes`` hits) replay the recorded chunks, or
        one chunk per output field."""
        args = stream_args(program_id, inputs)
        self.requests += 1
        request = {"command": "execute_program", "args": args, "session_id": self.session_id}
        answer = self._host_stream_answer(request)
        if answer is not None:
            return self._replay_stream(answer)
        pool = cast("StreamSender", self.pool)
        chunks: list[dict[str, str]] = []

        def start(on_chunk: Callable[[str, str], None]) -> Future[Any]:
            def keep(field: str, text: str) -> None:
                chunks.append({"field": field, "text": text})
                on_chunk(field, text)

            future = pool.submit(
                "execute_program", args, session_id=self.session_id, context=self.context, on_chunk=keep
            )
            future.add_done_callback(lambda done: self._observe(request, done, chunks))
            return future

        return iterate_blocking(start)

    def _host_stream_answer(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """As ``_answer_on_host``, but the answer map itself (its ``chunks`` replay)."""
        answer = self._host_stub(request["command"], request["args"]) if self.host_stubs else None
        source = "stub"
        if answer is None:
            lookup = getattr(self.recorder, "lookup", None)
            answer = lookup(request) if lookup is not None else None
            source = "cassette"
        if answer is not None:
            self.outcomes[source] += 1
        return answer

    def _replay_stream(self, answer: dict[str, Any]) -> Iterator[StreamEvent]:
        if not answer.get("ok", True):
            raise handler_error(answer.get("error") or {}, session_id=self.session_id)
        result = answer.get("result") or {}
        chunks = answer.get("chunks")
        if chunks is None:
            outputs = result.get("outputs") or {}
            chunks = [{"field": field, "text": chunk_text(value)} for field, value in outputs.items()]
        from dspy_bridge.cassettes._config import stream_chunk_size

        cassette = (self.context or {}).get("cassette")
        size = stream_chunk_size(cassette.get("stream_chunks")) if isinstance(cassette, dict) else None
        for chunk in rechunk(chunks, size) if size else chunks:
            yield StreamChunk(str(chunk["field"]), str(chunk["text"]))
        yield StreamEnd(result)

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
        __tracebackhide__ = True
        with usage_errors():
            args = commands.stub_args(program_id, outputs, inputs=inputs, error=error)
        self.request("stub_program", args)

    def script(self, script: dict[str, Any], *, strict: bool = True, auto: bool = False) -> dict[str, Any]:
        """Answer this session's LM calls from ``script`` (real workers; the pytest mark ``scripted``):
        ``{"agent.react": [{...}, {...}], "agent.extract": {"answer": 42}}`` — per predictor
        (``named_predictors()`` names; a final ``.predict`` may be left out), a list for successive calls or a
        map for every call, formatted by the adapter that asks. ``strict`` fails a run on an unscripted call;
        ``auto`` fills unscripted calls with schema-valid values."""
        __tracebackhide__ = True
        with usage_errors():
            args = commands.script_args(script, strict=strict, auto=auto)
        result: dict[str, Any] = self.request("script", args)
        return result

    def close(self) -> None:
        """Forget this session: the pool drops it and its worker frees its programs (without waiting)."""
        close_session = getattr(self.pool, "submit_close_session", None)
        if close_session is not None:
            close_session(self.session_id)
        else:
            self.request("cleanup_session", {})


def _surfaced(exc: BridgeError) -> BridgeError:
    """The error as the caller should see it: a replay miss as ``CassetteMiss``, and without the pool's
    internal frames (it was raised on the pool's thread; the diagnosis is in the message, not the stack)."""
    if isinstance(exc, HandlerError) and exc.type == "cassette_miss":
        context = {key: getattr(exc, key) for key in ("request_id", "worker_pid", "session_id")}
        return CassetteMiss(exc.message, **context, **(exc.error_details or {}))
    return exc.with_traceback(None)


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
