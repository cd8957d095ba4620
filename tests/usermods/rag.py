"""A small RAG module whose retriever is a local function, and an async variant."""

from __future__ import annotations

import dspy

PASSAGES = {
    "paris": "Paris is the capital of France.",
    "rome": "Rome is the capital of Italy.",
    "tokyo": "Tokyo is the capital of Japan.",
}


def retrieve(question: str, k: int = 2) -> list[str]:
    """Passages whose key appears in the question, then the rest, ``k`` of them (no network)."""
    hits = [text for key, text in PASSAGES.items() if key in question.lower()]
    rest = [text for text in PASSAGES.values() if text not in hits]
    return (hits + rest)[:k]


class RAG(dspy.Module):
    def __init__(self, k: int = 2) -> None:
        super().__init__()
        self.k = k
        self.generate = dspy.ChainOfThought("context: list[str], question -> answer")

    def forward(self, question: str) -> dspy.Prediction:
        return self.generate(context=retrieve(question, self.k), question=question)


class AsyncRAG(RAG):
    """Defines ``aforward``: the worker runs it with ``acall``."""

    async def aforward(self, question: str) -> dspy.Prediction:
        prediction = await self.generate.acall(context=retrieve(question, self.k), question=question)
        return dspy.Prediction(answer=prediction.answer, ran="aforward")


def make_rag(k: int = 1) -> RAG:
    """A factory instead of a class: also accepted."""
    return RAG(k=k)
