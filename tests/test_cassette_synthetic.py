"""Synthetic answers: the same program and inputs always give the same, correctly typed outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dspy_bridge.cassettes import synthetic_answer
from dspy_bridge.protocol._programs import canonical_program
from dspy_bridge.protocol._signature import parse_signature

HYPOTHESIS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SIGNATURE = (
    "question -> answer, count: int, score: float, ok: bool, tags: list[str], ids: list[int], "
    "label: Literal['positive', 'negative', 'neutral'], extra: dict"
)
TYPES = {"answer": str, "count": int, "score": float, "ok": bool, "tags": list, "ids": list, "extra": dict}


def _answer(signature: str, inputs: dict[str, Any], program_type: str = "predict") -> dict[str, Any]:
    definition = canonical_program({"signature": signature, "program_type": program_type})
    spec = parse_signature(definition["signature"])
    return synthetic_answer(definition, [(f.name, f.type) for f in spec.outputs], inputs)


@HYPOTHESIS
@given(question=st.text(), number=st.integers())
def test_outputs_have_the_signature_types(question: str, number: int) -> None:
    result = _answer(SIGNATURE, {"question": question, "n": number})
    outputs = result["outputs"]
    assert list(outputs) == ["answer", "count", "score", "ok", "tags", "ids", "label", "extra"]
    for name, kind in TYPES.items():
        assert type(outputs[name]) is kind, (name, outputs[name])
    assert outputs["label"] in ("positive", "negative", "neutral")
    assert outputs["tags"] and all(isinstance(tag, str) for tag in outputs["tags"])
    assert outputs["ids"] and all(type(i) is int for i in outputs["ids"])
    assert result["source"] == "synthetic" and result["usage"] == {"synthetic": True}  # no tokens were spent


@HYPOTHESIS
@given(question=st.text())
def test_the_same_program_and_inputs_give_the_same_answer(question: str) -> None:
    assert _answer(SIGNATURE, {"question": question}) == _answer(SIGNATURE, {"question": question})


def test_different_inputs_or_programs_give_different_answers() -> None:
    answers = {json.dumps(_answer(SIGNATURE, {"question": f"q{i}"}), sort_keys=True) for i in range(20)}
    assert len(answers) == 20
    assert _answer("question -> answer", {"question": "q"}) != _answer("question -> reply", {"question": "q"})


def test_chain_of_thought_adds_reasoning_first() -> None:
    outputs = _answer("question -> answer: int", {"question": "q"}, "chain_of_thought")["outputs"]
    assert list(outputs) == ["reasoning", "answer"]
    assert isinstance(outputs["reasoning"], str) and type(outputs["answer"]) is int


def test_literal_choices_are_all_reachable_and_always_valid() -> None:
    seen = {_answer("q -> pick: Literal[1, 2, 3]", {"q": i})["outputs"]["pick"] for i in range(60)}
    assert seen == {1, 2, 3}


def test_answers_are_identical_in_another_process_with_another_hash_seed() -> None:
    code = (
        "import json, sys; from test_cassette_synthetic import _answer, SIGNATURE; "
        "print(json.dumps(_answer(SIGNATURE, {'question': 'stable?'}), sort_keys=True))"
    )
    tests_dir = os.path.dirname(__file__)
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": os.pathsep.join([tests_dir, *sys.path])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert json.loads(out.stdout) == _answer(SIGNATURE, {"question": "stable?"})
