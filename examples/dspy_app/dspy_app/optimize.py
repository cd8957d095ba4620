"""Optimize the RAG program with BootstrapFewShot and save its state to ``optimized/qa.json``.

    python -m dspy_app.optimize                 # against real Gemini (reads GEMINI_API_KEY)
    python -m dspy_app.optimize --lm fake       # offline, against dspy-bridge's bundled fake Gemini

The shipped ``optimized/qa.json`` was made with ``--lm fake`` (see README.md).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dspy

from dspy_app.rag import RAG

MODEL = "gemini/gemini-2.5-flash"
HERE = Path(__file__).parent
TRAINSET = HERE / "trainset.json"
OUTPUT = HERE / "optimized" / "qa.json"


def load_trainset() -> list[dspy.Example]:
    rows = json.loads(TRAINSET.read_text(encoding="utf-8"))
    return [dspy.Example(**row).with_inputs("question") for row in rows]


def answer_matches(example: dspy.Example, prediction: dspy.Prediction, trace: Any = None) -> bool:
    """The gold answer appears in the predicted one (case-insensitive), and the answer stays short."""
    predicted = str(prediction.answer).lower()
    return example.answer.lower() in predicted and len(predicted.split()) <= 8


def optimize(max_bootstrapped_demos: int = 3, max_labeled_demos: int = 3) -> RAG:
    optimizer = dspy.BootstrapFewShot(
        metric=answer_matches, max_bootstrapped_demos=max_bootstrapped_demos, max_labeled_demos=max_labeled_demos
    )
    return optimizer.compile(RAG(), trainset=load_trainset())


@contextmanager
def fake_gemini_lm() -> Iterator[dspy.LM]:
    """An LM on dspy-bridge's bundled fake Gemini (offline; answers are made up unless scripted).

    The fake does not know any facts, so it is scripted to answer each training question with its gold answer,
    the way a capable model would: BootstrapFewShot then keeps full traces (context, reasoning, answer) as demos.
    """
    from dspy_bridge.testing import FakeGemini, Reply

    with FakeGemini() as fake:
        for example in load_trainset():
            reasoning = f"The context says so: the answer to '{example.question}' is {example.answer}."
            fake.enqueue(Reply({"reasoning": reasoning, "answer": example.answer}))
        yield dspy.LM(MODEL, api_base=fake.base_url, api_key="fake", cache=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dspy_app.optimize", description=__doc__.splitlines()[0])
    parser.add_argument("--lm", choices=("gemini", "fake"), default="gemini", help="where the LM calls go")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    if args.lm == "fake":
        with fake_gemini_lm() as lm, dspy.context(lm=lm):
            program = optimize()
    else:
        if not os.environ.get("GEMINI_API_KEY"):
            parser.error("set GEMINI_API_KEY (or run with --lm fake)")
        with dspy.context(lm=dspy.LM(MODEL, cache=False)):
            program = optimize()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(args.output))
    demos = len(program.generate_answer.predict.demos)
    print(f"saved {args.output} ({demos} demos)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
