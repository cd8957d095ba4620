"""Streams recorded by the Bridge's recorder and replayed by mock workers, chunk for chunk."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from dspy_bridge import Bridge
from dspy_bridge.cassettes import Cassette, Recorder
from dspy_bridge.pool import PoolConfig, StreamChunk, StreamEnd, StreamEvent, SyncPool
from dspy_bridge.testing import FakeGemini

MODEL = "gemini/gemini-2.5-flash"
KEY = "stream-test-" + secrets.token_hex(12)


def chunks_of(items: list[StreamEvent]) -> list[StreamChunk]:
    assert isinstance(items[-1], StreamEnd) and all(isinstance(item, StreamChunk) for item in items[:-1])
    return [item for item in items if isinstance(item, StreamChunk)]


def replay_stream(path: Path, signature: str, **inputs: str) -> list[StreamEvent]:
    with SyncPool(PoolConfig(size=1, mode="mock")) as pool:
        bridge = Bridge(pool, context={"cassette": {"path": str(path)}})
        bridge.configure_lm(MODEL)
        return list(bridge.stream(bridge.create_program(signature), **inputs))


@pytest.fixture(scope="module")
def mock_pool() -> Iterator[SyncPool]:
    with SyncPool(PoolConfig(size=1, mode="mock")) as pool:
        yield pool


def test_a_stream_is_recorded_with_its_chunks_and_replayed_frame_by_frame(tmp_path: Path, mock_pool: SyncPool) -> None:
    path = tmp_path / "stream.yaml"
    with Recorder(path, "once") as recorder:
        bridge = Bridge(mock_pool, recorder=recorder)
        bridge.configure_lm(MODEL)
        program = bridge.create_program("question -> answer, confidence: float")
        bridge.stub(program, {"answer": "Paris", "confidence": 0.9})
        recorded = list(bridge.stream(program, question="Capital of France?"))
    assert chunks_of(recorded) == [StreamChunk("answer", "Paris"), StreamChunk("confidence", "0.9")]
    stored = yaml.safe_load(path.read_text())
    assert stored["version"] == 1
    (execute,) = [i for i in stored["interactions"] if i["request"]["command"] == "execute_program"]
    assert "stream" not in execute["request"]["args"]  # how the answer travelled is not part of the key
    assert execute["response"]["chunks"] == [
        {"field": "answer", "text": "Paris"},
        {"field": "confidence", "text": "0.9"},
    ]
    assert Cassette.load(path).interactions  # the loader accepts it

    replayed = replay_stream(path, "question -> answer, confidence: float", question="Capital of France?")
    assert chunks_of(replayed) == chunks_of(recorded)
    end = replayed[-1]
    assert isinstance(end, StreamEnd) and end.outputs == {"answer": "Paris", "confidence": 0.9}
    assert end.result["source"] == "cassette"


def test_a_plain_recording_streams_one_chunk_per_field_and_a_streamed_one_executes(
    tmp_path: Path, mock_pool: SyncPool
) -> None:
    path = tmp_path / "plain.yaml"
    with Recorder(path, "once") as recorder:
        bridge = Bridge(mock_pool, recorder=recorder)
        bridge.configure_lm(MODEL)
        program = bridge.create_program("question -> answer, tags: list[str]")
        bridge.stub(program, {"answer": "Rome", "tags": ["city", "capital"]})
        assert bridge.execute(program, question="Capital of Italy?") == {"answer": "Rome", "tags": ["city", "capital"]}
    assert "chunks" not in path.read_text()  # a cassette without chunks, as before streaming existed
    replayed = replay_stream(path, "question -> answer, tags: list[str]", question="Capital of Italy?")
    assert chunks_of(replayed) == [StreamChunk("answer", "Rome"), StreamChunk("tags", '["city", "capital"]')]

    with SyncPool(PoolConfig(size=1, mode="mock")) as pool:  # and a streamed recording answers execute()
        streamed = tmp_path / "streamed.yaml"
        with Recorder(streamed, "once") as recorder:
            bridge = Bridge(pool, recorder=recorder)
            bridge.configure_lm(MODEL)
            program = bridge.create_program("question -> answer")
            bridge.stub(program, {"answer": "Bern"})
            list(bridge.stream(program, question="Capital of Switzerland?"))
        player = Bridge(pool, context={"cassette": {"path": str(streamed)}})
        player.configure_lm(MODEL)
        assert player.execute(player.create_program("question -> answer"), question="Capital of Switzerland?") == {
            "answer": "Bern"
        }


def test_host_stubs_stream_too(mock_pool: SyncPool) -> None:
    bridge = Bridge(mock_pool, host_stubs=True)
    bridge.configure_lm(MODEL)
    program = bridge.create_program("question -> answer")
    bridge.stub(program, {"answer": "42"})
    items = list(bridge.stream(program, question="?"))
    assert chunks_of(items) == [StreamChunk("answer", "42")] and bridge.outcomes["stub"] == 1


@pytest.mark.slow
def test_a_real_worker_streams_through_fake_gemini_sse_and_a_mock_replays_the_same_chunks(tmp_path: Path) -> None:
    path = tmp_path / "real.yaml"
    signature = "question -> answer"
    config = PoolConfig(size=1, mode="real", start_strategy="spawn", start_timeout=120, request_timeout=120)
    with FakeGemini(expected_key=KEY, stream_chunk_chars=8) as gemini, SyncPool(config) as pool:
        with Recorder(path, "once") as recorder:
            bridge = Bridge(pool, recorder=recorder, mode="real")
            bridge.configure_lm(MODEL, api_key=KEY, api_base=gemini.base_url, cache=False, num_retries=0)
            program = bridge.create_program(signature)
            recorded = list(bridge.stream(program, question="Name three rivers."))
            plain = bridge.execute(program, question="Name two mountains.")
        assert [seen.sse for seen in gemini.requests] == [True, False]  # streamed over SSE, then not
    chunks = chunks_of(recorded)
    end = recorded[-1]
    assert isinstance(end, StreamEnd)
    assert len(chunks) > 1 and {chunk.field for chunk in chunks} == {"answer"}
    assert "".join(chunk.text for chunk in chunks).strip() == end.outputs["answer"].strip()
    assert plain["answer"]
    stored = yaml.safe_load(path.read_text())
    executes = [i for i in stored["interactions"] if i["request"]["command"] == "execute_program"]
    assert [len(i["response"].get("chunks") or []) for i in executes] == [len(chunks), 0]
    assert KEY not in path.read_text()

    replayed = replay_stream(path, signature, question="Name three rivers.")
    assert chunks_of(replayed) == chunks  # same sequence, frame by frame
    assert isinstance(replayed[-1], StreamEnd) and replayed[-1].outputs == end.outputs


# --- replaying a stream under other chunkings ----------------------------------------------------


def test_rechunk_keeps_each_fields_text_and_order_and_cuts_it_anew() -> None:
    from dspy_bridge.worker._streaming import rechunk

    recorded = [
        {"field": "reasoning", "text": "Two "},
        {"field": "reasoning", "text": "and two."},
        {"field": "answer", "text": "4"},
        {"field": "note", "text": ""},
    ]
    assert [c["text"] for c in rechunk(recorded, 1)][:4] == ["T", "w", "o", " "]
    for size in (1, 3, 100):
        cut = rechunk(recorded, size)
        assert all(len(chunk["text"]) <= size for chunk in cut)
        joined: dict[str, str] = {}
        for chunk in cut:
            joined[chunk["field"]] = joined.get(chunk["field"], "") + chunk["text"]
        assert joined == {"reasoning": "Two and two.", "answer": "4", "note": ""}
        assert list(dict.fromkeys(chunk["field"] for chunk in cut)) == ["reasoning", "answer", "note"]
    assert len(rechunk(recorded, 3)) == 4 + 1 + 1  # "Two", " an", "d t", "wo." then "4", ""


def test_a_recorded_stream_replays_one_character_or_n_characters_per_chunk(tmp_path: Path, mock_pool: SyncPool) -> None:
    path = tmp_path / "stream.yaml"
    with Recorder(path, "once") as recorder:
        bridge = Bridge(mock_pool, recorder=recorder)
        bridge.configure_lm(MODEL)
        program = bridge.create_program("question -> answer, confidence: float")
        bridge.stub(program, {"answer": "Paris, France", "confidence": 0.9})
        list(bridge.stream(program, question="Capital of France?"))
    for size, expected in ((1, list("Paris, France")), (5, ["Paris", ", Fra", "nce"])):
        player = Bridge(mock_pool, context={"cassette": {"path": str(path), "stream_chunks": size}})
        player.configure_lm(MODEL)
        items = list(
            player.stream(player.create_program("question -> answer, confidence: float"), question="Capital of France?")
        )
        chunks = chunks_of(items)
        assert [c.text for c in chunks if c.field == "answer"] == expected
        assert [c.text for c in chunks if c.field == "confidence"] == (["0", ".", "9"] if size == 1 else ["0.9"])
        end = items[-1]
        assert isinstance(end, StreamEnd) and end.outputs == {"answer": "Paris, France", "confidence": 0.9}


def test_host_stub_streams_are_rechunked_and_a_bad_size_is_refused(mock_pool: SyncPool) -> None:
    from dspy_bridge import HandlerError

    bridge = Bridge(mock_pool, host_stubs=True, context={"cassette": {"synthetic": True, "stream_chunks": 2}})
    bridge.configure_lm(MODEL)
    program = bridge.create_program("question -> answer")
    bridge.stub(program, {"answer": "forty-two"})
    assert [c.text for c in chunks_of(list(bridge.stream(program, question="?")))] == ["fo", "rt", "y-", "tw", "o"]

    wrong = Bridge(mock_pool, context={"cassette": {"synthetic": True, "stream_chunks": 0}})
    wrong.configure_lm(MODEL)
    with pytest.raises(HandlerError, match="stream_chunks must be 'recorded' or a whole number"):
        list(wrong.stream(wrong.create_program("question -> answer"), question="?"))
