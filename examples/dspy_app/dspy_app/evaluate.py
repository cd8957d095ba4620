"""An evaluation run as a program: ``dspy.Evaluate`` with four threads over the training set.

``EvaluateRAG()(rows=[{"question": ..., "answer": ...}, ...])`` scores ``RAG`` with ``answer_matches`` (the metric
the optimizer uses) and answers with the score (percent) and each example's answer, in the order of ``rows`` —
whichever thread answered it first. Its LM calls go through the caller's LM settings, four at a time.
"""

from __future__ import annotations

import dspy

from dspy_app.optimize import answer_matches
from dspy_app.rag import RAG


class EvaluateRAG(dspy.Module):
    def __init__(self, num_threads: int = 4, k: int = 3) -> None:
        super().__init__()
        self.num_threads = num_threads
        self.program = RAG(k=k)

    def forward(self, rows: list[dict[str, str]]) -> dspy.Prediction:
        devset = [dspy.Example(**row).with_inputs("question") for row in rows]
        evaluate = dspy.Evaluate(
            devset=devset, metric=answer_matches, num_threads=self.num_threads, display_progress=False
        )
        result = evaluate(self.program)
        answers = [
            {"question": example.question, "answer": str(prediction.get("answer", "")), "correct": bool(score)}
            for example, prediction, score in result.results
        ]
        return dspy.Prediction(score=float(result.score), answers=answers)
