"""Mock handler set: answers ``execute_program`` without an LM.

Order of answers: stubs registered by the test → the bridge cassette named in the request's
context → synthetic answers (opt-in) → ``cassette_miss``. Everything else (sessions, programs,
``configure_lm``) is inherited from ``BaseHandlers``, so error paths behave as in a real worker.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself stays off the mock worker's start-up path
if TYPE_CHECKING:
    from typing import Any

    from dspy_bridge.cassettes._library import CassetteLibrary

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

    def __init__(self, worker_id: str) -> None:
        super().__init__(worker_id)
        self.stubs = StubTable()  # the same table (and matching rule) a host-side Bridge uses
        self._cassettes: CassetteLibrary | None = None  # loaded on the first request naming a cassette

    def cmd_stub_program(self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]) -> dict[str, Any]:
        """Register a canned answer: ``{program_id, inputs?, outputs | error}`` (inputs omitted = any)."""
        try:
            return {"stubbed": self.stubs.add(session_id, args)}
        except CommandError as exc:
            raise HandlerFailure(ErrorType.INVALID_REQUEST, str(exc)) from None

    # -- execute_program: stub → cassette → synthetic → cassette_miss ----------------------
    def cmd_execute_program(
        self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]
    ) -> dict[str, Any]:
        # _run only sees the inputs; cassette matchers may compare other args too.
        result = super().cmd_execute_program(args, session_id, {**context, _ARGS_KEY: args})
        sink = context.get(CHUNK_SINK)
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
            return {"outputs": dict(stub["outputs"]), "usage": {}, "source": "stub"}
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
        import copy

        library = self._library()
        from dspy_bridge._exceptions import CassetteCorrupt, CassetteMiss, UsageError
        from dspy_bridge.cassettes._config import CassetteConfig
        from dspy_bridge.cassettes._replay import make_request
        from dspy_bridge.cassettes._synthetic import synthetic_answer

        try:
            config = CassetteConfig.from_context(context["cassette"])
        except UsageError as exc:
            raise HandlerFailure(ErrorType.INVALID_REQUEST, str(exc), details={"argument": "context.cassette"}) from exc
        if config.path is None:
            return synthetic_answer(program.definition, _output_types(program), inputs)
        args = dict(context.get(_ARGS_KEY) or {"program_id": program.program_id, "inputs": inputs})
        model = (lm_session.lm_settings or {}).get("model")
        request = make_request("execute_program", args, program=program.definition, model=model)
        try:
            response = library.play(session_id, config, request, context)
        except CassetteMiss as miss:
            if config.synthetic:
                return synthetic_answer(program.definition, _output_types(program), inputs)
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
                details=copy.deepcopy(error.get("details")),
            )
        result = copy.deepcopy(response["result"])
        if not isinstance(result, dict):
            result = {"outputs": result}
        if context.get(CHUNK_SINK) is not None and response.get("chunks") is not None:
            context[CHUNK_SINK].replay(response["chunks"])  # a streamed recording: chunk for chunk
        result["source"] = "cassette"
        return result

    # -- replay bookkeeping -------------------------------------------------------------------
    def cmd_cassette_report(
        self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]
    ) -> dict[str, Any]:
        """Which interactions of ``args.path`` this session played (for unused reports and pruning)."""
        path = args.get("path")
        if not isinstance(path, str):
            raise HandlerFailure(ErrorType.INVALID_REQUEST, "cassette_report needs a string 'path'")
        from dspy_bridge._exceptions import CassetteCorrupt

        try:
            return self._library().report(session_id, path)
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


def _output_types(program: Program) -> list[tuple[str, str]]:
    if program.spec is None:  # a module program: its outputs are known only from a recording
        return []
    return [(field.name, field.type) for field in program.spec.outputs]
