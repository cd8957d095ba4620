"""Retrieval-augmented question answering over the shipped corpus (a keyword retriever: no network)."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import dspy

CORPUS = Path(__file__).with_name("corpus.json")
_STOPWORDS = frozenset({
    "a", "an", "and", "the", "of", "in", "on", "at", "to", "is", "was", "are", "how", "what", "which", "who",
    "when", "where", "why", "does", "did", "do", "it", "its", "by", "for", "with", "from", "as", "be", "into",
    "many", "much", "long", "tall", "high",
})  # fmt: skip


@cache
def load_corpus() -> tuple[dict[str, str], ...]:
    return tuple(json.loads(CORPUS.read_text(encoding="utf-8")))


def _words(text: str) -> set[str]:
    return {word for word in re.findall(r"[a-z0-9]+", text.lower()) if word not in _STOPWORDS}


def search(query: str, k: int = 3) -> list[str]:
    """Search the encyclopedia corpus; returns up to ``k`` passages as "Title | text", best first."""
    wanted = _words(query)
    scored = []
    for position, doc in enumerate(load_corpus()):
        title_hits = len(wanted & _words(doc["title"]))
        text_hits = len(wanted & _words(doc["text"]))
        score = 2 * title_hits + text_hits
        if score:
            scored.append((-score, position, f"{doc['title']} | {doc['text']}"))
    return [passage for _, _, passage in sorted(scored)[:k]]


class GenerateAnswer(dspy.Signature):
    """Answer the question from the context, in a few words."""

    context: list[str] = dspy.InputField(desc="passages that may contain the answer")
    question: str = dspy.InputField()
    answer: str = dspy.OutputField(desc="often between 1 and 5 words")


class RAG(dspy.Module):
    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.k = k
        self.generate_answer = dspy.ChainOfThought(GenerateAnswer)

    def forward(self, question: str) -> dspy.Prediction:
        context = search(question, k=self.k)
        prediction = self.generate_answer(context=context, question=question)
        return dspy.Prediction(context=context, reasoning=prediction.reasoning, answer=prediction.answer)
