"""The cassette proxy process over raw HTTP, with the bundled fake Gemini as its upstream (no network)."""

from __future__ import annotations

import http.client
import json
import os
import select
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from dspy_bridge import CassetteCorrupt, SecretLeak, UsageError
from dspy_bridge.proxy import ERROR_HEADER, PLACEHOLDER_KEY, Fault, ProxyProcess, verify_http_cassette
from dspy_bridge.testing import FakeGemini

KEY = "AIza" + "r" * 35  # built at run time: never a real-looking key in the tree
GENERATE = "/v1beta/models/gemini-2.5-flash:generateContent"
STREAM = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"


def gemini_body(text: str = "What is 2+2?", **extra: Any) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}], **extra}


def post(
    port: int, path: str, body: Any, *, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """POST JSON as a worker would (placeholder key); returns status, lower-cased headers, body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        sent = {"Content-Type": "application/json", "x-goog-api-key": PLACEHOLDER_KEY, **(headers or {})}
        connection.request("POST", path, body=json.dumps(body).encode(), headers=sent)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def post_chunks(port: int, path: str, body: Any) -> tuple[int, dict[str, str], list[bytes]]:
    """POST over a raw socket and return the HTTP chunks exactly as framed on the wire."""
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"x-goog-api-key: {PLACEHOLDER_KEY}\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock, sock.makefile("rb") as stream:
        sock.sendall(head.encode() + data)
        status = int(stream.readline().split()[1])
        headers: dict[str, str] = {}
        while (line := stream.readline()) not in (b"\r\n", b""):
            name, value = line.decode().split(":", 1)
            headers[name.strip().lower()] = value.strip()
        assert headers.get("transfer-encoding") == "chunked", headers
        chunks = []
        while size := int(stream.readline().strip(), 16):
            chunks.append(stream.read(size))
            assert stream.readline() == b"\r\n"
        return status, headers, chunks


def error_of(body: bytes) -> dict[str, Any]:
    error = json.loads(body)["error"]
    assert set(error) >= {"code", "message", "status"}  # Gemini's error shape
    return dict(error)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeGemini]:
    with FakeGemini(expected_key=KEY, stream_chunk_chars=12) as server:
        yield server


@pytest.fixture(scope="module")
def shared_proxy(fake: FakeGemini) -> Iterator[ProxyProcess]:
    with ProxyProcess(upstream=fake.base_url, api_key=KEY) as proxy:
        yield proxy


@pytest.fixture
def proxy(shared_proxy: ProxyProcess) -> Iterator[ProxyProcess]:
    yield shared_proxy
    shared_proxy.clear_faults()
    if shared_proxy.stats().cassette is not None:
        shared_proxy.eject(save=False)


# ─── Record and replay ──────────────────────────────────────────────────────


def test_record_then_replay_with_the_upstream_stopped(tmp_path: Path) -> None:
    cassette = tmp_path / "http" / "test_one.yaml"
    upstream = FakeGemini(expected_key=KEY)
    with upstream, ProxyProcess(upstream=upstream.base_url, api_key=KEY) as proxy:
        proxy.use_cassette(cassette, record_mode="once")
        recorded = [post(proxy.port, GENERATE, gemini_body("first")), post(proxy.port, GENERATE, gemini_body("second"))]
        report = proxy.eject()
        assert (report.forwarded, report.replayed, report.interactions, report.saved) == (2, 0, 2, True)
        assert [status for status, _, _ in recorded] == [200, 200]
        assert upstream.request_count == 2
        assert all(seen.api_key == KEY for seen in upstream.requests)  # the real key went upstream
        upstream.close()

        proxy.use_cassette(cassette, record_mode="none")
        replayed = [post(proxy.port, GENERATE, gemini_body("second")), post(proxy.port, GENERATE, gemini_body("first"))]
        report = proxy.eject()
        proxy.use_cassette(cassette, record_mode="none")
        post(proxy.port, GENERATE, gemini_body("second"))
        assert proxy.eject().played == (1,)  # "first" (interaction 0) was never asked for
    assert [body for _, _, body in replayed] == [recorded[1][2], recorded[0][2]]  # byte for byte, matched by body
    assert (report.replayed, report.forwarded, report.misses, report.saved) == (2, 0, 0, False)
    assert report.played == (0, 1)  # the interactions answered, in file order (for cassettes unused)
    assert upstream.request_count == 2  # nothing reached the upstream during replay


def test_a_replay_miss_is_a_clear_non_retryable_error_with_vcrpys_explanation(
    proxy: ProxyProcess, tmp_path: Path
) -> None:
    proxy.use_cassette(tmp_path / "empty.yaml", record_mode="none")
    status, headers, body = post(proxy.port, GENERATE, gemini_body())
    report = proxy.eject()
    error = error_of(body)
    assert status == 409 and headers[ERROR_HEADER] == "cassette-miss" and error["status"] == "CASSETTE_MISS"
    assert "record_mode 'none'" in error["message"] and str(tmp_path / "empty.yaml") in error["message"]
    assert report.misses == 1 and "record_mode 'none'" in report.miss_messages[0]
    assert not (tmp_path / "empty.yaml").exists()


def test_requests_without_a_cassette_are_refused(proxy: ProxyProcess) -> None:
    before = proxy.stats().refused
    status, headers, body = post(proxy.port, GENERATE, gemini_body())
    assert status == 409 and headers[ERROR_HEADER] == "no-cassette" and error_of(body)["status"] == "NO_CASSETTE"
    assert proxy.stats().refused == before + 1


def test_without_a_key_the_proxy_replays_but_refuses_to_record(
    proxy: ProxyProcess, fake: FakeGemini, tmp_path: Path
) -> None:
    cassette = tmp_path / "c.yaml"
    proxy.use_cassette(cassette, record_mode="once")
    assert post(proxy.port, GENERATE, gemini_body("known"))[0] == 200
    proxy.eject()
    seen = fake.request_count
    with ProxyProcess(upstream=fake.base_url, api_key=None) as keyless:
        keyless.use_cassette(cassette, record_mode="new_episodes")
        assert post(keyless.port, GENERATE, gemini_body("known"))[0] == 200
        status, headers, body = post(keyless.port, GENERATE, gemini_body("unknown"))
        keyless.eject()
    assert status == 409 and headers[ERROR_HEADER] == "no-key" and "GEMINI_API_KEY" in error_of(body)["message"]
    assert fake.request_count == seen


def test_new_episodes_appends_and_rewrite_keeps_only_this_run(proxy: ProxyProcess, tmp_path: Path) -> None:
    cassette = tmp_path / "c.yaml"
    for mode, texts in (("once", ["a"]), ("new_episodes", ["a", "b"]), ("rewrite", ["b"])):
        proxy.use_cassette(cassette, record_mode=mode)
        for text in texts:
            assert post(proxy.port, GENERATE, gemini_body(text))[0] == 200
        proxy.eject()
        if mode == "new_episodes":
            assert len(yaml.safe_load(cassette.read_text())["interactions"]) == 2
    (interaction,) = yaml.safe_load(cassette.read_text())["interactions"]
    assert json.loads(interaction["request"]["body"]) == gemini_body("b")


def test_ignored_body_fields_let_volatile_parts_differ(proxy: ProxyProcess, tmp_path: Path) -> None:
    cassette = tmp_path / "c.yaml"
    proxy.use_cassette(cassette, record_mode="once")
    post(proxy.port, GENERATE, gemini_body(generationConfig={"seed": 1, "temperature": 0}))
    proxy.eject()
    changed = gemini_body(generationConfig={"seed": 2, "temperature": 0})

    proxy.use_cassette(cassette, record_mode="none")
    assert post(proxy.port, GENERATE, changed)[0] == 409  # the body matcher sees the new seed
    proxy.eject()
    proxy.use_cassette(cassette, record_mode="none", ignore_body_fields=["generationConfig.seed"])
    assert post(proxy.port, GENERATE, changed)[0] == 200
    report = proxy.eject()
    assert report.replayed == 1 and report.played == (0,)


# ─── Keys ───────────────────────────────────────────────────────────────────


def test_no_key_in_any_file_while_the_upstream_got_the_real_one(
    proxy: ProxyProcess, fake: FakeGemini, tmp_path: Path
) -> None:
    pasted = "AIza" + "p" * 35  # a key-shaped string a user pasted into a prompt
    openai_like = "sk-" + "o" * 30
    start = fake.request_count
    proxy.use_cassette(tmp_path / "c.yaml", record_mode="once")
    status, _, _ = post(
        proxy.port,
        GENERATE + "?key=" + PLACEHOLDER_KEY,
        gemini_body(f"my keys are {pasted} and {openai_like}"),
        headers={"Authorization": "Bearer " + "t" * 24},
    )
    proxy.eject()
    proxy.use_cassette(tmp_path / "c.yaml", record_mode="none")  # the scrubbed body still matches
    replay_status = post(proxy.port, GENERATE, gemini_body(f"my keys are {pasted} and {openai_like}"))[0]
    proxy.eject()
    assert (status, replay_status) == (200, 200)
    (seen,) = fake.requests[start:]
    assert seen.api_key == KEY and seen.key_source == "header"
    assert "authorization" not in {name.lower() for name in seen.headers}  # the worker's credentials stop here
    files = list(tmp_path.rglob("*"))
    assert files == [tmp_path / "c.yaml"]
    text = files[0].read_text()
    for secret in (KEY, pasted, openai_like, PLACEHOLDER_KEY, "t" * 24, "AIza"):
        assert secret not in text
    verify_http_cassette(files[0], secrets=[KEY])


def test_verify_names_where_a_key_is_but_never_the_key(tmp_path: Path) -> None:
    cassette = tmp_path / "leaky.yaml"
    interaction = {
        "request": {
            "method": "POST",
            "uri": "https://example.test/v1beta/models/m:generateContent?key=" + "q" * 20,
            "body": "plain",
            "headers": {"x-goog-api-key": [KEY]},
        },
        "response": {"status": {"code": 200, "message": "OK"}, "headers": {}, "body": {"string": "ok " + KEY}},
    }
    cassette.write_text(yaml.safe_dump({"version": 1, "interactions": [interaction]}))
    with pytest.raises(SecretLeak) as caught:
        verify_http_cassette(cassette)
    message = str(caught.value)
    assert KEY not in message and "q" * 20 not in message
    assert "google-api-key" in message and "x-goog-api-key" in message and "?key=" in message
    (tmp_path / "fine.yaml").write_text(yaml.safe_dump({"version": 1, "interactions": []}))
    verify_http_cassette(tmp_path / "fine.yaml")
    (tmp_path / "custom.yaml").write_text("note: my-own-secret-value\n")
    with pytest.raises(SecretLeak):
        verify_http_cassette(tmp_path / "custom.yaml", secrets=["my-own-secret-value"])


# ─── Streaming ──────────────────────────────────────────────────────────────


def test_sse_is_relayed_and_replayed_one_event_per_chunk(proxy: ProxyProcess, tmp_path: Path) -> None:
    cassette = tmp_path / "stream.yaml"
    body = gemini_body("Tell me a long story about streams")
    proxy.use_cassette(cassette, record_mode="once")
    status, headers, recorded = post_chunks(proxy.port, STREAM, body)
    proxy.eject()
    assert status == 200 and headers["content-type"] == "text/event-stream"
    assert len(recorded) >= 3
    assert all(chunk.startswith(b"data: {") and chunk.endswith(b"}\r\n\r\n") for chunk in recorded)

    stored = yaml.safe_load(cassette.read_text())["interactions"][0]["response"]["body"]
    assert stored["sse_separator"] == "\r\n\r\n"  # the event boundaries, beside vcrpy's own body.string
    assert stored["string"].encode() == b"".join(recorded)

    proxy.use_cassette(cassette, record_mode="none")
    status, headers, replayed = post_chunks(proxy.port, STREAM, body)
    assert proxy.eject().replayed == 1
    assert status == 200 and headers["content-type"] == "text/event-stream"
    assert replayed == recorded


class _GatedStream(BaseHTTPRequestHandler):
    """An upstream that sends one SSE event, then waits for the test to open the gate."""

    protocol_version = "HTTP/1.1"
    gate = threading.Event()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for n in range(2):
            if n == 1:
                self.gate.wait(30)
            event = b'data: {"n": %d}\r\n\r\n' % n
            self.wfile.write(b"%X\r\n%s\r\n" % (len(event), event))
        self.wfile.write(b"0\r\n\r\n")


def test_a_recorded_stream_reaches_the_worker_while_the_upstream_is_still_sending(tmp_path: Path) -> None:
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _GatedStream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    try:
        with ProxyProcess(upstream=f"http://127.0.0.1:{upstream.server_port}", api_key=KEY) as proxy:
            proxy.use_cassette(tmp_path / "c.yaml", record_mode="once")
            data = json.dumps(gemini_body()).encode()
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=20) as sock:
                sock.sendall(
                    f"POST {STREAM} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data
                )
                received = b""
                while b'{"n": 0}' not in received:  # times out (fails) if the proxy buffered the stream
                    received += sock.recv(65536)
                assert b'{"n": 1}' not in received
                _GatedStream.gate.set()
                while not received.endswith(b"0\r\n\r\n"):
                    received += sock.recv(65536)
            assert b'{"n": 1}' in received
            assert proxy.eject().forwarded == 1
    finally:
        _GatedStream.gate.set()
        upstream.shutdown()
        upstream.server_close()
    stored = yaml.safe_load((tmp_path / "c.yaml").read_text())["interactions"][0]["response"]["body"]
    assert stored["string"] == 'data: {"n": 0}\r\n\r\ndata: {"n": 1}\r\n\r\n' and stored["sse_separator"] == "\r\n\r\n"


# ─── Faults ─────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(("code", "grpc"), [(429, "RESOURCE_EXHAUSTED"), (500, "INTERNAL"), (503, "UNAVAILABLE")])
def test_injected_status_faults_look_like_gemini_then_calls_go_through(
    proxy: ProxyProcess, tmp_path: Path, code: int, grpc: str
) -> None:
    proxy.use_cassette(tmp_path / "c.yaml", record_mode="all")
    assert proxy.inject_faults(Fault(status=code, times=2, retry_after=0 if code == 429 else None)) == 2
    answers = [post(proxy.port, GENERATE, gemini_body()) for _ in range(3)]
    report = proxy.eject()
    for status, headers, body in answers[:2]:
        assert status == code and headers[ERROR_HEADER] == "fault"
        assert headers.get("retry-after") == ("0" if code == 429 else None)  # as the proxy passes an upstream 429 on
        assert error_of(body)["status"] == grpc and error_of(body)["code"] == code
    assert answers[2][0] == 200
    assert (report.requests, report.interactions) == (1, 1)  # faults never reach the cassette


def test_drop_and_delay_faults(proxy: ProxyProcess, tmp_path: Path) -> None:
    proxy.use_cassette(tmp_path / "c.yaml", record_mode="all")
    before = proxy.stats().faults
    proxy.inject_faults(Fault(drop=True), Fault(delay=0.01))
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        post(proxy.port, GENERATE, gemini_body())
    assert post(proxy.port, GENERATE, gemini_body())[0] == 200  # a delay alone still answers
    assert proxy.stats().faults == before + 2 and proxy.stats().pending_faults == 0


def test_fault_options_are_validated() -> None:
    for bad in ({"status": 200}, {"status": 429, "drop": True}, {"times": 0, "status": 500}, {}):
        with pytest.raises(ValueError):
            Fault(**bad)


# ─── Files: concurrency, corruption ─────────────────────────────────────────


def test_two_proxies_recording_into_one_directory_at_once_lose_nothing(
    proxy: ProxyProcess, fake: FakeGemini, tmp_path: Path
) -> None:
    shared = tmp_path / "shared.yaml"
    per_proxy = 4
    first = proxy
    with ProxyProcess(upstream=fake.base_url, api_key=KEY) as second:
        proxies = [first, second]
        for proxy in proxies:
            proxy.use_cassette(shared, record_mode="new_episodes")
        barrier = threading.Barrier(len(proxies))

        def record(index: int) -> None:
            for n in range(per_proxy):
                assert post(proxies[index].port, GENERATE, gemini_body(f"proxy {index} call {n}"))[0] == 200
            barrier.wait()
            proxies[index].eject()

        threads = [threading.Thread(target=record, args=(i,)) for i in range(len(proxies))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        bodies = {json.loads(i["request"]["body"])["contents"][0]["parts"][0]["text"] for i in _interactions(shared)}
        assert bodies == {f"proxy {i} call {n}" for i in range(len(proxies)) for n in range(per_proxy)}
        assert sorted(p.name for p in tmp_path.iterdir()) == ["shared.yaml"]  # no temp or lock files left here

        first.use_cassette(shared, record_mode="none")
        for text in sorted(bodies):
            assert post(first.port, GENERATE, gemini_body(text))[0] == 200
        assert first.eject().replayed == len(bodies)


def _interactions(path: Path) -> list[dict[str, Any]]:
    return list(yaml.safe_load(path.read_text())["interactions"])


@pytest.mark.parametrize(
    ("content", "fragment"),
    [("interactions: [\n  - {request: \n", "line"), ("- just\n- a list\n", "not a vcrpy cassette")],
)
def test_a_corrupt_cassette_is_a_clear_error(proxy: ProxyProcess, tmp_path: Path, content: str, fragment: str) -> None:
    cassette = tmp_path / "bad.yaml"
    cassette.write_text(content)
    with pytest.raises(CassetteCorrupt) as caught:
        proxy.use_cassette(cassette, record_mode="new_episodes")
    assert str(cassette) in str(caught.value) and fragment in str(caught.value)
    assert cassette.read_text() == content  # never overwritten
    assert proxy.stats().cassette is None  # and the proxy is still usable
    proxy.use_cassette(tmp_path / "good.yaml")
    proxy.eject()


# ─── Control API and lifecycle ──────────────────────────────────────────────


def test_control_endpoints_need_the_token(proxy: ProxyProcess) -> None:
    for token in (None, "guess"):
        connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        headers = {"x-dspy-bridge-token": token} if token else {}
        connection.request("POST", "/__bridge__/cassette", body=b'{"path": "/tmp/x.yaml"}', headers=headers)
        response = connection.getresponse()
        assert response.status == 403, response.read()
        connection.close()
    assert proxy.stats().cassette is None


def test_bad_control_requests_are_usage_errors(proxy: ProxyProcess, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="new_episodes"):
        proxy.use_cassette(tmp_path / "c.yaml", record_mode="sometimes")
    with pytest.raises(UsageError, match="unknown matcher"):
        proxy.use_cassette(tmp_path / "c.yaml", match_on=["method", "vibes"])
    with pytest.raises(UsageError, match="no cassette"):
        proxy.eject()
    proxy.use_cassette(tmp_path / "c.yaml")
    with pytest.raises(UsageError, match="still in use"):
        proxy.use_cassette(tmp_path / "d.yaml")


def test_close_discards_an_unejected_cassette_and_reaps_the_process(fake: FakeGemini, tmp_path: Path) -> None:
    proxy = ProxyProcess(upstream=fake.base_url, api_key=KEY).start()
    pid = proxy.pid
    proxy.use_cassette(tmp_path / "c.yaml", record_mode="all")
    assert post(proxy.port, GENERATE, gemini_body())[0] == 200
    proxy.close()
    proxy.close()  # idempotent
    assert not (tmp_path / "c.yaml").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(RuntimeError, match="closed"):
        proxy.use_cassette(tmp_path / "c.yaml")


def test_the_proxy_dies_with_its_host() -> None:
    host_code = (
        "import sys; from dspy_bridge.proxy import ProxyProcess; "
        "p = ProxyProcess(upstream='http://127.0.0.1:9', api_key=None).start(); "
        "print(p.pid, flush=True); sys.stdin.read()"
    )
    host = subprocess.Popen([sys.executable, "-c", host_code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert host.stdout is not None
        proxy_pid = int(host.stdout.readline())
        pidfd = os.pidfd_open(proxy_pid)
    finally:
        host.kill()
        host.wait()
    try:
        readable, _, _ = select.select([pidfd], [], [], 30)  # a deadline for failure, not a timing assertion
        assert readable, "the proxy outlived its SIGKILLed host"
    finally:
        os.close(pidfd)


class _ChattyUpstream(BaseHTTPRequestHandler):
    """Answers the same JSON every time, with headers that change on every call (as Google's front end does)."""

    calls = 0

    def do_POST(self) -> None:
        type(self).calls += 1
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        answer = {
            "candidates": [{"content": {"role": "model", "parts": [{"text": "4"}]}}],
            "responseId": f"id{self.calls}",
        }
        body = json.dumps(answer).encode()  # Gemini's responseId is new on every call
        self.send_response(200)  # adds Date and Server
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Server-Timing", f"gfet4t7; dur={type(self).calls * 17}")
        self.send_header("Alt-Svc", 'h3=":443"; ma=2592000')
        self.send_header("X-Request-Id", f"req-{type(self).calls}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_re_recording_the_same_answer_changes_nothing_in_the_file(tmp_path: Path) -> None:
    """Volatile response headers (Date, Server-Timing, Alt-Svc, X-*, framing) are never stored: no churn in review."""
    cassette = tmp_path / "quiet.http.yaml"
    texts = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChattyUpstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with ProxyProcess(upstream=f"http://127.0.0.1:{server.server_port}", api_key=KEY) as proxy:
            for _ in range(2):
                proxy.use_cassette(cassette, record_mode="rewrite")
                assert post(proxy.port, GENERATE, gemini_body("same question"))[0] == 200
                proxy.eject()
                texts.append(cassette.read_text())
    finally:
        server.shutdown()
    assert texts[0] == texts[1]
    headers = yaml.safe_load(texts[0])["interactions"][0]["response"]["headers"]
    names = {name.lower() for name in headers}
    assert not names & {"date", "server-timing", "alt-svc", "x-request-id", "content-length"}
    assert "content-type" in names  # what the answer is, is kept
    stored = json.loads(yaml.safe_load(texts[0])["interactions"][0]["response"]["body"]["string"])
    assert (
        stored["responseId"].startswith("recorded-") and stored["candidates"][0]["content"]["parts"][0]["text"] == "4"
    )


def test_one_streams_events_keep_one_stable_response_id() -> None:
    from dspy_bridge.proxy._scrub import stable_response_ids

    stream = b'data: {"candidates": [], "responseId": "abc"}\r\n\r\ndata: {"responseId":"abc","x":1}\r\n\r\n'
    again = stream.replace(b"abc", b"xyz")
    stable = stable_response_ids(stream)
    assert stable == stable_response_ids(again) and b"abc" not in stable
    ids = {line.split(b'"responseId"')[1].split(b'"')[1] for line in stable.split(b"\r\n\r\n") if line}
    assert len(ids) == 1
    assert stable_response_ids("no id here") == "no id here"
