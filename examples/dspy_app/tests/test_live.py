"""A stream consumer under the finest chunking: ``LiveAnswer`` fed one character at a time.

``stream_chunks=1`` replays the recorded stream cut into one-character chunks, so a consumer that counted a word
per chunk, or dropped a chunk's edge, would show it here — the recording itself came in far larger pieces. Run as
the drift check (``--bridge-mode=integration``), real DSPy gets the recorded SSE stream cut the same way, and
DSPy 3.4's stream listener lets its ``[[ ## completed ## ]]`` marker through as answer text: the view holds it back.
"""

from __future__ import annotations

import pytest
from dspy_app.live import LiveAnswer
from helpers import MODEL

from dspy_bridge.pool import StreamChunk, StreamEnd

QUESTION = "Who painted the Mona Lisa?"


@pytest.mark.mock(stream_chunks=1)
def test_the_live_answer_is_the_answer_when_it_streams_one_character_at_a_time(bridge, bridge_cassette, lm_answers):
    reply = {"reasoning": "The Mona Lisa passage names its painter.", "answer": "Leonardo da Vinci painted it"}
    lm_answers(reply, reply)  # streamed, then not
    bridge.configure_lm(MODEL)
    rag = bridge.create_program(module="dspy_app.rag:RAG", kwargs={"k": 2})

    view = LiveAnswer()
    *chunks, end = bridge.stream(rag, question=QUESTION)
    for chunk in chunks:
        assert isinstance(chunk, StreamChunk)
        view.feed(chunk.field, chunk.text)
    view.close()

    answer = bridge.execute(rag, question=QUESTION)["answer"]  # the same call, not streamed
    assert isinstance(end, StreamEnd) and end.outputs["answer"] == answer
    assert view.text == answer == "Leonardo da Vinci painted it"
    assert view.words == 5
    if bridge_cassette.kind == "mock" and not bridge_cassette.records:
        assert {len(chunk.text) for chunk in chunks} == {1}  # the mock worker re-cut the recorded chunks
