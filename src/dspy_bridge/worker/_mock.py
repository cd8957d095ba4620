"""Mock handler set: answers ``execute_program`` without an LM.

Order of answers: stubs registered by the test → the bridge cassette named in the request's
context → synthetic answers (opt-in) → ``cassette_miss``. Everything else (sessions, programs,
``configure_lm``) is inherited from ``BaseHandlers``, so error paths behave as in a real worker.

Every answer is checked against the program's output schemas (``_output_shape``): the ones the
real worker reported in the recorded ``create_program`` result when the cassette has it, else the
ones derived from the signature's type text. A stub real DSPy could never return is
``invalid_request``; such a cassette answer is a ``cassette_miss`` (reason ``invalid_answer``).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself stays off the mock worker's start-up path
if TYPE_CHECKING:
    from typing import Any

    from dspy_bridge.cassettes._library import CassetteLibrary

    #: (names or None, {field: JSON Schema}, {field: type text})
    _Shape = tuple[list[str] | None, dict[str, Any], dict[str, str]]

from dspy_bridge.protocol._commands import CommandError, StubTable
from dspy_bridge.protocol._programs import canonical_json
from dspy_bridge.protocol._taxonomy import ErrorType
from dspy_bridge.worker._base import BaseHandlers, HandlerFailure, Program, Session
from dspy_bridge.worker._streaming import CHUNK_SINK

__all__ = ["CassetteHandlers"]

_ARGS_KEY = "_execute_args"  # private context key: the execute_program args, for cassette matchers


class CassetteHandlers(BaseHandlers):
    mode = "mock"
    extra_capabilities = ("cassettes", "stubs", "stream")
    refused = {
        "script": "scripted runs need a real worker: mark the test scripted (@pytest.mark.scripted), or run on a "
        "pool with mode='real'; a mock worker answers from cassettes and stubs only",
    }

    def __init__(self, worker_id: str) -> None:
        super().__init__(worker_id)
        self.stubs = StubTable()  # the same table (and matching rule) a host-side Bridge uses
        self._recorded_predictors: dict[str, list[dict[str, Any]]] = {}  # program id -> from its recording
        self._cassettes: CassetteLibrary | None = None  # loaded on the first request naming a cassette

    def after_hello(self) -> None:
        """Import what replay needs (cassette library, json, schemas; ~15 ms) on a daemon thread while the
        host is busy elsewhere, so the first request naming a cassette does not pay for it. A request that
        arrives first just waits on the same import locks: never slower than importing on demand."""
        import sys

        if all(name in sys.modules for name in REPLAY_MODULES):
            return  # a forked worker: the zygote imported them once for all its children
        import threading

        threading.Thread(target=_warm_replay_imports, name="warm-imports", daemon=True).start()

    def cmd_stub_program(self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]) -> dict[str, Any]:
        """Register a canned answer: ``{program_id, inputs?, outputs | error}`` (inputs omitted = any)."""
        try:
            return {"stubbed": self.stubs.add(session_id, args)}
        except CommandError as exc:
            raise HandlerFailure(ErrorType.INVALID_REQUEST, str(exc)) from None

    def cmd_create_program(
        self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]
    ) -> dict[str, Any]:
        """The base result plus the schemas the type text gives (``{}`` for a model by import path:
        only a recording knows it)."""
        result = super().cmd_create_program(args, session_id, context)
        program = self.program(session_id, result["program_id"])
        recorded = self._recorded_schema(program, context)
        if recorded is not None and recorded.get("predictors"):
            # A module's predictors (names, signatures, demo counts) are known only from a recording.
            self._recorded_predictors[program.program_id] = list(recorded["predictors"])
            result["predictors"] = list(recorded["predictors"])
        _, schemas, _ = self._output_shape(program, context)
        from dspy_bridge.protocol._schema import schema_for_type

        spec = program.spec
        inputs = {f.name: schema_for_type(f.type, f.schema) for f in spec.inputs} if spec is not None else {}
        result["schema"] = {"inputs": inputs, "outputs": schemas}
        return result

    def _predictors(self, program: Program) -> list[dict[str, Any]]:
        recorded = self._recorded_predictors.get(program.program_id)
        return list(recorded) if recorded is not None else super()._predictors(program)

    # -- execute_program: stub → cassette → synthetic → cassette_miss ----------------------
    def cmd_execute_program(
        self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]
    ) -> dict[str, Any]:
        sink = context.get(CHUNK_SINK)
        if sink is not None:
            sink.size = _stream_chunks(context)
        # _run only sees the inputs; cassette matchers may compare other args too.
        result = super().cmd_execute_program(args, session_id, {**context, _ARGS_KEY: args})
        if sink is not None and not sink.replayed:  # no recorded chunks: one chunk per output field
            sink.complete(result.get("outputs"))
        return result

    def _run(
        self,
        session_id: str | None,
        lm_session: Session,
        program: Program,
        inputs: dict[str, Any],
        context: dict[str, Any],
    ) -> dict[str, Any]:
        stub = self.stubs.answer(session_id, program.program_id, inputs)
        if stub is not None:
            if "error" in stub:
                error = stub["error"]
                raise HandlerFailure(
                    ErrorType(error["type"]), error["message"], retryable=error["retryable"], details=error["details"]
                )
            shape = self._output_shape(program, context)
            _check_answer(program, shape, stub["outputs"], "stub", ErrorType.INVALID_REQUEST)
            return {"outputs": dict(stub["outputs"]), "output_types": shape[2], "usage": {}, "source": "stub"}
        if context.get("cassette") is not None:
            return self._from_cassette(session_id, lm_session, program, inputs, context)
        raise HandlerFailure(
            ErrorType.CASSETTE_MISS,
            f"no stub and no cassette answer for program {program.program_id} with inputs {canonical_json(inputs)}; "
            "register a stub, name a cassette in the request context, or record one with --bridge-record=once",
            details={"reason": "no_cassette", "program_id": program.program_id, "inputs": inputs},
        )

    def _library(self) -> CassetteLibrary:
        if self._cassettes is None:
            from dspy_bridge.cassettes._library import CassetteLibrary  # pydantic + YAML: only when needed

            self._cassettes = CassetteLibrary()
        return self._cassettes

    def _from_cassette(
        self,
        session_id: str | None,
        lm_session: Session,
        program: Program,
        inputs: dict[str, Any],
        context: dict[str, Any],
    ) -> dict[str, Any]:
        library = self._library()
        from dspy_bridge._exceptions import CassetteCorrupt, CassetteMiss, UsageError
        from dspy_bridge.cassettes._config import CassetteConfig
        from dspy_bridge.cassettes._replay import make_request

        try:
            config = CassetteConfig.from_context(context["cassette"])
        except UsageError as exc:
            raise HandlerFailure(ErrorType.INVALID_REQUEST, str(exc), details={"argument": "context.cassette"}) from exc
        if config.path is None:
            from dspy_bridge.cassettes._synthetic import synthetic_answer

            return synthetic_answer(program.definition, _synthetic_fields(program, context, self), inputs)
        args = dict(context.get(_ARGS_KEY) or {"program_id": program.program_id, "inputs": inputs})
        model = (lm_session.lm_settings or {}).get("model")
        request = make_request("execute_program", args, program=program.definition, model=model)
        try:
            response = library.play(session_id, config, request, context)
        except UsageError as exc:  # the path cannot be used (see CassetteLibrary._cassette)
            raise HandlerFailure(
                ErrorType.INVALID_REQUEST, str(exc), details={"argument": "context.cassette"}
            ) from None
        except CassetteMiss as miss:
            if config.synthetic:
                from dspy_bridge.cassettes._synthetic import synthetic_answer

                return synthetic_answer(program.definition, _synthetic_fields(program, context, self), inputs)
            raise HandlerFailure(ErrorType.CASSETTE_MISS, miss.message, details=miss.details) from miss
        except CassetteCorrupt as exc:
            raise HandlerFailure(
                ErrorType.CASSETTE_MISS, exc.message, details={"reason": "corrupt", **exc.details}
            ) from exc
        if not response["ok"]:
            error = response["error"]
            raise HandlerFailure(
                ErrorType(error["type"]),
                str(error["message"]),
                retryable=bool(error.get("retryable", False)),
                details=_copy(error.get("details")),
            )
        result = _copy(response["result"])
        if not isinstance(result, dict):
            result = {"outputs": result}
        shape = self._output_shape(program, context)
        _check_answer(program, shape, result.get("outputs"), "cassette answer", ErrorType.CASSETTE_MISS)
        result.setdefault("output_types", shape[2])
        if context.get(CHUNK_SINK) is not None and response.get("chunks") is not None:
            context[CHUNK_SINK].replay(response["chunks"])  # a streamed recording: chunk for chunk
        result["source"] = "cassette"
        return result

    # -- output schemas -----------------------------------------------------------------------
    def _recorded_schema(self, program: Program, context: dict[str, Any]) -> dict[str, Any] | None:
        """The recorded ``create_program`` result's ``schema``/``signature`` for this program, if the
        request names a cassette that has one (loading it: pydantic and YAML, on the request path)."""
        reference = context.get("cassette")
        if reference is None:
            return None
        from dspy_bridge._exceptions import CassetteCorrupt, UsageError
        from dspy_bridge.cassettes._config import CassetteConfig

        try:
            config = CassetteConfig.from_context(reference)
            return None if config.path is None else self._library().program_schema(config.path, program.program_id)
        except (UsageError, CassetteCorrupt):
            return None  # the replay itself reports these

    def _output_shape(self, program: Program, context: dict[str, Any]) -> _Shape:
        """``(names or None, {field: schema}, {field: type text})`` of the program's outputs."""
        recorded = self._recorded_schema(program, context)
        if recorded is not None and isinstance(recorded.get("schema"), dict):
            schemas = dict(recorded["schema"].get("outputs") or {})
            fields = (recorded.get("signature") or {}).get("outputs") or []
            types = {str(f.get("name")): str(f.get("type")) for f in fields if isinstance(f, dict)}
            if program.spec is None or recorded.get("kind") == "module":
                # A module's forward() decides what it returns (a ReAct agent adds its trajectory): only the
                # fields its final predictor names are known, so only their types are checked.
                return None, schemas, types
            return (list(schemas) or None), schemas, types
        from dspy_bridge.protocol._schema import schema_for_type

        outputs = list(program.spec.outputs) if program.spec is not None else []
        schemas = {field.name: schema_for_type(field.type, field.schema) for field in outputs}
        types = {field.name: field.type for field in outputs}
        if program.definition.get("program_type") == "chain_of_thought":
            schemas = {"reasoning": {"type": "string"}, **schemas}
            types = {"reasoning": "str", **types}
        return (list(schemas) or None), schemas, types

    # -- replay bookkeeping -------------------------------------------------------------------
    def cmd_render_prompts(
        self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]
    ) -> dict[str, Any]:
        raise HandlerFailure(
            ErrorType.INVALID_REQUEST,
            "render_prompts needs a real worker: prompts are built by DSPy's adapters, which a mock worker never "
            "imports (the pytest plugin renders them on its real pool for --bridge-prompts)",
        )

    def cmd_cassette_report(
        self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]
    ) -> dict[str, Any]:
        """Which interactions of ``args.path`` this session played (for unused reports and pruning)."""
        path = args.get("path")
        if not isinstance(path, str):
            raise HandlerFailure(ErrorType.INVALID_REQUEST, "cassette_report needs a string 'path'")
        from dspy_bridge._exceptions import CassetteCorrupt, UsageError

        try:
            return self._library().report(session_id, path)
        except UsageError as exc:
            raise HandlerFailure(ErrorType.INVALID_REQUEST, str(exc), details={"argument": "path"}) from None
        except CassetteCorrupt as exc:
            raise HandlerFailure(
                ErrorType.CASSETTE_MISS, exc.message, details={"reason": "corrupt", **exc.details}
            ) from exc

    def cmd_cleanup_session(
        self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]
    ) -> dict[str, Any]:
        result = super().cmd_cleanup_session(args, session_id, context)
        if self._cassettes is not None:
            self._cassettes.forget(result["session_id"])
        self.stubs.forget(result["session_id"])
        return result

    def cmd_reset_state(self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]) -> dict[str, Any]:
        result = super().cmd_reset_state(args, session_id, context)
        if self._cassettes is not None:
            self._cassettes.forget(everything=True)
        self.stubs.forget(everything=True)
        return result


