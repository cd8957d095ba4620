"""Rich types end to end: a real worker runs each type against the fake Gemini, the recording replays on
a mock worker with the same values and (rebuilt on the host) the same Python types; image bytes never
reach the cassette; stubs and cassette answers that real DSPy could never return are refused; synthetic
answers fit the recorded schemas (pydantic models included)."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge_test_models import Flight
from dspy_bridge._typed import rebuild
from dspy_bridge.cassettes import Cassette, Recorder, verify
from dspy_bridge.cassettes._config import cassette_context
from dspy_bridge.protocol._schema import mismatch
from dspy_bridge.testing import FakeGemini
from workerproc import WorkerProc

pytestmark = pytest.mark.slow

MODEL = "gemini/gemini-2.5-flash"
ALLOW = "from dspy_bridge.worker._real import DSPyHandlers; DSPyHandlers.allowed_modules = ('bridge_test_models',)"
IMAGE_BYTES = b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(48)
IMAGE_B64 = base64.b64encode(IMAGE_BYTES).decode()
BOOKING = {
    "title": "Booking",
    "type": "object",
    "properties": {
        "ref": {"type": "string", "description": "booking reference"},
        "seats": {"type": "array", "items": {"type": "integer"}},
        "meal": {"enum": ["veg", "fish"]},
    },
    "required": ["ref", "seats"],
}
FLIGHT = {"signature": "request -> flight: bridge_test_models:Flight"}
STRUCTURED = {
    "signature": {"inputs": [{"name": "q"}], "outputs": [{"name": "booking", "type": "object", "schema": BOOKING}]}
}
PLAN: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"signature": "q -> a: Optional[str]"}, {"q": "maybe?"}),
    ({"signature": "q -> a: str | None, n: Optional[int]"}, {"q": "union syntax"}),
    ({"signature": "q -> a: dict[str, list[str]]"}, {"q": "groups"}),
    ({"signature": "q -> a: list[dict[str, int]]"}, {"q": "counts"}),
    ({"signature": "q -> a: list[dict]"}, {"q": "records"}),
    (FLIGHT, {"request": "LHR to JFK"}),
    (STRUCTURED, {"q": "book it"}),
    (
        {"signature": "history: dspy.History, question -> answer"},
        {"question": "and then?", "history": {"messages": [{"question": "hi", "answer": "hello"}]}},
    ),
    (
        {"signature": "image: dspy.Image, question -> answer", "program_type": "chain_of_thought"},
        {"question": "what is it?", "image": {"data": IMAGE_B64, "mime": "image/png"}},
    ),
]


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[dict[str, Any]]]]:
    """Run the plan on a real worker against the fake Gemini, recording it; yields (cassette, results)."""
    key = "k-" + secrets.token_hex(8)
    path = tmp_path_factory.mktemp("rich") / "rich.yaml"
    session = "real-" + secrets.token_hex(4)
    results: list[dict[str, Any]] = []
    with FakeGemini(expected_key=key) as fake, WorkerProc("real", prelude=ALLOW) as real:
        recorder = Recorder(path, "once", meta={"recorded_against": "fake-gemini"})

        def call(command: str, args: dict[str, Any]) -> dict[str, Any]:
            response = real.request(command, args, session_id=session)
            recorder.record({"command": command, "args": args, "session_id": session}, response)
            assert response["ok"], response
            return dict(response["result"])

        lm = {"model": MODEL, "api_key": key, "api_base": fake.base_url, "cache": False, "num_retries": 0}
        call("configure_lm", lm)
        for definition, inputs in PLAN:
            created = call("create_program", definition)
            results.append(
                {"created": created, **call("execute_program", {"program_id": created["program_id"], "inputs": inputs})}
            )
        recorder.save()
    yield path, results


class Mock:
    """One session on a mock worker whose requests name the cassette."""

    def __init__(self, worker: WorkerProc, path: Path, **cassette: Any) -> None:
        self.worker, self.session_id = worker, "mock-" + secrets.token_hex(4)
        self.context = {"test_id": "tests/test_rich_types.py::x", "cassette": cassette_context(path, **cassette)}
        self.call("configure_lm", {"model": MODEL})

    def call(self, command: str, args: dict[str, Any]) -> Any:
        return self.worker.call(command, args, session_id=self.session_id, context=self.context)

    def error(self, command: str, args: dict[str, Any]) -> dict[str, Any]:
        return self.worker.error(command, args, session_id=self.session_id, context=self.context)


@pytest.fixture(scope="module")
def mock() -> Iterator[WorkerProc]:
    with WorkerProc("mock") as worker:
        yield worker


def test_every_type_runs_for_real_and_reports_types_and_schemas(recording: tuple[Path, list[dict[str, Any]]]) -> None:
    _, results = recording
    optional = results[0]
    assert optional["output_types"] == {"a": "Optional[str]"}
    assert results[1]["output_types"] == {"a": "Optional[str]", "n": "Optional[int]"}
    groups = results[2]["outputs"]["a"]
    assert isinstance(groups, dict) and all(
        isinstance(v, list) and all(type(s) is str for s in v) for v in groups.values()
    )
    counts = results[3]["outputs"]["a"]
    assert isinstance(counts, list) and all(type(n) is int for item in counts for n in item.values())
    assert all(isinstance(item, dict) for item in results[4]["outputs"]["a"])
    flight = results[5]
    assert flight["output_types"] == {"flight": "bridge_test_models:Flight"}
    assert isinstance(Flight.model_validate(flight["outputs"]["flight"]), Flight)  # JSON-mode data on the wire
    assert flight["created"]["schema"]["outputs"]["flight"] == Flight.model_json_schema()
    booking = results[6]
    assert booking["output_types"] == {"booking": "object"}
    assert set(booking["outputs"]["booking"]) >= {"ref", "seats"}
    assert booking["created"]["signature"]["outputs"][0]["description"] == ""  # no desc given: none invented
    for result in results:
        for name, value in result["outputs"].items():
            assert mismatch(value, result["created"]["schema"]["outputs"][name], name) is None
    assert results[8]["output_types"] == {"reasoning": "str", "answer": "str"}


def test_the_cassette_holds_schemas_and_image_digests_never_bytes(recording: tuple[Path, list[dict[str, Any]]]) -> None:
    path, _ = recording
    text = path.read_text()
    verify(path)
    assert IMAGE_B64 not in text and IMAGE_B64[:24] not in text
    import hashlib

    assert hashlib.sha256(IMAGE_BYTES).hexdigest() in text
    created = [item for item in Cassette.load(path) if item.command == "create_program"]
    assert all("schema" in item.response["result"] for item in created)


def test_the_mock_worker_replays_every_type_with_the_same_values(
    recording: tuple[Path, list[dict[str, Any]]], mock: WorkerProc
) -> None:
    path, results = recording
    client = Mock(mock, path)
    for (definition, inputs), original in zip(PLAN, results, strict=True):
        program_id = client.call("create_program", definition)["program_id"]
        assert program_id == original["created"]["program_id"]
        replayed = client.call("execute_program", {"program_id": program_id, "inputs": inputs})
        assert replayed["outputs"] == original["outputs"]
        assert replayed["output_types"] == original["output_types"]
        assert replayed["source"] == "cassette"
    # the host rebuilds the same model from the real answer and from the replayed one
    flight = results[5]
    assert rebuild(flight["outputs"], Flight, flight["output_types"]) == rebuild(replayed_flight(client), Flight)


def replayed_flight(client: Mock) -> dict[str, Any]:
    program_id = client.call("create_program", FLIGHT)["program_id"]
    client.context["cassette"]["allow_repeats"] = True
    outputs: dict[str, Any] = client.call("execute_program", {"program_id": program_id, "inputs": PLAN[5][1]})[
        "outputs"
    ]
    return outputs


def test_a_different_image_misses_and_the_miss_shows_digests(
    recording: tuple[Path, list[dict[str, Any]]], mock: WorkerProc
) -> None:
    path, _ = recording
    client = Mock(mock, path)
    definition, inputs = PLAN[8]
    program_id = client.call("create_program", definition)["program_id"]
    other = {**inputs, "image": {"data": base64.b64encode(b"other bytes").decode(), "mime": "image/png"}}
    error = client.error("execute_program", {"program_id": program_id, "inputs": other})
    assert error["type"] == "cassette_miss" and "image_sha256" in error["message"]
    assert other["image"]["data"] not in repr(error)
    # the same bytes in another base64 layout (a data URI) are the same image
    same = {**inputs, "image": {"url": f"data:image/png;base64,{IMAGE_B64}"}}
    assert client.call("execute_program", {"program_id": program_id, "inputs": same})["source"] == "cassette"


def test_stubs_are_checked_against_the_recorded_schema_of_a_model_typed_program(
    recording: tuple[Path, list[dict[str, Any]]], mock: WorkerProc
) -> None:
    path, _ = recording
    client = Mock(mock, path)
    program_id = client.call("create_program", FLIGHT)["program_id"]
    client.call(
        "stub_program",
        {"program_id": program_id, "outputs": {"flight": {"number": "BA1", "legs": [{"origin": "LHR"}]}}},
    )
    error = client.error("execute_program", {"program_id": program_id, "inputs": {"request": "x"}})
    assert error["type"] == "invalid_request"
    assert "flight.legs[0]: missing 'destination', 'minutes'" in error["message"]
    assert error["details"]["field"] == "flight"
    good = {"number": "BA1", "legs": [{"origin": "LHR", "destination": "JFK", "minutes": 420}], "price": None}
    client.call("stub_program", {"program_id": program_id, "outputs": {"flight": good}})
    answer = client.call("execute_program", {"program_id": program_id, "inputs": {"request": "x"}})
    assert answer["output_types"] == {"flight": "bridge_test_models:Flight"}
    assert rebuild(answer["outputs"], Flight, answer["output_types"]).legs[0].minutes == 420


def test_synthetic_answers_fit_the_recorded_schemas(
    recording: tuple[Path, list[dict[str, Any]]], mock: WorkerProc
) -> None:
    path, results = recording
    client = Mock(mock, path, synthetic=True)
    for (definition, _), original in zip(PLAN, results, strict=True):
        program_id = client.call("create_program", definition)["program_id"]
        inputs = {name: "not recorded" for name in original["created"]["inputs"]}
        answer = client.call("execute_program", {"program_id": program_id, "inputs": inputs})
        assert answer["source"] == "synthetic"
        schemas = original["created"]["schema"]["outputs"]
        assert list(answer["outputs"]) == list(original["outputs"])
        for name, value in answer["outputs"].items():
            assert mismatch(value, schemas[name], name) is None, (name, value)
        if definition is FLIGHT:
            assert isinstance(rebuild(answer["outputs"], Flight, answer["output_types"]), Flight)


def test_models_outside_the_allowed_prefixes_are_refused(mock: WorkerProc) -> None:
    with WorkerProc("real", prelude=ALLOW) as real:
        error = real.error("create_program", {"signature": "q -> a: json:JSONDecoder"})
        assert error["type"] == "invalid_request" and "allowed module prefixes" in error["message"]
        error = real.error("create_program", {"signature": "q -> a: bridge_test_models:NOT_A_MODEL"})
        assert error["type"] == "invalid_request" and "not a pydantic model" in error["message"]
        error = real.error("create_program", {"signature": "q -> a: bridge_test_models:Missing"})
        assert error["type"] == "invalid_request" and "cannot import" in error["message"]
