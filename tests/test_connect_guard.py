"""Offline means offline: the connect guard in real workers, seen from outside (real processes, real sockets).

The forbidden server is a plain TCP server on 127.0.0.1 that counts every connection it accepts, so "the
server saw nothing" is a count of zero. urllib and httpx run inside a real worker through a test-only
``probe`` command added by a prelude (user modules cannot run in a worker yet); the guard itself is the
production one, switched on by the production ``allow_hosts`` command. DSPy's own transport needs no help:
``configure_lm`` + ``execute_program`` is the ordinary path.
"""

from __future__ import annotations

import os
import secrets
import socket
import socketserver
import tempfile
import threading
import time
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from dspy_bridge._exceptions import HandlerError
from dspy_bridge.pool._config import PoolConfig
from dspy_bridge.pool._pool import Pool
from dspy_bridge.pool._spawn import Launcher, SpawnLauncher
from dspy_bridge.pool._zygote import ZygoteLauncher
from dspy_bridge.protocol._commands import CommandError, allow_hosts_args, split_host
from dspy_bridge.testing import FakeGemini, Reply
from workerproc import WorkerProc

pytest_plugins = ["pytester"]

FLASH = "gemini/gemini-2.5-flash"
KEY = "bridge-guard-" + secrets.token_hex(8)  # not key-shaped on purpose
TEST_ID = "tests/test_offline.py::test_reaches_out"

PROBE = """
import socket
import dspy_bridge.worker._real as _real

def _probe(self, args, session_id, context):
    kind, target = args["kind"], args["target"]
    try:
        if kind == "urllib":
            import urllib.request
            return {"ok": urllib.request.urlopen(target, timeout=5).status}
        if kind == "httpx":
            import httpx
            return {"ok": httpx.get(target, timeout=5).status_code}
        if kind == "unix":
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.connect(target)
                return {"ok": sock.recv(16).decode()}
        if kind == "lookup":
            return {"ok": len(socket.getaddrinfo(target, 443))}
    except Exception as exc:
        return {"error": f"{type(exc).__module__}.{type(exc).__name__}: {exc}"}
    raise ValueError(kind)

_real.DSPyHandlers.cmd_probe = _probe
"""


