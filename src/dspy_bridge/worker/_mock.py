"""Mock handler set: answers ``execute_program`` without an LM.

Order of answers: stubs registered by the test → the bridge cassette named in the request's
context → synthetic answers (opt-in) → ``cassette_miss``. Everything else (sessions, programs,
``configure_lm``) is inherited from ``BaseHandlers``, so error paths behave as in a real worker.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself stays off the mock worker's start-up path
if TYPE_CHECKING:
    from typing import Any

from dspy_bridge.protocol._programs import canonical_json
from dspy_bridge.protocol._taxonomy import ErrorType
from dspy_bridge.worker._base import BaseHandlers, HandlerFailure, Program, Session

__all__ = ["CassetteHandlers"]


class CassetteHandlers(BaseHandlers):
    mode = "mock"
    extra_capabilities = ("cassettes", "stubs")

    def __init__(self, worker_id: str) -> None:
        super().__init__(worker_id)
        # (session_id, program_id) -> list of (inputs-json or None for any, answer)
        self.stubs: dict[tuple[str | None, str], list[tuple[str | None, dict[str, Any]]]] = {}

    def cmd_stub_program(self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]) -> dict[str, Any]:
        """Register a canned answer: ``{program_id, inputs?, outputs | error}`` (inputs omitted = any)."""
        program_id = args.get("program_id")
        if not isinstance(program_id, str):
            raise HandlerFailure(ErrorType.INVALID_REQUEST, "stub_program needs a string 'program_id'")
        if not isinstance(args.get("outputs"), dict) and not isinstance(args.get("error"), dict):
            raise HandlerFailure(ErrorType.INVALID_REQUEST, "stub_program needs 'outputs' (a map) or 'error' (a map)")
        inputs = args.get("inputs")
        key = canonical_json(inputs) if inputs is not None else None
        answer = {"outputs": args["outputs"]} if isinstance(args.get("outputs"), dict) else {"error": args["error"]}
        self.stubs.setdefault((session_id, program_id), []).insert(0, (key, answer))
        return {"stubbed": program_id}

    def _stub_answer(self, session_id: str | None, program: Program, inputs: dict[str, Any]) -> dict[str, Any] | None:
        key = canonical_json(inputs)
        for stub_key, answer in self.stubs.get((session_id, program.program_id), []):
            if stub_key is None or stub_key == key:
                return answer
        return None

    def _run(
        self,
        session_id: str | None,
        lm_session: Session,
        program: Program,
        inputs: dict[str, Any],
        context: dict[str, Any],
    ) -> dict[str, Any]:
        stub = self._stub_answer(session_id, program, inputs)
        if stub is not None:
            if "error" in stub:
                error = stub["error"]
                raise HandlerFailure(
                    ErrorType(error.get("type", "lm_error")),
                    str(error.get("message", "stubbed error")),
                    retryable=bool(error.get("retryable", False)),
                )
            return {"outputs": dict(stub["outputs"]), "usage": {}, "source": "stub"}
        raise HandlerFailure(
            ErrorType.CASSETTE_MISS,
            f"no stub and no cassette answer for program {program.program_id} with inputs {canonical_json(inputs)}; "
            "register a stub, name a cassette in the request context, or record one with --bridge-record=once",
            details={"program_id": program.program_id, "inputs": inputs},
        )
