"""The type grammar, JSON Schemas without pydantic (derive, check, generate), stub checking on a mock
worker without any recording, and the host-side rebuild of typed outputs."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from typing import Any, Literal, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from bridge_test_models import Flight, Leg
from dspy_bridge import Bridge, UsageError
from dspy_bridge._typed import rebuild
from dspy_bridge.cassettes._synthetic import _Stream
from dspy_bridge.pool import PoolConfig, SyncPool
from dspy_bridge.protocol._schema import answer_mismatch, generate, mismatch, schema_for_type
from dspy_bridge.protocol._signature import SignatureError, check_type, format_type, parse_signature, parse_type
from workerproc import WorkerProc

SMALL = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- the grammar -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("str | None", "Optional[str]"),
        ("None|list[dict]", "Optional[list[dict]]"),
        ("typing.Optional[ int ]", "Optional[int]"),
        ("Union[str, None]", "Optional[str]"),
        ("List[Dict[str,int]]", "list[dict[str, int]]"),
        ("dict[str, list[str]]", "dict[str, list[str]]"),
        ('Literal["a",  "b"]', "Literal['a', 'b']"),
        ("myapp.models : Flight", "myapp.models:Flight"),
        ("Optional[myapp.models:Flight]", "Optional[myapp.models:Flight]"),
        ("dspy.History", "dspy.History"),
        ("Image", "dspy.Image"),
    ],
)
def test_the_grammar_reads_and_normalises(written: str, canonical: str) -> None:
    assert check_type(written) == canonical
    assert format_type(parse_type(canonical)) == canonical


@pytest.mark.parametrize(
    ("written", "why"),
    [
        ("complex", "not a type of the grammar"),
        ("dict[int, str]", "dict keys must be str"),
        ("str | int", "only T | None"),
        ("list[str", "expected ]"),
        ("Literal[x]", "Literal choice x"),
    ],
)
def test_the_grammar_explains_what_it_refuses(written: str, why: str) -> None:
    with pytest.raises(SignatureError, match="unsupported type") as caught:
        check_type(written)
    assert why in str(caught.value)


def test_signatures_refuse_input_only_outputs_and_schemaless_objects() -> None:
    with pytest.raises(SignatureError, match="input type"):
        parse_signature("q -> picture: dspy.Image")
    with pytest.raises(SignatureError, match="needs a JSON Schema"):
        parse_signature("q -> a: object")
    with pytest.raises(SignatureError, match="exactly when"):
        parse_signature({"inputs": ["q"], "outputs": [{"name": "a", "type": "str", "schema": {"type": "string"}}]})
    spec = parse_signature({"inputs": ["q"], "outputs": [{"name": "a", "schema": {"type": "object"}, "prefix": "A:"}]})
    assert spec.outputs[0].as_dict() == {
        "name": "a",
        "type": "object",
        "description": "",
        "prefix": "A:",
        "schema": {"type": "object"},
    }


# -- schemas: derived as pydantic writes them --------------------------------------------------------
_leaf = st.sampled_from(["str", "int", "float", "bool", "list", "dict", "Literal['a', 'b']", "Literal[1, 2]"])
TYPES = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        inner.map(lambda t: f"list[{t}]"), inner.map(lambda t: f"dict[str, {t}]"), inner.map(lambda t: f"Optional[{t}]")
    ),
    max_leaves=4,
)


def _python(type_text: str) -> Any:
    text = check_type(type_text)
    return eval(text, {"Optional": Optional, "Literal": Literal})  # the grammar's own text


@SMALL
@given(type_text=TYPES)
def test_derived_schemas_equal_pydantics_and_generated_values_fit_both(type_text: str) -> None:
    python = _python(type_text)
    schema = schema_for_type(type_text)
    adapter = TypeAdapter(python)
    assert schema == adapter.json_schema()
    value = generate(schema, _Stream(type_text), "field")
    assert mismatch(value, schema) is None
    assert adapter.validate_python(value, strict=True) is not None or value is None


@SMALL
@given(seed=st.text(max_size=8), model=st.sampled_from([Flight, Leg, Flight | None, list[Flight]]))
def test_generated_values_fit_model_schemas(seed: str, model: Any) -> None:
    schema = TypeAdapter(model).json_schema()
    value = generate(schema, _Stream(seed), "flight")
    assert mismatch(value, schema) is None
    TypeAdapter(model).validate_python(value)


@pytest.mark.parametrize(
    ("value", "type_text", "message"),
    [
        ("very high", "float", "confidence: expected number, got str 'very high'"),
        (True, "int", "confidence: expected integer, got bool True"),
        (["a", 3], "Optional[list[str]]", "confidence[1]: expected string, got int 3"),
        ("c", "Literal['a', 'b']", "confidence: expected one of 'a', 'b', got 'c'"),
        ({"k": "v"}, "dict[str, list[str]]", "confidence.k: expected list of string, got str 'v'"),
        (None, "str", "confidence: expected string, got None"),
    ],
)
def test_mismatches_name_the_place_and_the_expected_type(value: Any, type_text: str, message: str) -> None:
    assert mismatch(value, schema_for_type(type_text), "confidence") == message


def test_answers_need_every_output_and_nothing_else() -> None:
    schemas = {"a": {"type": "string"}, "n": {"type": "integer"}}
    assert answer_mismatch({"a": "x", "n": 1}, schemas, ["a", "n"]) is None
    assert answer_mismatch({"a": "x"}, schemas, ["a", "n"])["field"] == "n"  # type: ignore[index]
    assert answer_mismatch({"a": "x", "n": 1, "z": 0}, schemas, ["a", "n"])["field"] == "z"  # type: ignore[index]
    assert answer_mismatch({"n": 1.5}, schemas)["expected"] == "integer"  # type: ignore[index]


# -- a mock worker, no recording: schemas from the type text -----------------------------------------
@pytest.fixture(scope="module")
def mock() -> Iterator[WorkerProc]:
    with WorkerProc("mock") as worker:
        yield worker


def test_stubs_for_string_signatures_are_checked_without_a_recording(mock: WorkerProc) -> None:
    session = "stub-check"
    mock.call("configure_lm", {"model": "gemini/gemini-2.5-flash"}, session_id=session)
    created = mock.call("create_program", {"signature": "q -> answer, confidence: float"}, session_id=session)
    assert created["schema"]["outputs"] == {"answer": {"type": "string"}, "confidence": {"type": "number"}}
    program_id = created["program_id"]
    for outputs, expected in [
        ({"answer": "a", "confidence": "very high"}, "confidence: expected number, got str 'very high'"),
        ({"answer": "a"}, "missing ['confidence']"),
        ({"answer": "a", "confidence": 0.5, "extra": 1}, "unknown ['extra']"),
    ]:
        mock.call("stub_program", {"program_id": program_id, "outputs": outputs}, session_id=session)
        error = mock.error("execute_program", {"program_id": program_id, "inputs": {"q": "?"}}, session_id=session)
        assert error["type"] == "invalid_request", error
        assert expected in error["message"] and "not an answer real DSPy could return" in error["message"]
    mock.call(
        "stub_program", {"program_id": program_id, "outputs": {"answer": "a", "confidence": 1}}, session_id=session
    )
    answer = mock.call("execute_program", {"program_id": program_id, "inputs": {"q": "?"}}, session_id=session)
    assert answer["output_types"] == {"answer": "str", "confidence": "float"}


def test_chain_of_thought_stubs_may_and_must_carry_reasoning(mock: WorkerProc) -> None:
    session = "stub-cot"
    mock.call("configure_lm", {"model": "gemini/gemini-2.5-flash"}, session_id=session)
    args = {"signature": "q -> n: int", "program_type": "chain_of_thought"}
    program_id = mock.call("create_program", args, session_id=session)["program_id"]
    mock.call("stub_program", {"program_id": program_id, "outputs": {"reasoning": "r", "n": 2}}, session_id=session)
    assert mock.call("execute_program", {"program_id": program_id, "inputs": {"q": "?"}}, session_id=session)


# -- the host: rebuilding typed outputs ---------------------------------------------------------------
FLIGHT_DATA = {"number": "BA1", "legs": [{"origin": "LHR", "destination": "JFK", "minutes": 420}]}


def test_rebuild_finds_the_model_field_or_uses_the_whole_outputs() -> None:
    typed = rebuild({"flight": FLIGHT_DATA, "note": "x"}, Flight, {"flight": "bridge_test_models:Flight"})
    assert isinstance(typed, Flight) and typed.legs[0].minutes == 420
    assert rebuild({"reasoning": "r", "flight": FLIGHT_DATA}, Flight).number == "BA1"  # the one map
    assert rebuild(FLIGHT_DATA, Flight).number == "BA1"  # the model describes all outputs
    assert rebuild({"a": {"x": ["1"]}}, dict[str, list[str]]) == {"x": ["1"]}
    assert rebuild({"a": [FLIGHT_DATA]}, typing.List[Flight])[0].number == "BA1"  # noqa: UP006
    with pytest.raises(UsageError, match="do not fit"):
        rebuild({"flight": {"number": 1}}, Flight, {"flight": "bridge_test_models:Flight"})


def test_bridge_execute_with_model_returns_the_model() -> None:
    with SyncPool(PoolConfig(size=1, mode="mock", start_strategy="spawn")) as pool:
        bridge = Bridge(pool)
        bridge.configure_lm("gemini/gemini-2.5-flash")
        program = bridge.create_program("route -> flight: bridge_test_models:Flight")
        bridge.stub(program, {"flight": FLIGHT_DATA})
        flight = bridge.execute(program, model=Flight, route="LHR-JFK")
        assert isinstance(flight, Flight) and flight.number == "BA1"
        assert bridge.execute(program, route="LHR-JFK") == {"flight": FLIGHT_DATA}
        with_input = bridge.create_program("route, model -> flight: bridge_test_models:Flight")
        bridge.stub(with_input, {"flight": FLIGHT_DATA})
        assert bridge.execute(with_input, route="x", model="an input, not a type") == {"flight": FLIGHT_DATA}
