"""Host-side recording: record modes, stable session labels, merge rules, replay of what was recorded."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest

from dspy_bridge import CassetteCorrupt, CassetteError, HandlerError, UsageError
from dspy_bridge.cassettes import RECORD_MODES, Cassette, Recorder, RecordMode, error_response, make_request, verify
from dspy_bridge.protocol._programs import canonical_program, program_id_for

MODEL = "gemini/gemini-2.5-flash"
PREDICT = {"signature": "question -> answer"}
COT = {"signature": "question -> answer", "program_type": "chain_of_thought"}
TYPED = {"signature": "text -> sentiment: Literal['positive', 'negative'], score: float, tags: list[str], ok: bool"}


class Session:
    """Feeds a recorder the exchanges a real worker would have had (shapes as the Bridge sends them)."""

    def __init__(self, recorder: Recorder, session_id: str | None = "new") -> None:
        self.recorder = recorder
        self.session_id = "sess-" + secrets.token_hex(6) if session_id == "new" else session_id

    def send(self, command: str, args: dict[str, Any], response: dict[str, Any]) -> None:
        self.recorder.record({"command": command, "args": args, "session_id": self.session_id}, response)

    def configure(self, model: str = MODEL, **extra: Any) -> None:
        self.send("configure_lm", {"model": model, **extra}, {"ok": True, "result": {"configured": {"model": model}}})

    def create(self, definition: dict[str, Any]) -> str:
        program_id = program_id_for(definition)
        self.send("create_program", definition, {"ok": True, "result": {"program_id": program_id}})
        return program_id

    def execute(self, program_id: str, inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
        result = {"outputs": outputs, "usage": {"prompt_tokens": 10}, "lm_calls": 1, "elapsed_ms": 812.5}
        self.send("execute_program", {"program_id": program_id, "inputs": inputs}, {"ok": True, "result": result})


def _replayed(path: Path, definition: dict[str, Any], inputs: dict[str, Any], **kw: Any) -> dict[str, Any]:
    replay = Cassette.load(path).replay(**kw)
    response = replay.play(make_request("execute_program", {"inputs": inputs}, program=canonical_program(definition)))
    return response.response


# --- record → replay ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("definition", "inputs", "outputs"),
    [
        (PREDICT, {"question": "What is 2+2?"}, {"answer": "4"}),
        (COT, {"question": "What is 2+2?"}, {"reasoning": "Two plus two.\nIt is four.", "answer": "4"}),
        (TYPED, {"text": "great"}, {"sentiment": "positive", "score": 0.93, "tags": ["a", "b"], "ok": True}),
    ],
    ids=["predict", "chain_of_thought", "typed"],
)
def test_what_is_recorded_replays_identically(
    tmp_path: Path, definition: dict[str, Any], inputs: dict[str, Any], outputs: dict[str, Any]
) -> None:
    path = tmp_path / "c.yaml"
    with Recorder(path, RecordMode.ONCE) as recorder:
        session = Session(recorder)
        session.configure()
        session.execute(session.create(definition), inputs, outputs)
    response = _replayed(path, definition, inputs)
    assert response == {"ok": True, "result": {"outputs": outputs, "usage": {"prompt_tokens": 10}, "lm_calls": 1}}
    assert list(response["result"]["outputs"]) == list(outputs)  # field order kept for readers


def test_errors_are_recorded_and_replayed_as_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    with Recorder(path, "once") as recorder:
        session = Session(recorder)
        session.configure()
        program_id = session.create(PREDICT)
        error = HandlerError("quota exceeded", type="lm_rate_limited", retryable=True, error_details={"status": 429})
        session.send("execute_program", {"program_id": program_id, "inputs": {"question": "q"}}, error_response(error))
    assert _replayed(path, PREDICT, {"question": "q"}) == {
        "ok": False,
        "error": {
            "type": "lm_rate_limited",
            "message": "quota exceeded",
            "retryable": True,
            "details": {"status": 429},
        },
    }


def test_session_ids_become_stable_labels_in_order_of_appearance(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    with Recorder(path, "once") as recorder:
        second, first, default = (
            Session(recorder, "zzz-random-2"),
            Session(recorder, "aaa-random-1"),
            Session(recorder, None),
        )
        second.configure()
        first.configure()
        default.configure()
        second.execute(second.create(PREDICT), {"question": "q"}, {"answer": "a"})
    text = path.read_text()
    assert "random" not in text
    assert [item.request["session"] for item in Cassette.load(path)] == ["s1", "s2", None, "s1", "s1"]


def test_execute_requests_carry_their_program_definition_and_model(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    with Recorder(path, "once") as recorder:
        session = Session(recorder)
        session.configure("gemini/gemini-2.5-pro")
        session.execute(session.create({"signature": " question  ->answer "}), {"question": "q"}, {"answer": "a"})
    execute = Cassette.load(path)[-1].request
    assert execute["program"] == {"signature": "question -> answer", "program_type": "predict"}
    assert execute["model"] == "gemini/gemini-2.5-pro"
    assert "elapsed_ms" not in path.read_text()


def test_an_execute_in_a_session_without_its_own_lm_uses_the_default_model(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    with Recorder(path, "once") as recorder:
        Session(recorder, None).configure("gemini/default-model")
        session = Session(recorder)
        session.execute(session.create(PREDICT), {"question": "q"}, {"answer": "a"})
    assert Cassette.load(path)[-1].request["model"] == "gemini/default-model"


def test_api_keys_never_reach_the_file(tmp_path: Path) -> None:
    key = "AIza" + secrets.token_urlsafe(27)[:35].ljust(35, "x")
    plain_key = "not-key-shaped-" + secrets.token_hex(8)
    path = tmp_path / "c.yaml"
    with Recorder(path, "once") as recorder:
        session = Session(recorder)
        session.configure(api_key=plain_key, api_base="http://127.0.0.1:1/v1beta")
        session.send(
            "configure_lm",
            {"model": MODEL, "api_key": key},
            {
                "ok": False,
                "error": {
                    "type": "lm_auth",
                    "message": f"API key {key} not valid",
                    "retryable": False,
                    "details": {"headers": {"x-goog-api-key": key}},
                },
            },
        )
    text = path.read_text()
    assert key not in text and plain_key not in text
    assert "api_key" not in text
    verify(path)


def test_the_meta_says_what_was_recorded_against(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    with Recorder(path, "once", meta={"recorded_against": "fake-gemini"}) as recorder:
        Session(recorder).configure("gemini/gemini-2.5-pro")
    meta = Cassette.load(path).meta
    assert meta["recorded_against"] == "fake-gemini"
    assert meta["model"] == "gemini/gemini-2.5-pro"
    assert meta["dspy_version"].startswith("3.4")
    assert meta["created"].endswith("Z")


def test_state_requests_resent_to_a_replacement_worker_are_recorded_once(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    with Recorder(path, "once") as recorder:
        session = Session(recorder)
        for _ in range(3):  # the pool replays configure/create on a new worker after a crash
            session.configure()
            program_id = session.create(PREDICT)
        session.execute(program_id, {"question": "q"}, {"answer": "a"})
        session.execute(program_id, {"question": "q"}, {"answer": "a"})
    assert [item.command for item in Cassette.load(path)] == [
        "configure_lm",
        "create_program",
        "execute_program",
        "execute_program",
    ]


def test_housekeeping_commands_are_not_recorded(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    with Recorder(path, "once") as recorder:
        session = Session(recorder)
        session.send("ping", {}, {"ok": True, "result": {"status": "ok", "pid": 123}})
        session.send("get_stats", {}, {"ok": True, "result": {}})
        session.configure()
    assert [item.command for item in Cassette.load(path)] == ["configure_lm"]


# --- record modes -------------------------------------------------------------------------------


def _recorded(path: Path, mode: str, *questions: str, run_id: str | None = None) -> Recorder:
    with Recorder(path, mode, run_id=run_id) as recorder:
        if recorder.recording:
            session = Session(recorder)
            program_id = session.create(PREDICT)
            for question in questions:
                session.execute(program_id, {"question": question}, {"answer": f"{question}-{mode}"})
    return recorder


def _answers(path: Path) -> list[str]:
    return [item.response["result"]["outputs"]["answer"] for item in Cassette.load(path) if item.replayable]


def test_record_modes_have_the_vcrpy_names_and_a_misspelling_lists_them() -> None:
    assert RECORD_MODES == ("none", "once", "new_episodes", "all", "rewrite")
    assert RecordMode.parse("new-episodes") is RecordMode.NEW_EPISODES
    with pytest.raises(UsageError, match="choose one of: none, once, new_episodes, all, rewrite"):
        RecordMode.parse("sometimes")


def test_should_record_per_mode(tmp_path: Path) -> None:
    missing, present = tmp_path / "missing.yaml", tmp_path / "present.yaml"
    present.write_text("")
    expected = {
        "none": (False, False),
        "once": (True, False),
        "new_episodes": (True, True),
        "all": (True, True),
        "rewrite": (True, True),
    }
    for mode, (for_missing, for_present) in expected.items():
        assert (Cassette.should_record(missing, mode), Cassette.should_record(present, mode)) == (
            for_missing,
            for_present,
        ), mode


def test_mode_none_never_records_or_writes(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    recorder = Recorder(path, "none")
    assert not recorder.recording
    with pytest.raises(UsageError, match="does not record"):
        Session(recorder).configure()
    assert recorder.save() is False
    assert not path.exists()


def test_once_records_a_new_cassette_even_an_empty_one_then_only_replays(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    _recorded(path, "once")  # a test that made no calls still leaves a cassette: next time it replays
    assert path.exists() and len(Cassette.load(path)) == 1  # the create_program
    path.unlink()
    _recorded(path, "once", "a", "b")
    assert _answers(path) == ["a-once", "b-once"]
    assert _recorded(path, "once", "c").recording is False
    assert _answers(path) == ["a-once", "b-once"]


def test_new_episodes_answers_known_requests_from_the_file_and_appends_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    _recorded(path, "once", "a", "b")
    recorder = Recorder(path, "new_episodes")
    session = Session(recorder)
    program_id = session.create(PREDICT)
    request = {
        "command": "execute_program",
        "args": {"program_id": program_id, "inputs": {"question": "a"}},
        "session_id": session.session_id,
    }
    assert recorder.lookup(request) == {
        "ok": True,
        "result": {"outputs": {"answer": "a-once"}, "usage": {"prompt_tokens": 10}, "lm_calls": 1},
    }
    assert recorder.lookup(request) is None  # used up: a second identical call goes to a real worker
    new = {**request, "args": {"program_id": program_id, "inputs": {"question": "c"}}}
    assert recorder.lookup(new) is None
    session.execute(program_id, {"question": "c"}, {"answer": "c-new"})
    recorder.save()
    assert _answers(path) == ["a-once", "b-once", "c-new"]
    assert [item.command for item in Cassette.load(path)].count("create_program") == 1


def test_all_rerecords_what_it_sees_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    _recorded(path, "once", "a", "b", "c")
    _recorded(path, "all", "b", run_id="run-2")
    assert _answers(path) == ["a-once", "c-once", "b-all"]


def test_rewrite_keeps_only_this_runs_recordings(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    _recorded(path, "once", "a", "b")
    created = Cassette.load(path).meta["created"]
    _recorded(path, "rewrite", "x", run_id="run-2")
    assert _answers(path) == ["x-rewrite"]
    # Another test of the same run rewriting the same cassette adds to it instead of wiping it.
    _recorded(path, "rewrite", "y", run_id="run-2")
    assert _answers(path) == ["x-rewrite", "y-rewrite"]
    _recorded(path, "rewrite", "z", run_id="run-3")
    assert _answers(path) == ["z-rewrite"]
    assert Cassette.load(path).meta["created"] >= created


def test_rewrite_replaces_a_corrupt_cassette_but_other_modes_refuse_to(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("version: 1\nmeta: [oops\n")
    with pytest.raises(CassetteCorrupt):
        _recorded(path, "new_episodes", "a")
    assert path.read_text() == "version: 1\nmeta: [oops\n"  # untouched
    _recorded(path, "rewrite", "a")
    assert _answers(path) == ["a-rewrite"]


def test_saving_twice_does_not_duplicate(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    recorder = Recorder(path, "once")
    session = Session(recorder)
    program_id = session.create(PREDICT)
    session.execute(program_id, {"question": "a"}, {"answer": "1"})
    assert recorder.save() is True
    assert recorder.save() is False
    session.execute(program_id, {"question": "b"}, {"answer": "2"})
    recorder.save()
    assert _answers(path) == ["1", "2"]


def test_the_context_manager_saves_even_when_the_test_fails(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    with pytest.raises(RuntimeError), Recorder(path, "once") as recorder:
        Session(recorder).configure()
        raise RuntimeError("test failed after one exchange")
    assert [item.command for item in Cassette.load(path)] == ["configure_lm"]


# --- unused and prune ---------------------------------------------------------------------------


def test_prune_drops_what_no_replay_played_and_keeps_setup(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    _recorded(path, "once", "a", "b", "c")
    cassette = Cassette.load(path)
    replay = cassette.replay()
    replay.play(make_request("execute_program", {"inputs": {"question": "b"}}, program=canonical_program(PREDICT)))
    assert [item.index for item in cassette.unused(replay)] == [1, 3]
    assert cassette.prune(replay) == 2
    assert _answers(path) == ["b-once"]
    assert [item.command for item in Cassette.load(path)] == ["create_program", "execute_program"]


def test_prune_refuses_when_the_file_changed_since_it_was_loaded(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    _recorded(path, "once", "a", "b")
    cassette = Cassette.load(path)
    _recorded(path, "new_episodes", "c")
    with pytest.raises(CassetteError, match="changed on disk"):
        cassette.prune([])
    assert _answers(path) == ["a-once", "b-once", "c-new_episodes"]


@pytest.mark.parametrize("mode", ["all", "rewrite"])
def test_a_recorder_keeps_what_it_saved_when_another_run_saved_in_between(tmp_path: Path, mode: str) -> None:
    """Regression: the second save of run A dropped A's first save after run B had written (``all``: 439 of 600
    interactions lost with 4 concurrent writers)."""
    path = tmp_path / "shared.yaml"
    first = Recorder(path, mode, run_id="run-a")
    other = Recorder(path, mode, run_id="run-b")
    session_a, session_b = Session(first), Session(other)
    program_a, program_b = session_a.create(PREDICT), session_b.create(PREDICT)
    session_a.execute(program_a, {"question": "a1"}, {"answer": "a1"})
    first.save()
    session_b.execute(program_b, {"question": "b1"}, {"answer": "b1"})
    other.save()
    session_a.execute(program_a, {"question": "a2"}, {"answer": "a2"})
    first.save()
    answers = _answers(path)
    assert {"a1", "a2"} <= set(answers), answers
    if mode == "all":
        assert "b1" in answers, answers
