"""An optimizer run as a program: compile ``RAG`` inside a worker, so the run itself can be recorded and replayed.

``CompileRAG()(rows=[{"question": ..., "answer": ...}, ...])`` runs ``BootstrapFewShot`` (the task LM: whatever
LM the caller configured) and then ``COPRO`` to rewrite the instruction, whose prompt model is a second LM —
the same endpoint and key, another model (``prompt_model``, default ``gemini/gemini-2.5-pro``). It answers with
what the optimizers chose (demos, instruction) and the compiled program's answer to ``question``. Every call of
both LMs goes through the caller's LM settings, so under dspy-bridge both land in the test's HTTP cassette,
each keyed by its own model (the model is in the request path).
"""

from __future__ import annotations

from typing import Any

import dspy

from dspy_app.optimize import answer_matches
from dspy_app.rag import RAG

PROMPT_MODEL = "gemini/gemini-2.5-pro"


class CompileRAG(dspy.Module):
    def __init__(self, prompt_model: str = PROMPT_MODEL, max_demos: int = 2, breadth: int = 2) -> None:
        super().__init__()
        self.prompt_model = prompt_model
        self.max_demos = max_demos
        self.breadth = breadth

    def forward(self, rows: list[dict[str, str]], question: str) -> dspy.Prediction:
        trainset = [dspy.Example(**row).with_inputs("question") for row in rows]
        bootstrap = dspy.BootstrapFewShot(
            metric=answer_matches, max_bootstrapped_demos=self.max_demos, max_labeled_demos=self.max_demos
        )
        compiled = bootstrap.compile(RAG(), trainset=trainset)
        task_lm: Any = dspy.settings.lm
        copro = dspy.COPRO(
            prompt_model=task_lm.copy(model=self.prompt_model), metric=answer_matches, breadth=self.breadth, depth=1
        )
        compiled = copro.compile(compiled, trainset=trainset, eval_kwargs={"num_threads": 1, "display_progress": False})
        predictor = compiled.generate_answer.predict
        return dspy.Prediction(
            demos=len(predictor.demos),
            instruction=predictor.signature.instructions,
            answer=compiled(question=question).answer,
        )
