"""The proxy's upstream calls: in parallel while recording, through forward proxies, and TLS failures.

Real parts only: the proxy process, the bundled fake Gemini, a gated local upstream, a plain HTTP forward
proxy, a CONNECT proxy and a TLS front with a throwaway CA (trustme), all on 127.0.0.1. A proxy process
costs ~1 s to start, so what needs no HTTP front drives the proxy's ``CassetteSession`` in this process
(real vcrpy, real sockets, this process's environment).
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import ssl
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml

from dspy_bridge import UsageError
from dspy_bridge.proxy import ERROR_HEADER, ProxyProcess
from dspy_bridge.proxy._session import CassetteOptions, CassetteSession, Exchange
from dspy_bridge.proxy._upstream import ForwardProxy, Upstream
from dspy_bridge.testing import FakeGemini
from test_proxy import GENERATE, gemini_body, post

KEY = "AIza" + "u" * 35  # built at run time: never a real-looking key in the tree
REMOTE = "fake-gemini.test"  # never resolved here: only a forward proxy can reach it


def _interactions(path: Path) -> list[dict[str, Any]]:
    return list(yaml.safe_load(path.read_text())["interactions"])


def _text(body: bytes | str) -> str:
    data = json.loads(body)
    return str(data["candidates"][0]["content"]["parts"][0]["text"])


class _NoRelay:
    """Answers here are not event streams: nothing is relayed."""

    started = False

    def head(self, status: int, reason: str, headers: list[tuple[str, str]]) -> None:
        raise AssertionError("not an event stream")

    def chunk(self, data: bytes) -> None:
        raise AssertionError("not an event stream")


def record_one(upstream: str, cassette: Path, *, timeout: float = 30.0) -> tuple[Exchange, dict[str, Any]]:
    """One generateContent call recorded by the proxy's session, in this process."""
    session = CassetteSession(
        CassetteOptions(str(cassette), record_mode="once"), upstream=Upstream.parse(upstream), api_key=KEY,
        timeout=timeout,
    )  # fmt: skip
    session.open()
    body = json.dumps(gemini_body()).encode()
    exchange = session.exchange("POST", GENERATE, {"Content-Type": "application/json"}, body, _NoRelay())
    return exchange, session.close()


def _serve(server: socketserver.BaseServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


# -- A: parallel recording ------------------------------------------------------------------------------


class _GatedUpstream(BaseHTTPRequestHandler):
    """Answers ``answer N`` to the N-th call; the first waits until the test releases it, so a second call
    can only reach us if the proxy does not hold its lock across the first."""

    protocol_version = "HTTP/1.1"
    lock = threading.Lock()
    arrivals = 0
    in_flight = 0
    max_in_flight = 0
    first_arrived = threading.Event()
    release_first = threading.Event()

    def do_POST(self) -> None:
        cls = type(self)
        self.rfile.read(int(self.headers["Content-Length"]))
        with cls.lock:
            cls.arrivals += 1
            cls.in_flight += 1
            cls.max_in_flight = max(cls.max_in_flight, cls.in_flight)
            number = cls.arrivals
        if number == 1:
            cls.first_arrived.set()
            cls.release_first.wait(timeout=20)
        body = {"candidates": [{"content": {"role": "model", "parts": [{"text": f"answer {number}"}]}}]}
        data = json.dumps(body).encode()
        with cls.lock:
            cls.in_flight -= 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def test_identical_calls_record_in_parallel_in_completion_order_and_replay_in_that_order(tmp_path: Path) -> None:
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _GatedUpstream)
    _serve(upstream)
    cassette = tmp_path / "parallel.yaml"
    try:
        with ProxyProcess(upstream=f"http://127.0.0.1:{upstream.server_port}", api_key=KEY) as proxy:
            # Its own session: a terminal's Ctrl-C reaches pytest, which discards the test's recording cleanly.
            assert os.getsid(proxy.pid) != os.getsid(0)
            proxy.use_cassette(cassette, record_mode="once")
            with ThreadPoolExecutor(2) as calls:
                first = calls.submit(post, proxy.port, GENERATE, gemini_body())
                assert _GatedUpstream.first_arrived.wait(timeout=20)
                second = post(proxy.port, GENERATE, gemini_body())  # identical request, sent while #1 is upstream
                _GatedUpstream.release_first.set()
                first_answer = first.result()
            report = proxy.eject()
            assert _GatedUpstream.max_in_flight == 2  # the proxy had both calls upstream at once
            assert (second[0], _text(second[2])) == (200, "answer 2")
            assert (first_answer[0], _text(first_answer[2])) == (200, "answer 1")
            assert report.forwarded == 2 and report.saved
            # Both recorded, in the order they completed; a replay answers identical calls in that order.
            recorded = [_text(i["response"]["body"]["string"]) for i in _interactions(cassette)]
            assert recorded == ["answer 2", "answer 1"]
            proxy.use_cassette(cassette, record_mode="none")
            replayed = [_text(post(proxy.port, GENERATE, gemini_body())[2]) for _ in range(2)]
            third = post(proxy.port, GENERATE, gemini_body())
            assert replayed == ["answer 2", "answer 1"] and third[0] == 409
            proxy.eject(save=False)
    finally:
        _GatedUpstream.release_first.set()
        upstream.shutdown()
        upstream.server_close()
    assert _GatedUpstream.arrivals == 2  # the replay never reached the upstream


