"""A module that answers several questions at once with ``dspy.Parallel`` (threads inside the worker)."""

from __future__ import annotations

import dspy


class FanOut(dspy.Module):
    def __init__(self, num_threads: int = 8) -> None:
        super().__init__()
        self.num_threads = num_threads
        self.qa = dspy.Predict("question -> answer")

    def forward(self, questions: list[str]) -> dspy.Prediction:
        parallel = dspy.Parallel(num_threads=self.num_threads)
        pairs = [(self.qa, {"question": question}) for question in questions]
        answers = [prediction.answer for prediction in parallel(pairs)]
        return dspy.Prediction(answers=answers)
