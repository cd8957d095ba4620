"""The demo's test suite: eight question-answering tests of one small DSPy program, as a user writes them.

Each test configures the LM, builds a chain-of-thought ``question -> answer`` program and asks one
question. The fake Gemini is told the expected answer (its reasoning text is derived from the prompt), so
every way of running the suite must produce exactly the same outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dspy_bridge._client import Bridge

__all__ = ["MODEL", "PROGRAM", "PROGRAM_TYPE", "SUITE", "DemoTest", "run_test"]

MODEL = "gemini/gemini-2.5-flash"
PROGRAM = "question -> answer"
PROGRAM_TYPE = "chain_of_thought"


@dataclass(frozen=True, slots=True)
class DemoTest:
    """One test: its name (also its cassettes' name), the question, and the answer it checks for."""

    name: str
    question: str
    expected: str


SUITE: tuple[DemoTest, ...] = (
    DemoTest("test_capital_of_france", "What is the capital of France?", "Paris"),
    DemoTest("test_largest_planet", "Which planet is the largest in the solar system?", "Jupiter"),
    DemoTest("test_water_formula", "What is the chemical formula of water?", "H2O"),
    DemoTest("test_author_of_hamlet", "Who wrote Hamlet?", "William Shakespeare"),
    DemoTest("test_speed_of_light", "How fast does light travel in a vacuum, in km/s?", "about 299,792 km/s"),
    DemoTest("test_longest_river", "Which river is the longest in Africa?", "The Nile"),
    DemoTest("test_boiling_point", "At what temperature does water boil at sea level, in Celsius?", "100 °C"),
    DemoTest("test_primes_below_ten", "Which primes are smaller than ten?", "2, 3, 5 and 7"),
)


def run_test(bridge: Bridge, test: DemoTest) -> dict[str, Any]:
    """The body of one test: the same calls whichever way the suite runs. Returns the program's outputs."""
    bridge.configure_lm(MODEL)
    program_id = bridge.create_program(PROGRAM, PROGRAM_TYPE)
    outputs: dict[str, Any] = bridge.execute(program_id, question=test.question)
    return outputs
