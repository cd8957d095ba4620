"""Replay is matched by content, never by arrival order: threaded DSPy programs replay what they recorded.

Each question gets its own answer from the fake (seeded by the prompt), so a replay that handed recordings
out in arrival order would give a thread another question's answer, and DSPy would re-prompt or fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy

from dspy_bridge import Bridge
from dspy_bridge.pool import PoolConfig, SyncPool
from dspy_bridge.proxy import ProxyProcess
from dspy_bridge.testing import FakeGemini

pytestmark = pytest.mark.slow
QUESTIONS = [f"What is {n} plus {n + 7}?" for n in range(16)]


@pytest.fixture
def upstream() -> Iterator[FakeGemini]:
    with FakeGemini() as fake:
        yield fake


def evaluate(proxy: ProxyProcess) -> tuple[dict[str, str], float]:
    """``dspy.Evaluate`` with 8 threads; returns each question's answer and the score."""
    answers: dict[str, str] = {}

    def metric(example: Any, prediction: Any, trace: Any = None) -> float:
        answers[example.question] = prediction.answer
        return float(bool(prediction.answer))

    devset = [dspy.Example(question=question).with_inputs("question") for question in QUESTIONS]
    lm = dspy.LM("gemini/gemini-2.5-flash", cache=False, num_retries=0, **proxy.lm_kwargs())
    with dspy.context(lm=lm):
        result = dspy.Evaluate(devset=devset, metric=metric, num_threads=8, display_progress=False)(
            dspy.Predict("question -> answer")
        )
    return answers, float(result.score)


def test_evaluate_with_8_threads_replays_each_example_its_own_answer(upstream: FakeGemini, tmp_path: Path) -> None:
    cassette = tmp_path / "evaluate.yaml"
    with ProxyProcess(upstream=upstream.base_url, api_key="fake-key") as proxy:
        proxy.use_cassette(cassette, record_mode="once")
        recorded = evaluate(proxy)
        assert proxy.eject().forwarded == len(QUESTIONS)
        upstream.close()
        for _ in range(2):  # two replays: the threads arrive in another order each time
            proxy.use_cassette(cassette, record_mode="none")
            assert evaluate(proxy) == recorded
            report = proxy.eject()
            assert (report.replayed, report.forwarded, report.misses) == (len(QUESTIONS), 0, 0)
    assert len(set(recorded[0].values())) == len(QUESTIONS)  # every question had its own answer
    assert upstream.request_count == len(QUESTIONS)  # no re-prompt, no retry, while recording either


def test_dspy_parallel_in_a_worker_replays_each_thread_its_own_answer(upstream: FakeGemini, tmp_path: Path) -> None:
    cassette = tmp_path / "parallel.yaml"
    config = PoolConfig(size=1, mode="real", allowed_modules=("usermods",))
    with ProxyProcess(upstream=upstream.base_url, api_key="fake-key") as proxy, SyncPool(config) as pool:
        bridge = Bridge(pool)
        bridge.configure_lm("gemini/gemini-2.5-flash", cache=False, num_retries=0, **proxy.lm_kwargs())
        program = bridge.create_program(module="usermods.fanout:FanOut")
        proxy.use_cassette(cassette, record_mode="once")
        recorded = bridge.execute(program, questions=QUESTIONS)["answers"]
        assert proxy.eject().forwarded == len(QUESTIONS)
        upstream.close()
        proxy.use_cassette(cassette, record_mode="none")
        replayed = bridge.execute(program, questions=QUESTIONS)["answers"]
        report = proxy.eject()
    assert replayed == recorded and len(set(recorded)) == len(QUESTIONS)
    assert (report.replayed, report.forwarded, report.misses) == (len(QUESTIONS), 0, 0)