class _HeldUpstream(BaseHTTPRequestHandler):
    """Answers once the test lets it."""

    protocol_version = "HTTP/1.1"
    arrived = threading.Event()
    release = threading.Event()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).arrived.set()
        type(self).release.wait(timeout=20)
        data = json.dumps({"candidates": [{"content": {"role": "model", "parts": [{"text": "late"}]}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def test_closing_with_save_waits_for_a_call_in_flight_and_keeps_its_recording(tmp_path: Path) -> None:
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _HeldUpstream)
    _serve(upstream)
    cassette = tmp_path / "in-flight.yaml"
    session = CassetteSession(
        CassetteOptions(str(cassette), record_mode="once"),
        upstream=Upstream.parse(f"http://127.0.0.1:{upstream.server_port}"), api_key=KEY, timeout=30.0,
    )  # fmt: skip
    session.open()
    closing = threading.Event()
    wait_for = session._idle.wait_for

    def noted_wait_for(predicate: Any, timeout: float | None = None) -> Any:
        closing.set()  # close() is now waiting for the call in flight
        return wait_for(predicate, timeout)

    session._idle.wait_for = noted_wait_for  # type: ignore[method-assign]
    body = json.dumps(gemini_body()).encode()
    try:
        with ThreadPoolExecutor(2) as threads:
            call = threads.submit(session.exchange, "POST", GENERATE, {}, body, _NoRelay())
            assert _HeldUpstream.arrived.wait(timeout=20)
            close = threads.submit(session.close, save=True)
            assert closing.wait(timeout=20)
            _HeldUpstream.release.set()
            exchange, report = call.result(), close.result()
    finally:
        _HeldUpstream.release.set()
        upstream.shutdown()
        upstream.server_close()
    assert exchange.kind == "forwarded" and report["forwarded"] == 1 and report["saved"]
    assert [_text(i["response"]["body"]["string"]) for i in _interactions(cassette)] == ["late"]


def test_the_upstream_timeout_is_configurable(tmp_path: Path) -> None:
    """A call the upstream does not answer within the timeout is an unreachable upstream, not recorded."""
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (the backlog), never answers
    try:
        port = silent.getsockname()[1]
        exchange, report = record_one(f"http://127.0.0.1:{port}", tmp_path / "slow.yaml", timeout=0.3)
    finally:
        silent.close()
    assert exchange.kind == "upstream-error" and "timed out" in exchange.message
    assert report["unreachable"] == 1 and not report["saved"] and not (tmp_path / "slow.yaml").exists()


def test_upstream_timeout_must_be_positive() -> None:
    with pytest.raises(UsageError, match="upstream_timeout must be a positive number"):
        ProxyProcess(upstream_timeout=0)


# -- C: forward proxies ---------------------------------------------------------------------------------


def test_forward_proxy_choice_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    gemini = Upstream.parse("https://generativelanguage.googleapis.com")
    assert gemini.forward_proxy() is None
    monkeypatch.setenv("HTTPS_PROXY", "http://alice:s%40cret@proxy.corp:3128")
    via = gemini.forward_proxy()
    assert via == ForwardProxy("proxy.corp", 3128, "Basic YWxpY2U6c0BjcmV0")  # alice:s@cret
    assert str(via) == "http://proxy.corp:3128"  # what messages show: never the credentials
    assert Upstream.parse("http://gateway.example").forward_proxy() is None  # HTTP_PROXY is for http
    assert Upstream.parse("https://127.0.0.1:8443").forward_proxy() is None  # loopback: never proxied
    monkeypatch.setenv("NO_PROXY", "localhost,.googleapis.com")
    assert gemini.forward_proxy() is None
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.setenv("HTTPS_PROXY", "socks5://proxy.corp:1080")
    with pytest.raises(UsageError, match=r"HTTPS_PROXY=socks5://proxy\.corp… is not an http:// proxy URL"):
        gemini.forward_proxy()


class _ForwardProxy(BaseHTTPRequestHandler):
    """A plain HTTP forward proxy: absolute-form requests, any host sent to the fake Gemini."""

    protocol_version = "HTTP/1.1"
    target_port = 0
    seen: list[tuple[str, str | None]] = []

    def do_POST(self) -> None:
        import http.client
        from urllib.parse import urlsplit

        type(self).seen.append((self.path, self.headers.get("Proxy-Authorization")))
        body = self.rfile.read(int(self.headers["Content-Length"]))
        parts = urlsplit(self.path)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-authorization", "host")}
        connection = http.client.HTTPConnection("127.0.0.1", type(self).target_port, timeout=30)
        connection.request("POST", parts.path + (f"?{parts.query}" if parts.query else ""), body, headers)
        answer = connection.getresponse()
        data = answer.read()
        connection.close()
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.getheader("Content-Type") or "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def test_http_proxy_carries_an_http_upstream_and_its_credentials_stay_off_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain-http upstream goes to the forward proxy in absolute form; nothing resolves fake-gemini.test."""
    with FakeGemini(expected_key=KEY) as fake:
        port = _ForwardProxy.target_port = fake.port
        forward = ThreadingHTTPServer(("127.0.0.1", 0), _ForwardProxy)
        _serve(forward)
        monkeypatch.setenv("HTTP_PROXY", f"http://bob:pr0xy-pass@127.0.0.1:{forward.server_port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        cassette = tmp_path / "via-proxy.yaml"
        try:
            exchange, report = record_one(f"http://{REMOTE}:{port}", cassette)
        finally:
            forward.shutdown()
            forward.server_close()
    assert exchange.status == 200 and report["forwarded"] == 1 and report["saved"]
    uri = f"http://{REMOTE}:{port}{GENERATE}"
    assert _ForwardProxy.seen == [(uri, "Basic Ym9iOnByMHh5LXBhc3M=")]
    text = cassette.read_text()
    assert f"uri: {uri}" in text  # recorded as the upstream, not the proxy
    assert "pr0xy-pass" not in text and "Ym9iOnByMHh5LXBhc3M" not in text and "Proxy-Authorization" not in text


# -- C (CONNECT) and D: TLS --------------------------------------------------------------------------------


class _Relay(socketserver.ThreadingTCPServer):
    """Pipes each connection to 127.0.0.1:``target``: behind a TLS front (``tls``) or a CONNECT handshake."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, target: int, *, tls: ssl.SSLContext | None = None, connect: bool = False) -> None:
        self.target, self.tls, self.connect = target, tls, connect
        self.connects: list[str] = []
        super().__init__(("127.0.0.1", 0), _RelayHandler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _RelayHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: _Relay = self.server  # type: ignore[assignment]
        client: socket.socket = self.request
        leftover = b""
        if server.connect:
            head = b""
            while b"\r\n\r\n" not in head and (data := client.recv(4096)):
                head += data
            head, _, leftover = head.partition(b"\r\n\r\n")
            server.connects.append(head.split(b"\r\n")[0].decode())
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        if server.tls is not None:
            try:
                client = server.tls.wrap_socket(client, server_side=True)
            except (ssl.SSLError, OSError):  # the client refused our certificate
                return
        with socket.create_connection(("127.0.0.1", server.target)) as upstream:
            upstream.sendall(leftover)
            back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
            back.start()
            _pipe(client, upstream)
            back.join(timeout=30)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _dspy_call_error(proxy: ProxyProcess) -> BaseException:
    """What real DSPy (in this process, retries on) raises for a call through the proxy."""
    import dspy

    lm = dspy.LM("gemini/gemini-2.5-flash", cache=False, num_retries=3, **proxy.lm_kwargs())
    with pytest.raises(Exception) as caught:
        lm("What is 2+2?")
    return caught.value


@pytest.fixture(scope="module")
def tls_fake() -> Iterator[tuple[_Relay, trustme.CA]]:
    """The fake Gemini behind a TLS front whose certificate (localhost, fake-gemini.test) a throwaway CA signed."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", REMOTE).configure_cert(context)
    with FakeGemini(expected_key=KEY) as fake:
        front = _Relay(fake.port, tls=context)
        _serve(front)
        yield front, ca
        front.shutdown()
        front.server_close()


def test_an_untrusted_certificate_is_a_clear_non_retryable_answer_and_ssl_cert_file_fixes_it(
    tls_fake: tuple[_Relay, trustme.CA], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    front, ca = tls_fake
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    cassette = tmp_path / "tls.yaml"
    upstream = f"https://localhost:{front.port}"
    with ProxyProcess(upstream=upstream, api_key=KEY) as proxy:
        proxy.use_cassette(cassette, record_mode="once")
        status, headers, body = post(proxy.port, GENERATE, gemini_body())
        dspy_error = _dspy_call_error(proxy)
        requests = proxy.stats().requests
        report = proxy.eject()
    assert requests == 2  # DSPy, allowed 3 retries, asked once
    assert type(dspy_error).__name__ == "LMInvalidRequestError" and "SSL_CERT_FILE" in str(dspy_error)
    error = json.loads(body)["error"]
    assert status == 400 and headers[ERROR_HEADER] == "upstream-tls"  # 400: DSPy and LiteLLM do not retry it
    assert error["status"] == "UPSTREAM_CERTIFICATE_INVALID"
    assert "certificate failed verification" in error["message"] and "SSL_CERT_FILE" in error["message"]
    assert report.unreachable == 2 and not report.saved and not cassette.exists()
    assert report.not_recorded[0].startswith("upstream unreachable: the upstream's TLS certificate failed")

    with ca.cert_pem.tempfile() as ca_file:  # what the message says to do
        monkeypatch.setenv("SSL_CERT_FILE", ca_file)
        exchange, fixed = record_one(upstream, cassette)
    assert exchange.status == 200 and fixed["forwarded"] == 1 and fixed["saved"]
    assert _interactions(cassette)[0]["request"]["uri"] == f"https://localhost{GENERATE}"  # loopback: no port


def test_https_proxy_tunnels_with_connect_and_requests_ca_bundle_is_honoured(
    tls_fake: tuple[_Relay, trustme.CA], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    front, ca = tls_fake
    tunnel = _Relay(front.port, connect=True)
    _serve(tunnel)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{tunnel.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    cassette = tmp_path / "tunnel.yaml"
    try:
        with ca.cert_pem.tempfile() as ca_file:
            monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_file)
            exchange, report = record_one(f"https://{REMOTE}:{front.port}", cassette)
    finally:
        tunnel.shutdown()
        tunnel.server_close()
    assert exchange.status == 200 and report["forwarded"] == 1 and report["saved"]
    assert [line.rsplit(" ", 1)[0] for line in tunnel.connects] == [f"CONNECT {REMOTE}:{front.port}"]  # one tunnel
    assert _interactions(cassette)[0]["request"]["uri"] == f"https://{REMOTE}:{front.port}{GENERATE}"