def _copy(value: Any) -> Any:
    """A deep copy of plain cassette data, through msgpack (already loaded: ``copy`` would import ``weakref``)."""
    import msgpack

    return msgpack.unpackb(msgpack.packb(value, use_bin_type=True), raw=False)


#: What replaying a cassette imports (the zygote preloads them; a spawned worker warms them after its Hello).
REPLAY_MODULES = (
    "dspy_bridge.cassettes._config",
    "dspy_bridge.cassettes._library",
    "dspy_bridge.cassettes._replay",
    "dspy_bridge.protocol._schema",
)


def _warm_replay_imports() -> None:
    import importlib

    try:
        for name in REPLAY_MODULES:
            importlib.import_module(name)
    except Exception:  # warming is best effort: the request path imports (and reports) for real
        pass


def _check_answer(program: Program, shape: _Shape, outputs: Any, what: str, error: ErrorType) -> None:
    """Refuse an answer real DSPy could never return for this program (a field of the wrong type,
    a missing or unknown field)."""
    from dspy_bridge.protocol._schema import answer_mismatch

    names, schemas, types = shape
    if (
        what == "stub"
        and names
        and names[0] == "reasoning"
        and isinstance(outputs, dict)
        and "reasoning" not in outputs
    ):
        names = names[1:]  # a stub may leave chain-of-thought's reasoning out: tests rarely care what it says
    problem = answer_mismatch(outputs, schemas, names)
    if problem is None:
        return
    field = problem.get("field")
    kind = f" (field {field!r} is {types[field]})" if field in types else ""
    details: dict[str, Any] = {"program_id": program.program_id, "field": field, "expected": problem.get("expected")}
    if error is ErrorType.CASSETTE_MISS:
        details["reason"] = "invalid_answer"
    raise HandlerFailure(
        error,
        f"{what} for program {program.program_id} is not an answer real DSPy could return: {problem['message']}{kind}",
        details=details,
    )


def _synthetic_fields(program: Program, context: dict[str, Any], handlers: CassetteHandlers) -> list[Any]:
    """``(name, type, schema)`` of every output (``reasoning`` left to ``synthetic_answer``)."""
    _, schemas, types = handlers._output_shape(program, context)
    return [(name, types.get(name, "str"), schema) for name, schema in schemas.items() if name != "reasoning"]


def _stream_chunks(context: dict[str, Any]) -> int | None:
    """The test's ``stream_chunks`` (characters per replayed chunk), checked; None: as recorded."""
    cassette = context.get("cassette")
    if not isinstance(cassette, dict) or cassette.get("stream_chunks") is None:
        return None
    from dspy_bridge._exceptions import UsageError
    from dspy_bridge.cassettes._config import stream_chunk_size

    try:
        return stream_chunk_size(cassette["stream_chunks"])
    except UsageError as exc:
        raise HandlerFailure(ErrorType.INVALID_REQUEST, str(exc), details={"argument": "context.cassette"}) from exc
