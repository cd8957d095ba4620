"""The drift check: does real DSPy still give the answers a mock test's bridge cassette promises?

``pytest --bridge-mode=integration`` runs mock-marked tests on real workers (their LM calls replayed
from the HTTP cassettes). For each ``execute_program`` this compares the real answer with what the
bridge cassette recorded for the same request, and the summary lists every difference — e.g. after
a DSPy upgrade changed a prompt or a parser — with its verdict (``cassettes._verdict``): benign (same
type, other text) or a regression (type, ``Literal``/bool value, missing field, tool-call sequence,
failure). ``--bridge-drift=fail`` fails the run on regressions, ``strict`` on any difference. It reuses the recorder's request translation (session
labels, program definitions) in ``new_episodes`` mode, read-only: nothing is ever saved.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dspy_bridge._modes import RecordMode
from dspy_bridge.protocol._programs import canonical_json

__all__ = ["Drift", "DriftCheck", "drift_fails_run"]


@dataclass(frozen=True)
class Drift:
    """One output field whose real answer differs from the recorded one (``field`` ``error`` for failures)."""

    nodeid: str
    program: str
    inputs: str
    field: str
    recorded: str
    now: str
    verdict: str = "regression"  # or "benign"
    reason: str = ""

    def describe(self) -> str:
        return (
            f"{self.nodeid}: {self.program} {self.inputs} field {self.field!r} [{self.verdict}: {self.reason}]\n"
            f"    recorded: {self.recorded}\n    real now: {self.now}"
        )

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _fields(response: dict[str, Any]) -> dict[str, str]:
    """Each output field's answer as canonical JSON; a failure is the one pseudo-field ``error``."""
    if response.get("ok", True):
        result = response.get("result") or {}
        outputs = result.get("outputs", result) if isinstance(result, dict) else result
        if isinstance(outputs, dict):
            return {str(name): canonical_json(value) for name, value in outputs.items()}
        return {"outputs": canonical_json(outputs)}
    error = response.get("error") or {}
    return {"error": f"{error.get('type')}: {error.get('message')}"}


class DriftCheck:
    """Observes one test's exchanges and collects answers that differ from its bridge cassette."""

    def __init__(self, nodeid: str, cassette: Path) -> None:
        from dspy_bridge.cassettes import Recorder

        self.nodeid = nodeid
        self.cassette = cassette
        self.drifts: list[Drift] = []
        self.compared = 0
        self._reader = Recorder(cassette, RecordMode.NEW_EPISODES) if cassette.exists() else None

    def observe(self, request: dict[str, Any], response: dict[str, Any]) -> None:
        if self._reader is None:
            return
        expected = self._reader.lookup(request) if request["command"] == "execute_program" else None
        self._reader.record(request, response)  # learn programs and sessions; never saved
        if expected is None:
            return
        from dspy_bridge.cassettes._verdict import classify_answers

        self.compared += 1
        recorded, now = _fields(expected), _fields(response)
        args = request.get("args") or {}
        for verdict in classify_answers(expected, response):
            top = verdict.field.split(".")[0]
            self.drifts.append(
                Drift(
                    nodeid=self.nodeid,
                    program=str(args.get("program_id")),
                    inputs=canonical_json(args.get("inputs", {})),
                    field=verdict.field,
                    recorded=recorded.get(top, _tools(expected) if top == "tool_calls" else "(missing)"),
                    now=now.get(top, _tools(response) if top == "tool_calls" else "(missing)"),
                    verdict=verdict.verdict,
                    reason=verdict.reason,
                )
            )


def _tools(response: dict[str, Any]) -> str:
    calls = (response.get("result") or {}).get("tool_calls") or []
    return canonical_json([call.get("tool") if isinstance(call, dict) else call for call in calls])


def drift_fails_run(mode: str, drifts: list[dict[str, str]]) -> bool:
    """``fail``: a regression among the differences; ``strict``: any difference; ``report``: never."""
    if mode == "strict":
        return bool(drifts)
    return mode == "fail" and any(drift.get("verdict", "regression") == "regression" for drift in drifts)
