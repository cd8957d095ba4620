"""Verdicts on changed answers: benign wording versus regressions a program's callers would feel."""

from __future__ import annotations

from typing import Any

from dspy_bridge.cassettes._verdict import BENIGN, REGRESSION, classify_answers, kind_of


def ok(outputs: dict[str, Any], **result: Any) -> dict[str, Any]:
    return {"ok": True, "result": {"outputs": outputs, **result}}


def failed(kind: str, message: str = "boom") -> dict[str, Any]:
    return {"ok": False, "error": {"type": kind, "message": message}}


def verdicts(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(v.field, v.verdict, v.reason) for v in classify_answers(old, new)]


def test_same_answers_have_no_verdicts_and_other_text_is_benign() -> None:
    assert verdicts(ok({"answer": "Paris"}), ok({"answer": "Paris"})) == []
    assert verdicts(ok({"answer": "Paris"}), ok({"answer": "Paris, France"})) == [
        ("answer", BENIGN, "same type (string), different value")
    ]
    assert verdicts(ok({"score": 0.8}), ok({"score": 1})) == [("score", BENIGN, "same type (number), different value")]
    assert verdicts(ok({"tags": ["a"]}), ok({"tags": ["a", "b"]}))[0][1] == BENIGN


def test_type_literal_bool_and_missing_fields_are_regressions() -> None:
    assert verdicts(ok({"answer": "4"}), ok({"answer": 4})) == [("answer", REGRESSION, "type string → number")]
    typed = {"output_types": {"label": "Literal['yes', 'no']"}}
    assert verdicts(ok({"label": "yes"}, **typed), ok({"label": "no"}, **typed)) == [
        ("label", REGRESSION, "Literal value 'yes' → 'no'")
    ]
    assert verdicts(ok({"ok": True}), ok({"ok": False}))[0][1] == REGRESSION
    assert verdicts(ok({"a": "x", "b": "y"}), ok({"a": "x", "c": "y"})) == [
        ("b", REGRESSION, "missing field"),
        ("c", REGRESSION, "new field"),
    ]
    assert verdicts(ok({"invoice": {"total": 3, "currency": "EUR"}}), ok({"invoice": {"total": 3}})) == [
        ("invoice", REGRESSION, "keys changed (-currency)")
    ]
    assert verdicts(ok({"invoice": {"total": 3}}), ok({"invoice": {"total": "3"}})) == [
        ("invoice.total", REGRESSION, "type number → string")
    ]
    assert verdicts(ok({"xs": [1, 2]}), ok({"xs": ["1"]})) == [("xs", REGRESSION, "item types ['number'] → ['string']")]


def test_tool_calls_finish_reasons_and_failures() -> None:
    search = {"tool": "search", "args": {"q": "x"}, "observation": "..."}
    finish = {"tool": "finish", "args": {}, "observation": "done"}
    before = ok({"answer": "x"}, tool_calls=[search, finish])
    reworded = ok({"answer": "x"}, tool_calls=[{**search, "observation": "other text"}, finish])
    assert verdicts(before, reworded) == []  # same sequence of tools: not a field difference
    assert verdicts(before, ok({"answer": "x"}, tool_calls=[finish])) == [
        ("tool_calls", REGRESSION, "tool-call sequence ['search', 'finish'] → ['finish']")
    ]
    assert verdicts(ok({"a": "x"}, finish_reason="STOP"), ok({"a": "x"}, finish_reason="MAX_TOKENS")) == [
        ("finish_reason", REGRESSION, "finish reason STOP → MAX_TOKENS")
    ]
    assert verdicts(ok({"a": "x"}), failed("lm_error")) == [("error", REGRESSION, "now fails: lm_error")]
    assert verdicts(failed("lm_error"), ok({"a": "x"}))[0][1] == REGRESSION
    assert verdicts(failed("lm_error", "a"), failed("lm_error", "b")) == [
        ("error", BENIGN, "same error type, different message")
    ]
    assert verdicts(failed("lm_error"), failed("lm_rate_limited"))[0][1] == REGRESSION
    assert [kind_of(v) for v in (None, True, 1, 1.5, "s", [], {})] == [
        "null", "boolean", "number", "number", "string", "array", "object"
    ]  # fmt: skip


def test_the_drift_check_gives_each_difference_its_verdict_and_fail_means_regressions(tmp_path) -> None:
    from dspy_bridge._pytest._drift import DriftCheck, drift_fails_run
    from dspy_bridge.cassettes import Recorder

    path = tmp_path / "t.bridge.yaml"
    program = {"signature": "q -> label: Literal['yes', 'no'], why: str"}
    typed = {"output_types": {"label": "Literal['yes', 'no']", "why": "str"}}
    execute = {"command": "execute_program", "args": {"program_id": "p1", "inputs": {"q": "?"}}, "session_id": "s"}
    with Recorder(path, "once") as recorder:
        recorder.record(
            {"command": "create_program", "args": program, "session_id": "s"}, ok({}) | {"result": {"program_id": "p1"}}
        )
        recorder.record(execute, ok({"label": "yes", "why": "because"}, **typed))
    check = DriftCheck("t.py::t", path)
    check.observe(
        {"command": "create_program", "args": program, "session_id": "s"}, {"ok": True, "result": {"program_id": "p1"}}
    )
    check.observe(execute, ok({"label": "yes", "why": "since"}, **typed))
    assert [(d.field, d.verdict) for d in check.drifts] == [("why", BENIGN)]
    benign = [d.as_dict() for d in check.drifts]
    assert "[benign: same type (string), different value]" in check.drifts[0].describe()
    assert not drift_fails_run("fail", benign) and drift_fails_run("strict", benign)
    assert not drift_fails_run("report", [{"verdict": REGRESSION}])
    assert drift_fails_run("fail", [*benign, {"verdict": REGRESSION}])
