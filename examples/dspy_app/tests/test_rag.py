"""RAG over the shipped corpus: the right passage is retrieved, and the answer comes from it."""

from __future__ import annotations

from helpers import MOCK_AND_REAL, MODEL


@MOCK_AND_REAL
def test_the_answer_comes_from_the_right_passage(bridge, lm_answers, kind):
    lm_answers({"reasoning": "The Eiffel Tower passage says it was completed in 1889.", "answer": "1889"})
    bridge.configure_lm(MODEL)
    rag = bridge.create_program(module="dspy_app.rag:RAG", kwargs={"k": 2})

    prediction = bridge.execute(rag, question="When was the Eiffel Tower completed?")

    assert prediction["context"][0].startswith("Eiffel Tower |")
    assert "1889" in prediction["answer"]
