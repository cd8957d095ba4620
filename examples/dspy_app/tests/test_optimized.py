"""The program BootstrapFewShot optimized (``dspy_app/optimized/qa.json``) is the one under test."""

from __future__ import annotations

from pathlib import Path

import dspy_app
from helpers import MOCK_AND_REAL, MODEL

OPTIMIZED = Path(dspy_app.__file__).parent / "optimized" / "qa.json"


@MOCK_AND_REAL
def test_the_optimized_program_is_a_different_program_and_answers(bridge, lm_answers, kind):
    lm_answers({"reasoning": "The Tokyo passage says it is the capital of Japan.", "answer": "Tokyo"})
    bridge.configure_lm(MODEL)
    plain = bridge.create_program(module="dspy_app.rag:RAG")
    optimized = bridge.create_program(module="dspy_app.rag:RAG", state=OPTIMIZED)  # read here, on the host
    assert optimized != plain  # the saved state is part of the program's identity
    # A real worker loaded the state into DSPy; a mock worker knows the predictors from the recording.
    [predictor] = bridge.request("get_program_info", {"program_id": optimized})["predictors"]
    assert predictor["name"] == "generate_answer.predict" and predictor["demos"] == 3

    prediction = bridge.execute(optimized, question="What is the capital of Japan?")

    # Replay matches on the program (its state digest) and, on real workers, on the prompt DSPy builds, which
    # holds the three bootstrapped demos: an answer here means the optimized state reached DSPy.
    assert prediction["context"][0].startswith("Tokyo |")
    assert prediction["answer"] == "Tokyo"
