"""The proxy's recording policy and portable files: unreachable upstreams, error answers, empty recordings,
ports of a loopback fake, plain-vcrpy SSE, lock files, near matching. The fake Gemini is the upstream."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from dspy_bridge.cassettes import Recorder
from dspy_bridge.proxy import ERROR_HEADER, ProxyProcess
from dspy_bridge.proxy._scrub import stable_response_ids
from dspy_bridge.testing import Fail, FakeGemini
from test_proxy import GENERATE, KEY, STREAM, error_of, gemini_body, post, post_chunks

VCRPY_DEFAULT_MATCH_ON = ("method", "scheme", "host", "port", "path", "query")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    with FakeGemini(expected_key=KEY, stream_chunk_chars=12) as server:
        yield server


@pytest.fixture
def proxy(fake: FakeGemini) -> Iterator[ProxyProcess]:
    with ProxyProcess(upstream=fake.base_url, api_key=KEY) as running:
        yield running


def _interactions(path: Path) -> list[dict]:
    return list(yaml.safe_load(path.read_text())["interactions"])


# ─── What is never recorded ──────────────────────────────────────────────────


def test_an_unreachable_upstream_is_reported_and_nothing_is_written(tmp_path: Path) -> None:
    cassette = tmp_path / "c.http.yaml"
    port = _closed_port()
    with ProxyProcess(upstream=f"http://127.0.0.1:{port}", api_key=KEY) as proxy:
        proxy.use_cassette(cassette, record_mode="once", keep_partial=False, record_empty=True)
        status, headers, body = post(proxy.port, GENERATE, gemini_body())
        report = proxy.eject()
    assert status == 502 and headers[ERROR_HEADER] == "upstream-unreachable"
    assert "upstream unreachable: ConnectionRefusedError" in error_of(body)["message"]
    assert report.unreachable == 1 and report.saved is False
    assert report.not_recorded[0].startswith("upstream unreachable: ConnectionRefusedError")
    assert f"127.0.0.1:{port}" in report.not_recorded[0]
    assert not cassette.exists()  # not even the empty file record_empty would write


def test_error_answers_of_the_upstream_are_recorded_only_when_asked(fake: FakeGemini, proxy: ProxyProcess,
                                                                    tmp_path: Path) -> None:  # fmt: skip
    default, asked = tmp_path / "default.yaml", tmp_path / "asked.yaml"
    fake.script(Fail(429), {"answer": "4"})  # without RetryInfo the proxy has no delay to wait out: passed on
    proxy.use_cassette(default, record_mode="once")
    first, second = post(proxy.port, GENERATE, gemini_body()), post(proxy.port, GENERATE, gemini_body())
    report = proxy.eject()
    assert (first[0], second[0]) == (429, 200)  # the worker saw the error either way
    assert [i["response"]["status"]["code"] for i in _interactions(default)] == [200]
    assert len(report.not_recorded) == 1 and "answered 429" in report.not_recorded[0]
    assert "record_errors=True" in report.not_recorded[0]

    fake.script(Fail(429, retry_after=0), {"answer": "4"})  # record_errors: RetryInfo or not, the 429 is kept
    proxy.use_cassette(asked, record_mode="once", record_errors=True)
    post(proxy.port, GENERATE, gemini_body()), post(proxy.port, GENERATE, gemini_body())
    assert proxy.eject().not_recorded == ()
    assert [i["response"]["status"]["code"] for i in _interactions(asked)] == [429, 200]
    proxy.use_cassette(asked, record_mode="none")  # a fault test replays the error, then the answer
    assert [post(proxy.port, GENERATE, gemini_body())[0] for _ in range(2)] == [429, 200]
    proxy.eject()


def test_a_recording_without_calls_writes_an_empty_cassette_that_replays(proxy: ProxyProcess, tmp_path: Path) -> None:
    cassette = tmp_path / "quiet.http.yaml"
    proxy.use_cassette(cassette, record_mode="once")
    assert proxy.eject().saved is False and not cassette.exists()  # without record_empty: as vcrpy
    proxy.use_cassette(cassette, record_mode="once", record_empty=True)
    assert proxy.eject().saved is True
    assert yaml.safe_load(cassette.read_text())["interactions"] == []
    proxy.use_cassette(cassette, record_mode="none")
    report = proxy.eject()
    assert (report.interactions, report.misses) == (0, 0)


# ─── Portable files ─────────────────────────────────────────────────────────


def test_a_recording_against_a_fake_replays_against_a_fake_on_another_port(tmp_path: Path) -> None:
    cassette = tmp_path / "c.yaml"
    with FakeGemini(expected_key=KEY) as first, ProxyProcess(upstream=first.base_url, api_key=KEY) as proxy:
        first_port = first.port
        proxy.use_cassette(cassette, record_mode="once", match_on=VCRPY_DEFAULT_MATCH_ON)
        recorded = post(proxy.port, GENERATE, gemini_body())
        proxy.eject()
    assert _interactions(cassette)[0]["request"]["uri"].startswith("http://127.0.0.1/v1beta/")  # no random port
    with FakeGemini(expected_key=KEY) as second, ProxyProcess(upstream=second.base_url, api_key=KEY) as proxy:
        assert second.port != first_port
        proxy.use_cassette(cassette, record_mode="none", match_on=VCRPY_DEFAULT_MATCH_ON)
        replayed = post(proxy.port, GENERATE, gemini_body())
        report = proxy.eject()
    assert (report.replayed, report.misses) == (1, 0) and replayed[2] == stable_response_ids(recorded[2])


def test_plain_vcrpy_loads_and_replays_a_recorded_stream(proxy: ProxyProcess, tmp_path: Path) -> None:
    import vcr

    cassette = tmp_path / "stream.yaml"
    body = gemini_body("Tell me a long story about streams")
    proxy.use_cassette(cassette, record_mode="once")
    _, _, chunks = post_chunks(proxy.port, STREAM, body)
    proxy.eject()
    with vcr.use_cassette(str(cassette), record_mode="none"):  # vcrpy's own loader and matchers
        connection = http.client.HTTPConnection("127.0.0.1")
        connection.request("POST", STREAM, body=json.dumps(body))
        replayed = connection.getresponse().read()
    assert replayed == stable_response_ids(b"".join(chunks)) and len(chunks) >= 3


def test_cassettes_in_the_older_event_list_shape_still_replay(proxy: ProxyProcess, tmp_path: Path) -> None:
    cassette = tmp_path / "old.yaml"
    proxy.use_cassette(cassette, record_mode="once")
    _, _, chunks = post_chunks(proxy.port, STREAM, gemini_body())
    proxy.eject()
    data = yaml.safe_load(cassette.read_text())
    response = data["interactions"][0]["response"]
    events = response["body"]["string"].split("\r\n\r\n")[:-1]
    response["body"] = {"sse_events": events, "sse_separator": "\r\n\r\n"}  # as files were written before
    cassette.write_text(yaml.safe_dump(data))
    proxy.use_cassette(cassette, record_mode="none")
    _, _, replayed = post_chunks(proxy.port, STREAM, gemini_body())
    assert proxy.eject().replayed == 1 and replayed == stable_events(chunks)


def test_no_lock_file_is_left_next_to_either_kind_of_cassette(proxy: ProxyProcess, tmp_path: Path) -> None:
    proxy.use_cassette(tmp_path / "t.http.yaml", record_mode="once")
    post(proxy.port, GENERATE, gemini_body())
    proxy.eject()
    recorder = Recorder(tmp_path / "t.bridge.yaml", "once")
    recorder.save()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.bridge.yaml", "t.http.yaml"]


def test_more_headers_can_be_filtered(proxy: ProxyProcess, tmp_path: Path) -> None:
    cassette = tmp_path / "c.yaml"
    proxy.use_cassette(cassette, record_mode="once", filter_headers=["x-trace-id"])
    post(proxy.port, GENERATE, gemini_body(), headers={"x-trace-id": "abc123", "x-kept": "yes"})
    proxy.eject()
    headers = {name.lower() for name in _interactions(cassette)[0]["request"]["headers"]}
    assert "x-kept" in headers and "x-trace-id" not in headers


# ─── Near matching ──────────────────────────────────────────────────────────


def test_a_drifted_prompt_near_matches_only_when_asked_and_says_how_near(proxy: ProxyProcess, tmp_path: Path) -> None:
    cassette = tmp_path / "c.yaml"
    proxy.use_cassette(cassette, record_mode="once")
    recorded = post(proxy.port, GENERATE, gemini_body("Answer the question. Question: What is the capital of France?"))
    proxy.eject()
    drifted = gemini_body("Answer  the question.\nQuestion: What is the capital of France ?")

    proxy.use_cassette(cassette, record_mode="none")  # exact by default
    assert post(proxy.port, GENERATE, drifted)[0] == 409
    assert proxy.eject().misses == 1

    proxy.use_cassette(cassette, record_mode="none", near_match=0.9)
    status, _, body = post(proxy.port, GENERATE, drifted)
    report = proxy.eject()
    assert status == 200 and body == stable_response_ids(recorded[2])
    assert report.misses == 0 and len(report.near_matches) == 1
    assert "prompt similarity 0.9" in report.near_matches[0] and "threshold 0.9" in report.near_matches[0]

    proxy.use_cassette(cassette, record_mode="none", near_match=0.9)  # a different question is still a miss
    assert post(proxy.port, GENERATE, gemini_body("Answer the question. Question: Who wrote Hamlet?"))[0] == 409
    assert proxy.eject().near_matches == ()


def stable_events(chunks: list[bytes]) -> list[bytes]:
    """The recorded stream's events as stored: one stable responseId for the whole stream (stable_response_ids)."""
    return [event + b"\r\n\r\n" for event in stable_response_ids(b"".join(chunks)).split(b"\r\n\r\n")[:-1]]
