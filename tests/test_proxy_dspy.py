"""Real DSPy 3.4, in this process, talking to Gemini through the cassette proxy (fake Gemini upstream)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # DSPy fetches model prices otherwise

import dspy

from dspy_bridge.proxy import Fault, ProxyProcess, verify_http_cassette
from dspy_bridge.testing import FakeGemini

pytestmark = pytest.mark.slow

KEY = "AIza" + "d" * 35  # built at run time: never a real-looking key in the tree


def gemini(proxy: ProxyProcess, **kw: Any) -> Any:
    return dspy.LM("gemini/gemini-2.5-flash", cache=False, **{"num_retries": 0, **kw}, **proxy.lm_kwargs())


def run_program(proxy: ProxyProcess) -> tuple[str, str, list[str], str]:
    """One plain call and one streamed call (``streamGenerateContent?alt=sse``)."""
    streaming = dspy.streamify(
        dspy.Predict("question -> answer"),
        stream_listeners=[dspy.streaming.StreamListener(signature_field_name="answer")],
        async_streaming=False,
    )
    with dspy.context(lm=gemini(proxy)):
        thought = dspy.ChainOfThought("question -> answer")(question="Why is the sky blue?")
        chunks, final = [], None
        for item in streaming(question="Name three rivers."):
            if isinstance(item, dspy.streaming.StreamResponse):
                chunks.append(item.chunk)
            elif isinstance(item, dspy.Prediction):
                final = item
    assert final is not None
    return thought.reasoning, thought.answer, chunks, final.answer


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeGemini]:
    with FakeGemini(expected_key=KEY, stream_chunk_chars=8) as fake:
        yield fake


@pytest.fixture(scope="module")
def proxy(upstream: FakeGemini) -> Iterator[ProxyProcess]:
    with ProxyProcess(upstream=upstream.base_url, api_key=KEY) as running:
        yield running


def test_dspy_records_through_the_proxy_then_replays_offline_with_streaming(tmp_path: Path) -> None:
    cassette = tmp_path / "cassettes" / "http" / "test_dspy.yaml"
    upstream = FakeGemini(expected_key=KEY, stream_chunk_chars=8)
    with upstream, ProxyProcess(upstream=upstream.base_url, api_key=KEY) as proxy:
        proxy.use_cassette(cassette, record_mode="once")
        recorded = run_program(proxy)
        assert proxy.eject().forwarded == 2
        upstream.close()  # from here on, any upstream call would fail

        proxy.use_cassette(cassette, record_mode="none")
        replayed = run_program(proxy)
        report = proxy.eject()
    assert replayed == recorded
    assert len(recorded[2]) > 1  # the answer arrived as several stream chunks, both times
    assert (report.replayed, report.forwarded, report.misses) == (2, 0, 0)
    assert upstream.request_count == 2 and all(seen.api_key == KEY for seen in upstream.requests)
    assert [seen.sse for seen in upstream.requests] == [False, True]
    verify_http_cassette(cassette, secrets=[KEY])


def test_a_replay_miss_reaches_dspy_as_a_clear_non_retried_error(
    proxy: ProxyProcess, upstream: FakeGemini, tmp_path: Path
) -> None:
    seen = upstream.request_count
    proxy.use_cassette(tmp_path / "missing.yaml", record_mode="none")
    with dspy.context(lm=gemini(proxy, num_retries=2)), pytest.raises(dspy.LMInvalidRequestError) as caught:
        dspy.Predict("question -> answer")(question="q")
    report = proxy.eject()
    assert "CASSETTE_MISS" in str(caught.value) and "record_mode 'none'" in str(caught.value)
    assert report.misses == 1  # DSPy did not retry it
    assert upstream.request_count == seen


def test_injected_faults_reach_dspy_as_its_own_error_types(
    proxy: ProxyProcess, upstream: FakeGemini, tmp_path: Path
) -> None:
    seen, before = upstream.request_count, proxy.stats()
    proxy.use_cassette(tmp_path / "c.yaml", record_mode="all")
    proxy.inject_faults(Fault(status=429, retry_after=0))
    with dspy.context(lm=gemini(proxy)), pytest.raises(dspy.LMRateLimitError):
        dspy.Predict("question -> answer")(question="q")
    proxy.inject_faults(Fault(status=503))  # no Retry-After on a 503 (Gemini sends none): DSPy waits 1 s
    with dspy.context(lm=gemini(proxy, num_retries=1)):
        assert dspy.Predict("question -> answer")(question="q").answer  # the second try goes through
    after = proxy.stats()
    assert proxy.eject().forwarded == 1
    assert (after.faults - before.faults, after.forwarded - before.forwarded) == (2, 1)
    assert upstream.request_count == seen + 1
