"""Replaying a recorded stream cut differently (``stream_chunks=N``), to shake out buffering bugs in consumers.

The bridge level (mock workers, host replays) is in test_streaming_cassettes.py; this is the HTTP level:
the proxy re-cuts Gemini's SSE events, and real DSPy's stream listeners must still put the answer together.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy

from dspy_bridge._pytest._plan import TestPlan as Plan
from dspy_bridge._pytest._settings import validate_mark
from dspy_bridge.proxy import ProxyProcess
from dspy_bridge.proxy._sse import rechunk_gemini_events
from dspy_bridge.testing import FakeGemini


def event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\r\n\r\n"


def test_gemini_events_are_recut_keeping_text_and_final_fields_on_the_last_piece() -> None:
    first = {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hello, "}]}, "index": 0}]}
    last = {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "world"}]}, "finishReason": "STOP"}],
        "usageMetadata": {"totalTokenCount": 9},
        "modelVersion": "gemini-2.5-flash",
    }
    thought = {"candidates": [{"content": {"parts": [{"text": "hmm", "thought": True}]}}]}
    events = [event(first), event(thought), event(last), b"data: not json\r\n\r\n"]
    cut = rechunk_gemini_events(events, 2)
    assert all(piece.endswith(b"\r\n\r\n") for piece in cut)
    assert cut[-1] == b"data: not json\r\n\r\n" and event(thought) in cut  # left whole
    decoded = [json.loads(piece[len(b"data: ") :]) for piece in cut if piece.startswith(b"data: {")]
    parts = [d["candidates"][0]["content"]["parts"][0] for d in decoded]
    texts = [part["text"] for part in parts if not part.get("thought")]
    assert "".join(texts) == "Hello, world" and texts[:4] == ["He", "ll", "o,", " "]
    assert all(len(text) <= 2 for text in texts)
    finals = [d for d in decoded if "usageMetadata" in d or "finishReason" in d["candidates"][0]]
    assert finals == [decoded[-1]] and decoded[-1]["modelVersion"] == "gemini-2.5-flash"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ProxyProcess, Path, list[str], str]]:
    cassette = tmp_path_factory.mktemp("rechunk") / "stream.yaml"
    with FakeGemini(stream_chunk_chars=40) as fake, ProxyProcess(upstream=fake.base_url, api_key="k") as proxy:
        proxy.use_cassette(cassette, record_mode="once")
        chunks, answer = stream(proxy)
        proxy.eject()
        yield proxy, cassette, chunks, answer


def stream(proxy: ProxyProcess) -> tuple[list[str], str]:
    program = dspy.streamify(
        dspy.Predict("question -> answer"),
        stream_listeners=[dspy.streaming.StreamListener(signature_field_name="answer")],
        async_streaming=False,
    )
    lm = dspy.LM("gemini/gemini-2.5-flash", cache=False, num_retries=0, **proxy.lm_kwargs())
    chunks, final = [], None
    with dspy.context(lm=lm):
        for item in program(question="Name three long rivers of Europe, with a sentence on each."):
            if isinstance(item, dspy.streaming.StreamResponse):
                chunks.append(item.chunk)
            elif isinstance(item, dspy.Prediction):
                final = item
    assert final is not None
    return chunks, str(final.answer)


@pytest.mark.parametrize("size", [1, 7])
def test_dspy_streams_the_same_answer_when_the_replay_is_cut_finer(
    recorded: tuple[ProxyProcess, Path, list[str], str], size: int
) -> None:
    proxy, cassette, recorded_chunks, answer = recorded
    proxy.use_cassette(cassette, record_mode="none", stream_chunks=size)
    chunks, replayed_answer = stream(proxy)
    assert proxy.eject().replayed == 1
    assert replayed_answer == answer
    assert len(chunks) > len(recorded_chunks)  # cut finer than recorded, and DSPy still saw it as chunks
    streamed = "".join(chunks).strip()
    assert streamed.startswith("".join(recorded_chunks).strip())
    # What re-cutting is for: cut finely, DSPy 3.4's StreamListener lets its own end marker through as text
    # (a buffering bug in a stream consumer, found this way); the final Prediction stays right.
    assert streamed[len("".join(recorded_chunks).strip()) :].strip() in ("", "[[ ## completed ## ]]")


def test_the_mark_keyword_is_checked_and_reaches_both_levels() -> None:
    with pytest.raises(pytest.UsageError, match="stream_chunks must be 'recorded' or a whole number"):
        validate_mark(pytest.mark.mock(stream_chunks=0).mark, "t.py::t")
    with pytest.raises(pytest.UsageError, match="stream_chunks"):
        validate_mark(pytest.mark.integration(stream_chunks="fine").mark, "t.py::t")
    assert validate_mark(pytest.mark.mock(stream_chunks=3).mark, "t.py::t") == {"stream_chunks": 3}
    plan = Plan(
        nodeid="t.py::t", marked="mock", kind="mock", record="none", bridge_cassette=Path("/c/t.bridge.yaml"),
        http_cassette=Path("/c/http/t.yaml"), synthetic=False, allow_repeats=False, match_on=None, stream_chunks=3,
    )  # fmt: skip
    assert plan.mock_context()["cassette"]["stream_chunks"] == 3
