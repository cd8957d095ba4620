"""Matching and replay: what counts as the same request, recorded order, repeats, and misses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dspy_bridge import CassetteMiss, UsageError
from dspy_bridge.cassettes import Cassette, Matcher, make_request
from dspy_bridge.cassettes._replay import default_record_hint, fill_hint, missing_file_miss
from dspy_bridge.protocol._programs import canonical_program

PROGRAM = canonical_program({"signature": "question -> answer"})
OTHER_PROGRAM = canonical_program({"signature": "question -> answer: int"})


def _request(question: str, program: dict[str, Any] = PROGRAM, **args: Any) -> dict[str, Any]:
    return make_request(
        "execute_program",
        {"program_id": "prog_x", "inputs": {"question": question}, **args},
        program=program,
        model="gemini/gemini-2.5-flash",
    )


def _answer(text: str) -> dict[str, Any]:
    return {"ok": True, "result": {"outputs": {"answer": text}, "usage": {}}}


def _cassette(tmp_path: Path, *pairs: tuple[dict[str, Any], dict[str, Any]]) -> Cassette:
    setup = {
        "request": make_request("configure_lm", {"model": "gemini/gemini-2.5-flash"}, session="s1"),
        "response": {"ok": True, "result": {"configured": {"model": "gemini/gemini-2.5-flash"}}},
    }
    cassette = Cassette(tmp_path / "c.yaml", [setup, *({"request": q, "response": a} for q, a in pairs)])
    cassette.save()
    return Cassette.load(tmp_path / "c.yaml")


def _outputs(cassette_replay: Any, request: dict[str, Any]) -> Any:
    return cassette_replay.play(request).response["result"]["outputs"]["answer"]


# --- what is "the same request" -----------------------------------------------------------------


def test_key_order_signature_whitespace_and_volatile_args_do_not_matter(tmp_path: Path) -> None:
    cassette = _cassette(tmp_path, (_request("2+2?"), _answer("4")))
    spaced = canonical_program({"program_type": "predict", "signature": "  question\t->   answer "})
    same = make_request(
        "execute_program",
        {"deadline": 1e9, "inputs": {"question": "2+2?"}, "timestamp": "now", "program_id": "prog_other"},
        program=spaced,
    )
    assert _outputs(cassette.replay(), same) == "4"


def test_inputs_are_compared_exactly(tmp_path: Path) -> None:
    cassette = _cassette(tmp_path, (_request("2+2?"), _answer("4")))
    with pytest.raises(CassetteMiss):
        cassette.replay().play(_request("2+2? "))


def test_identical_requests_replay_in_recorded_order_then_miss(tmp_path: Path) -> None:
    cassette = _cassette(
        tmp_path, (_request("roll"), _answer("1")), (_request("x"), _answer("x")), (_request("roll"), _answer("2"))
    )
    replay = cassette.replay()
    assert [_outputs(replay, _request("roll")) for _ in range(2)] == ["1", "2"]
    with pytest.raises(CassetteMiss) as info:
        replay.play(_request("roll"))
    miss = info.value
    assert miss.details["reason"] == "used_up"
    assert (miss.details["recorded"], miss.details["played"]) == (2, 2)
    assert miss.details["interactions"] == [1, 3]
    assert "already played" in str(miss) and "#1, #3" in str(miss) and "allow_repeats" in str(miss)


def test_allow_repeats_keeps_answering_with_the_last_recording(tmp_path: Path) -> None:
    cassette = _cassette(tmp_path, (_request("roll"), _answer("1")), (_request("roll"), _answer("2")))
    replay = cassette.replay(allow_repeats=True)
    assert [_outputs(replay, _request("roll")) for _ in range(4)] == ["1", "2", "2", "2"]
    assert replay.played == {1: 1, 2: 3}


def test_each_replay_has_its_own_state(tmp_path: Path) -> None:
    cassette = _cassette(tmp_path, (_request("roll"), _answer("1")))
    first, second = cassette.replay(), cassette.replay()
    assert _outputs(first, _request("roll")) == _outputs(second, _request("roll")) == "1"


def test_match_on_inputs_only_ignores_the_program(tmp_path: Path) -> None:
    cassette = _cassette(tmp_path, (_request("2+2?"), _answer("4")))
    with pytest.raises(CassetteMiss):
        cassette.replay().play(_request("2+2?", program=OTHER_PROGRAM))
    assert _outputs(cassette.replay(match_on=["inputs"]), _request("2+2?", program=OTHER_PROGRAM)) == "4"


def test_ignore_drops_one_input_and_match_on_can_name_single_fields(tmp_path: Path) -> None:
    recorded = make_request("execute_program", {"inputs": {"question": "q", "today": "2026-01-01"}}, program=PROGRAM)
    cassette = _cassette(tmp_path, (recorded, _answer("a")))
    later = make_request("execute_program", {"inputs": {"question": "q", "today": "2026-06-30"}}, program=PROGRAM)
    with pytest.raises(CassetteMiss):
        cassette.replay().play(later)
    assert _outputs(cassette.replay(ignore=["inputs.today"]), later) == "a"
    assert _outputs(cassette.replay(match_on=["command", "inputs.question"]), later) == "a"


def test_model_is_recorded_but_only_compared_when_asked(tmp_path: Path) -> None:
    cassette = _cassette(tmp_path, (_request("q"), _answer("a")))
    other_model = make_request("execute_program", {"inputs": {"question": "q"}}, program=PROGRAM, model="openai/x")
    assert _outputs(cassette.replay(), other_model) == "a"
    with pytest.raises(CassetteMiss) as info:
        cassette.replay(match_on=["command", "program", "inputs", "model"]).play(other_model)
    assert 'DIFF  model: recorded "gemini/gemini-2.5-flash" | requested "openai/x"' in str(info.value)


def test_unknown_match_fields_are_a_usage_error_listing_the_valid_ones() -> None:
    with pytest.raises(UsageError, match="must start with one of command, program"):
        Matcher(["questions"])


def test_only_execute_program_is_replayed(tmp_path: Path) -> None:
    cassette = _cassette(tmp_path, (_request("q"), _answer("a")))
    assert [item.replayable for item in cassette] == [False, True]
    configure = make_request("configure_lm", {"model": "gemini/gemini-2.5-flash"})
    with pytest.raises(CassetteMiss):
        cassette.replay().play(configure)


# --- misses explain themselves ------------------------------------------------------------------


def test_a_miss_shows_the_closest_recording_field_by_field(tmp_path: Path) -> None:
    cassette = _cassette(
        tmp_path,
        (_request("What is the capital of France?", program=OTHER_PROGRAM), _answer("x")),
        (_request("What is 2+3?"), _answer("5")),
        (_request("Who wrote Hamlet?"), _answer("Shakespeare")),
    )
    with pytest.raises(CassetteMiss) as info:
        cassette.replay().play(
            _request("What is 2+2?"), record_hint="pytest tests/test_x.py::test_y --bridge-record=once"
        )
    miss = info.value
    text = str(miss)
    assert str(cassette.path) in text
    assert 'request: execute_program program "question -> answer" (predict) inputs {"question":"What is 2+2?"}' in text
    assert "closest recording: interaction #2" in text  # same program: closer than #1
    assert "  same  command" in text and "  same  program" in text
    assert 'DIFF  inputs.question: recorded "What is 2+3?" | requested "What is 2+2?"' in text
    assert "matched on: command, program, inputs" in text
    assert "api_key" in text  # says which scrubbed fields were never compared
    assert text.endswith("to record it: pytest tests/test_x.py::test_y --bridge-record=once")
    details = miss.details
    assert details["reason"] == "no_match"
    assert details["closest"]["index"] == 2
    assert {d["field"]: d["same"] for d in details["closest"]["diff"]} == {
        "command": True,
        "program": True,
        "inputs.question": False,
    }


def test_a_miss_says_so_when_nothing_of_that_command_was_recorded(tmp_path: Path) -> None:
    cassette = _cassette(tmp_path)
    with pytest.raises(CassetteMiss) as info:
        cassette.replay().play(_request("q"))
    assert "has no execute_program recordings at all" in str(info.value)
    assert info.value.details["closest"] is None


def test_a_miss_in_a_different_program_diffs_the_signature(tmp_path: Path) -> None:
    cassette = _cassette(tmp_path, (_request("q", program=OTHER_PROGRAM), _answer("1")))
    with pytest.raises(CassetteMiss) as info:
        cassette.replay().play(_request("q"))
    assert 'DIFF  program.signature: recorded "question -> answer: int" | requested "question -> answer"' in str(
        info.value
    )
    assert "same  program.program_type" in str(info.value)


def test_the_record_hint_comes_from_the_test_id_and_the_miss_picks_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    hint = default_record_hint(path, {"test_id": "tests/test_a.py::test_b[x y]"})
    assert fill_hint(hint, "once") == "pytest 'tests/test_a.py::test_b[x y]' --bridge-record=once"
    assert default_record_hint(path, {}) == "re-run the test with --bridge-record={mode}"
    # A missing file gets `once` (the only mode that creates it and that `once` itself will honour).
    assert missing_file_miss(path, _request("q"), hint).details["record_hint"].endswith("--bridge-record=once")


def test_a_missing_cassette_file_is_its_own_miss(tmp_path: Path) -> None:
    miss = missing_file_miss(tmp_path / "absent.yaml", _request("q"), "pytest t.py::x --bridge-record=once")
    assert "absent.yaml does not exist" in str(miss) and "--bridge-record=once" in str(miss)
    assert miss.details["reason"] == "no_file"


def test_misses_never_contain_a_key_from_the_request(tmp_path: Path) -> None:
    key = "AIza" + "k" * 35
    cassette = _cassette(tmp_path, (_request("q"), _answer("a")))
    with pytest.raises(CassetteMiss) as info:
        cassette.replay().play(_request(f"my key is {key}"))
    assert key not in str(info.value) and key not in repr(info.value.details)


# --- reports ------------------------------------------------------------------------------------


def test_unused_lists_replayable_interactions_nobody_played(tmp_path: Path) -> None:
    cassette = _cassette(
        tmp_path, (_request("a"), _answer("1")), (_request("b"), _answer("2")), (_request("c"), _answer("3"))
    )
    first, second = cassette.replay(), cassette.replay()
    first.play(_request("a"))
    second.play(_request("c"))
    assert [item.index for item in cassette.unused(first, second)] == [2]
    assert [item.index for item in cassette.unused([1, 2])] == [3]
    assert first.report() == {"cassette": str(cassette.path), "interactions": 4, "played": [1], "unused": [2, 3]}


def test_a_retry_of_a_recorded_error_gets_the_same_error_without_using_up_a_recording(tmp_path: Path) -> None:
    busy = {"ok": False, "error": {"type": "lm_rate_limited", "message": "429", "retryable": True, "details": None}}
    cassette = _cassette(tmp_path, (_request("q"), busy), (_request("q"), _answer("later")))
    replay = cassette.replay()
    assert replay.play(_request("q")).response == busy
    assert replay.play(_request("q"), retry=True).response == busy  # the pool retrying: same answer
    assert replay.play(_request("q"), retry=True).response == busy
    assert _outputs(replay, _request("q")) == "later"  # the test's own next call
    assert replay.played == {1: 3, 2: 1}
    successful = cassette.replay()
    successful.play(_request("q"))
    assert _outputs(successful, _request("q")) == "later"
    with pytest.raises(CassetteMiss):  # a retry after a success is just another call: nothing left
        successful.play(_request("q"), retry=True)
