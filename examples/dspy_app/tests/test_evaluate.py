"""A threaded evaluation, recorded once and replayed offline: every example gets its own answer back.

``dspy.Evaluate(num_threads=4)`` inside a real worker sends the examples' LM calls in whatever order its threads
run. The cassette proxy matches each call by its content, never by arrival order, so the replay hands every
question the answer recorded for it: the same score, the same answer for each example, however the threads race.
"""

from __future__ import annotations

import json
from pathlib import Path

import dspy_app
import pytest
import yaml
from helpers import MODEL

ROWS = json.loads((Path(dspy_app.__file__).parent / "trainset.json").read_text(encoding="utf-8"))


def recorded_result(bridge_cassette) -> dict:
    """What the evaluation answered when it was recorded (the test's bridge cassette keeps it)."""
    data = yaml.safe_load(bridge_cassette.bridge_cassette.read_text(encoding="utf-8"))
    (run,) = [i for i in data["interactions"] if i["request"]["command"] == "execute_program"]
    return run["response"]["result"]["outputs"]


def recorded_reply(bridge_cassette, question: str) -> str:
    """The model's recorded reply to the one HTTP request that asked ``question``."""
    http = yaml.safe_load(bridge_cassette.http_cassette.read_text(encoding="utf-8"))
    (entry,) = [e for e in http["interactions"] if f"[[ ## question ## ]]\\n{question}" in e["request"]["body"]]
    return json.dumps(entry["response"])


@pytest.mark.integration
def test_a_threaded_evaluation_replays_each_example_its_own_answer(bridge, bridge_cassette):
    bridge.configure_lm(MODEL)
    evaluation = bridge.create_program(module="dspy_app.evaluate:EvaluateRAG", kwargs={"num_threads": 4})

    result = bridge.execute(evaluation, rows=ROWS)

    answers = result["answers"]
    assert [a["question"] for a in answers] == [row["question"] for row in ROWS]  # devset order, not thread order
    assert result["score"] == round(100 * sum(a["correct"] for a in answers) / len(ROWS), 2)
    if not bridge_cassette.records:  # replaying: the recorded score and answers, each matched by its question
        assert result == recorded_result(bridge_cassette)
        assert len({a["answer"] for a in answers}) == len(ROWS)  # eight different answers: a swap would show
        for a in answers:
            assert a["answer"] in recorded_reply(bridge_cassette, a["question"])