class _Counting(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.connections = 0
        super().__init__(("127.0.0.1", 0), _Answer)

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Answer(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        assert isinstance(self.server, _Counting)
        self.server.connections += 1
        self.request.recv(65536)
        self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")


@pytest.fixture
def forbidden() -> Iterator[_Counting]:
    server = _Counting()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    with FakeGemini(expected_key=KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def guarded(gemini: FakeGemini) -> Iterator[WorkerProc]:
    """A real worker whose guard allows only the fake Gemini (by name, 'localhost')."""
    with WorkerProc("real", prelude=PROBE) as worker:
        result = worker.call("allow_hosts", {"hosts": [f"localhost:{gemini.port}"]})
        assert result == {"guarded": True, "allowed": [f"localhost:{gemini.port}"]}
        yield worker


def _assert_names_everything(message: str, port: int, test: str | None = TEST_ID) -> None:
    assert f"127.0.0.1:{port}" in message
    if test is not None:
        assert test in message
    assert "allowed_hosts" in message and "bridge_allowed_hosts" in message
    assert "stub" in message and "cassette proxy" in message


# -- the host entries ---------------------------------------------------------------------------------------
def test_host_entries_are_checked_and_written_one_way() -> None:
    assert split_host("LocalHost:8080") == ("localhost", 8080)
    assert split_host("[::1]:99") == ("::1", 99) and split_host("::1") == ("::1", None)
    assert allow_hosts_args(["a.example", "a.example", "[::1]:5"]) == {"hosts": ["a.example", "[::1]:5"]}
    for bad in ("http://x:1", "x:0", "x:http", "", "[::1", "a b"):
        with pytest.raises(CommandError):
            split_host(bad)
    assert PoolConfig().allowed_hosts is None
    assert PoolConfig(allowed_hosts=["Proxy:80"]).allowed_hosts == ["proxy:80"]
    with pytest.raises(ValidationError, match="allowed_hosts"):
        PoolConfig(allowed_hosts=["https://proxy:443/"])


def test_a_mock_worker_answers_allow_hosts_without_a_guard() -> None:
    with WorkerProc("mock") as worker:
        assert worker.call("allow_hosts", {"hosts": ["x:1"]}) == {"guarded": False, "allowed": ["x:1"]}
        assert worker.error("allow_hosts", {"hosts": "x:1"})["type"] == "invalid_request"


# -- one real worker, through the production command --------------------------------------------------------
@pytest.mark.slow
def test_without_allowed_hosts_nothing_is_blocked_until_allow_hosts(forbidden: _Counting) -> None:
    url = f"http://127.0.0.1:{forbidden.port}/"
    with WorkerProc("real", prelude=PROBE) as worker:
        assert worker.call("get_stats")["allowed_hosts"] is None
        for kind in ("urllib", "httpx"):
            assert worker.call("probe", {"kind": kind, "target": url}) == {"ok": 200}
        assert forbidden.connections == 2
        worker.call("allow_hosts", {"hosts": []})  # on, allowing no host at all
        assert "blocked" in worker.call("probe", {"kind": "urllib", "target": url})["error"]
        assert forbidden.connections == 2


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["urllib", "httpx"])
def test_http_clients_in_a_worker_get_the_guards_error(kind: str, guarded: WorkerProc, forbidden: _Counting) -> None:
    result = guarded.call(
        "probe", {"kind": kind, "target": f"http://127.0.0.1:{forbidden.port}/"}, context={"test_id": TEST_ID}
    )
    error = result["error"]
    expected = {"urllib": "urllib.error.URLError", "httpx": "httpx.ConnectError"}[kind]
    assert error.startswith(expected), error  # each library reports it as the connection failure it is
    _assert_names_everything(error, forbidden.port)
    assert forbidden.connections == 0


@pytest.mark.slow
def test_dspys_own_transport_is_blocked_at_once_and_not_retried(guarded: WorkerProc, forbidden: _Counting) -> None:
    session = "s-" + secrets.token_hex(4)
    api_base = f"http://127.0.0.1:{forbidden.port}/v1beta"
    guarded.call("configure_lm", {"model": FLASH, "api_base": api_base, "api_key": "x"}, session_id=session)
    program_id = guarded.call("create_program", {"signature": "question -> answer"}, session_id=session)["program_id"]
    started = time.monotonic()
    error = guarded.error(
        "execute_program",
        {"program_id": program_id, "inputs": {"question": "anyone there?"}},
        session_id=session,
        context={"test_id": TEST_ID},
    )
    elapsed = time.monotonic() - started
    assert error["type"] == "lm_error" and error["retryable"] is False
    _assert_names_everything(error["message"], forbidden.port)
    assert error["details"]["connection_blocked"] == {"host": "127.0.0.1", "port": forbidden.port, "test": TEST_ID}
    assert forbidden.connections == 0
    assert elapsed < 1.0, f"DSPy's retry loop waited {elapsed:.1f} s on a blocked connection (1+2+4 s by default)"


@pytest.mark.slow
def test_allowed_hosts_unix_sockets_and_localhost_spellings_still_work(guarded: WorkerProc, gemini: FakeGemini) -> None:
    gemini.reset()
    session = "s-" + secrets.token_hex(4)
    api_base = f"http://127.0.0.1:{gemini.port}/v1beta"  # allowed as 'localhost:PORT': one machine, any spelling
    guarded.call(
        "configure_lm",
        {"model": FLASH, "api_base": api_base, "api_key": KEY, "cache": False, "num_retries": 0},
        session_id=session,
    )
    program_id = guarded.call("create_program", {"signature": "question -> answer"}, session_id=session)["program_id"]
    gemini.enqueue(Reply({"answer": "reached"}))
    result = guarded.call(
        "execute_program", {"program_id": program_id, "inputs": {"question": "q"}}, session_id=session
    )
    assert result["outputs"] == {"answer": "reached"} and gemini.request_count == 1

    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "s")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind(path)
            listener.listen(1)

            def serve() -> None:
                connection, _ = listener.accept()
                with connection:
                    connection.sendall(b"unix ok")

            thread = threading.Thread(target=serve, daemon=True)
            thread.start()
            assert guarded.call("probe", {"kind": "unix", "target": path}) == {"ok": "unix ok"}
            thread.join(5)


@pytest.mark.slow
def test_a_lookup_of_a_forbidden_name_fails_before_any_dns_query(guarded: WorkerProc) -> None:
    error = guarded.call("probe", {"kind": "lookup", "target": "api.example.com"}, context={"test_id": TEST_ID})[
        "error"
    ]
    assert error.startswith("dspy_bridge.worker._guard.ConnectionBlocked")
    assert "api.example.com:443" in error and TEST_ID in error and "bridge_allowed_hosts" in error


# -- through the pool: spawned and zygote-forked workers ------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["spawn", "zygote"])
async def test_the_pool_guards_every_worker_from_its_start(
    strategy: str, gemini: FakeGemini, forbidden: _Counting
) -> None:
    gemini.reset()
    config = PoolConfig.model_validate({"mode": "real", "size": 1, "start_strategy": strategy, "allowed_hosts": []})
    launcher: Launcher = ZygoteLauncher(config, daemon="never") if strategy == "zygote" else SpawnLauncher(config)
    async with Pool(config, launcher=launcher) as pool:
        if isinstance(launcher, ZygoteLauncher):
            assert launcher.stats()["forked"] == 1
        stats = await pool.request("get_stats")
        assert stats["allowed_hosts"] == []  # the guard was on before the first request
        await pool.configure_lm(
            FLASH, session_id="s-out", api_key="x", api_base=f"http://127.0.0.1:{forbidden.port}/v1beta"
        )
        program_id = await pool.create_program("question -> answer", session_id="s-out")
        with pytest.raises(HandlerError) as caught:
            await pool.execute(program_id, {"question": "q"}, session_id="s-out", context={"test_id": TEST_ID})
        assert caught.value.type == "lm_error" and caught.value.retryable is False
        _assert_names_everything(str(caught.value), forbidden.port)
        assert forbidden.connections == 0

        # Allowed later (as the plugin does once its proxy runs): every worker, and every replacement.
        await pool.allow_hosts([f"127.0.0.1:{gemini.port}"])
        await pool.configure_lm(FLASH, session_id="s-in", api_key=KEY, api_base=gemini.base_url, cache=False)
        program_id = await pool.create_program("question -> answer", session_id="s-in")
        gemini.enqueue(Reply({"answer": "through"}), times=2)
        result = await pool.execute(program_id, {"question": "q"}, session_id="s-in")
        assert result["outputs"] == {"answer": "through"}
        worker = pool.workers()[0]
        worker.kill("test: the replacement must get the allowed hosts before its first request")
        result = await pool.execute(program_id, {"question": "q"}, session_id="s-in")
        assert result["outputs"] == {"answer": "through"} and pool.workers()[0] is not worker
        assert (await pool.request("get_stats"))["allowed_hosts"] == [f"127.0.0.1:{gemini.port}"]


# -- the plugin: real pools are guarded; the proxy is allowed; bridge_allowed_hosts allows more ----------------
FETCHER_MODULE = """
import urllib.request

import dspy


class Fetcher(dspy.Module):
    \"\"\"A retriever in user code: it reads a URL, no LM involved.\"\"\"

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url

    def forward(self, question: str) -> dspy.Prediction:
        with urllib.request.urlopen(self.url, timeout=5) as response:
            return dspy.Prediction(answer=response.read().decode())
"""

RETRIEVER_TEST = """
import http.server
import threading

import pytest

HITS = []


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        HITS.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"from elsewhere")

    def log_message(self, *args):
        pass


@pytest.mark.integration
def test_through_the_proxy(bridge):
    bridge.configure_lm("gemini/gemini-2.5-flash")
    assert bridge.run("question -> answer", question="via proxy?")["answer"]


@pytest.mark.integration
def test_retriever(bridge):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        bridge.configure_lm("gemini/gemini-2.5-flash")
        url = f"http://127.0.0.1:{server.server_port}/doc"
        program = bridge.create_program(module="fetcher:Fetcher", kwargs={"url": url})
        try:
            print("ANSWER", bridge.execute(program, question="q")["answer"])
        finally:
            print("HITS", len(HITS))
    finally:
        server.shutdown()
"""


@pytest.mark.slow
def test_the_plugin_guards_real_workers_and_bridge_allowed_hosts_opens_a_host(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "DSPY_BRIDGE_RECORD", "DSPY_BRIDGE_ALLOWED_HOSTS"):
        monkeypatch.delenv(name, raising=False)
    pytester.makepyfile(fetcher=FETCHER_MODULE, test_offline=RETRIEVER_TEST)
    pytester.makeini("[pytest]\nbridge_allowed_modules = fetcher\n")
    args = ("-p", "no:cacheprovider", "-s", "--bridge-record=all", "--bridge-upstream=fake")
    result = pytester.runpytest_subprocess(*args, timeout=600)
    result.assert_outcomes(passed=1, failed=1)  # the proxy is reachable; the retriever's host is not
    output = result.stdout.str()
    assert "HITS 0" in output  # the server saw nothing
    result.stdout.fnmatch_lines(["*blocked a connection to 127.0.0.1:*test_offline.py::test_retriever*"])
    assert "bridge_allowed_hosts" in output

    pytester.makeini("[pytest]\nbridge_allowed_modules = fetcher\nbridge_allowed_hosts = 127.0.0.1\n")
    result = pytester.runpytest_subprocess(*args, timeout=600)
    result.assert_outcomes(passed=2)
    assert "ANSWER from elsewhere" in result.stdout.str() and "HITS 1" in result.stdout.str()
