"""A module whose tool calls Gemini directly with google-genai (no key, no base URL: the worker routes it)."""

from __future__ import annotations

import dspy


def ask_gemini(question: str) -> str:
    from google import genai

    client = genai.Client()  # key and base URL from the environment the worker sets up
    reply = client.models.generate_content(model="gemini-2.5-flash", contents=question)
    return reply.text or ""


class DirectGemini(dspy.Module):
    """Asks Gemini itself through google-genai, then lets a DSPy predictor summarise the reply."""

    def __init__(self) -> None:
        super().__init__()
        self.summarise = dspy.Predict("note -> summary")

    def forward(self, question: str) -> dspy.Prediction:
        note = ask_gemini(question)
        return dspy.Prediction(note=note, summary=self.summarise(note=note).summary)
