"""The cassette proxy process: ``python -m dspy_bridge.proxy`` (started by ``ProxyProcess``).

    host ──stdin: one JSON config line (key, control token, upstream), then held open──┐
         ◄─stdout: {"port", "base_url", "pid"} once ready                            │
                                                                                      ▼
    DSPy worker ──HTTP──► ThreadingHTTPServer 127.0.0.1:PORT ──► fault queue (429/500/503, delay, drop)
    (api_base=…/v1beta,          │                                └─► RateLimiter ─► CassetteSession ─► vcrpy ─► upstream
     placeholder key)            └─ /__bridge__/* control (token): cassette, faults, stats

The proxy drops whatever key a worker sends and adds the real one on the upstream call only; it
dies with its host (stdin EOF, ``PR_SET_PDEATHSIG``). An open cassette is written only when the
host ejects it; a host that vanishes mid-test leaves the file as it was.
"""

from __future__ import annotations

import argparse
import hmac
import json
import math
import os
import signal
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit

from dspy_bridge._exceptions import CassetteCorrupt, UsageError
from dspy_bridge._gemini import quota_details
from dspy_bridge._http import LoopbackHandler, LoopbackServer, stop_on_signals, watch_stdin_eof
from dspy_bridge.proxy._constants import (
    CONTROL_PREFIX,
    DEFAULT_UPSTREAM,
    DEFAULT_UPSTREAM_TIMEOUT,
    ERROR_HEADER,
    TOKEN_HEADER,
)
from dspy_bridge.proxy._faults import Fault, FaultQueue
from dspy_bridge.proxy._ratelimit import QUOTA_SPENT, RateLimiter, RateLimitPolicy
from dspy_bridge.proxy._scrub import CREDENTIAL_HEADERS, CREDENTIAL_QUERY_PARAMS
from dspy_bridge.proxy._session import CassetteOptions, CassetteSession, Exchange
from dspy_bridge.proxy._sse import is_event_stream, rechunk_gemini_events, split_events
from dspy_bridge.proxy._upstream import Upstream

__all__ = ["ProxyConfig", "ProxyState", "main"]

_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "te", "trailer", "upgrade", "host",
     "proxy-connection", "expect"}
)  # fmt: skip
_NOT_FORWARDED = _HOP_BY_HOP | set(CREDENTIAL_HEADERS) | {"accept-encoding"}
_STAT_NAMES = ("requests", "forwarded", "replayed", "faults", "misses", "refused", "upstream_errors")


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """What the host tells the proxy on stdin (never argv: it holds the key and the token)."""

    control_token: str
    upstream: str = DEFAULT_UPSTREAM
    api_key: str | None = None
    secrets: tuple[str, ...] = ()  # exact values scrubbed besides the key (the host's other secrets)
    upstream_timeout: float = DEFAULT_UPSTREAM_TIMEOUT
    parent_pid: int | None = None
    rate_limit: RateLimitPolicy = field(default_factory=RateLimitPolicy)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProxyConfig:
        token = data.get("control_token")
        if not token:
            raise UsageError("the proxy config needs a control_token")
        return cls(
            control_token=str(token),
            upstream=str(data.get("upstream") or DEFAULT_UPSTREAM),
            api_key=data.get("api_key") or None,
            secrets=tuple(str(secret) for secret in data.get("secrets") or ()),
            upstream_timeout=float(data.get("upstream_timeout", DEFAULT_UPSTREAM_TIMEOUT)),
            parent_pid=data.get("parent_pid"),
            rate_limit=RateLimitPolicy(
                float(data.get("rate_limit_max_wait", 60.0)), int(data.get("rate_limit_retries", 3))
            ),
        )


class ProxyState:
    """What every handler thread shares: the open cassette, queued faults and counters."""

    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        self.upstream = Upstream.parse(config.upstream)
        self.faults = FaultQueue()
        self.closing = threading.Event()
        self.limiter = RateLimiter(config.rate_limit, self.closing)
        self._lock = threading.Lock()
        self._session: CassetteSession | None = None
        self._stats: Counter[str] = Counter()

    @property
    def session(self) -> CassetteSession | None:
        return self._session

    def count(self, name: str) -> None:
        with self._lock:
            self._stats[name] += 1

    def use_cassette(self, options: CassetteOptions) -> None:
        with self._lock:
            if self._session is not None:
                raise _Conflict(
                    f"cassette {self._session.options.path} is still in use; eject it before using {options.path}"
                )
            session = CassetteSession(
                options,
                upstream=self.upstream,
                api_key=self.config.api_key,
                timeout=self.config.upstream_timeout,
                secrets=self.config.secrets,
            )
            session.open()
            self._session = session

    def eject(self, *, save: bool = True) -> dict[str, Any]:
        with self._lock:
            session, self._session = self._session, None
        if session is None:
            raise _Conflict("no cassette is in use")
        return {**session.close(save=save), **self.limiter.report()}

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            stats: dict[str, Any] = {name: self._stats[name] for name in _STAT_NAMES}
            stats["cassette"] = self._session.options.path if self._session else None
        stats["pending_faults"] = len(self.faults)
        return stats

    def shutdown(self) -> None:
        """Abnormal or final stop: an open cassette is discarded, not half-written."""
        self.closing.set()
        if self._session is not None:
            try:
                self.eject(save=False)
            except _Conflict:  # ejected by a control request in the meantime
                pass


class _Conflict(Exception):
    """A control request that does not fit the current state (answered with 409)."""


class _Server(LoopbackServer):
    block_on_close = False
    request_queue_size = 128  # a pool's workers may all connect at once

    def __init__(self, address: tuple[str, int], state: ProxyState, verbose: bool) -> None:
        self.state = state
        super().__init__(address, _Handler, verbose=verbose)


class _ChunkedRelay:
    """Relays a streamed answer to the worker, one HTTP chunk per SSE event."""

    def __init__(self, handler: _Handler) -> None:
        self._handler = handler
        self.started = False
        self.gone = False  # the worker hung up; keep reading upstream so the recording is whole

    def head(self, status: int, reason: str, headers: list[tuple[str, str]]) -> None:
        kept = [(name, value) for name, value in headers if name.lower() not in _HOP_BY_HOP]
        self._handler.start_chunks(status, kept, reason, bare=True)
        self.started = True

    def chunk(self, data: bytes) -> None:
        if self.gone:
            return
        try:
            self._handler.write_chunk(data)
        except OSError:
            self.gone = True

    def finish(self) -> None:
        if not self.gone:
            try:
                self._handler.end_chunks()
            except OSError:
                self.gone = True
        if self.gone:
            self._handler.close_connection = True


class _Handler(LoopbackHandler):
    disable_nagle_algorithm = True  # head and body are separate writes: no 40 ms delayed-ACK stall
    server_version = "dspy-bridge-proxy"
    timeout = 300  # idle keep-alive connections end on their own

    @property
    def state(self) -> ProxyState:
        return cast(_Server, self.server).state

    def dispatch(self, body: bytes) -> None:
        if urlsplit(self.path).path.startswith(CONTROL_PREFIX):
            self._control(body)
        else:
            self._proxy(body)

    def _send_made_up_error(self, status: int, grpc_status: str, message: str, kind: str) -> None:
        """An answer the proxy makes up itself, in Gemini's error shape, marked by ``ERROR_HEADER``."""
        message = f"dspy-bridge cassette proxy: {message}"
        self.send_gemini_error(status, message, grpc_status=grpc_status, headers={ERROR_HEADER: kind})

    # -- proxying ----------------------------------------------------------------------------

    def _upstream_target(self) -> str:
        """Path and query for upstream, without any key the worker sent."""
        split = urlsplit(self.path)
        pairs = parse_qsl(split.query, keep_blank_values=True)
        kept = [(k, v) for k, v in pairs if k.lower() not in CREDENTIAL_QUERY_PARAMS]
        query = split.query if len(kept) == len(pairs) else urlencode(kept)
        return split.path + (f"?{query}" if query else "")

    def _forward_headers(self) -> dict[str, str]:
        headers = {name: value for name, value in self.headers.items() if name.lower() not in _NOT_FORWARDED}
        headers["Accept-Encoding"] = "identity"  # readable cassettes, and SSE relayed as it comes
        return headers

    def _proxy(self, body: bytes) -> None:
        state = self.state
        state.count("requests")
        fault = state.faults.pop()
        if fault is not None:
            state.count("faults")
            if self._serve_fault(fault):
                return
        session = state.session
        if session is None:
            state.count("refused")
            self._send_made_up_error(
                409, "NO_CASSETTE", f"no cassette is in use, so {self.command} {self._upstream_target()} "
                "cannot be answered (the host must call use_cassette first)", "no-cassette"
            )  # fmt: skip
            return
        relay = _ChunkedRelay(self)
        target, headers = self._upstream_target(), self._forward_headers()
        try:
            what = f"{self.command} {target}"
            if state.limiter.spent and session.records(self.command, target, headers, body):
                exchange = state.limiter.refuse(what)
            else:
                call = lambda: session.exchange(self.command, target, headers, body, relay)  # noqa: E731
                exchange = state.limiter.run(what, call, record_errors=session.options.record_errors)
        except RuntimeError:  # ejected between our lookup and the exchange
            state.count("refused")
            self._send_made_up_error(409, "NO_CASSETTE", "the cassette was ejected mid-request", "no-cassette")
            return
        self._answer(exchange, relay, session.options.stream_chunks)

    def _serve_fault(self, fault: Fault) -> bool:
        """Serve the fault; False when it was only a delay and the request proceeds."""
        if fault.delay and self.state.closing.wait(fault.delay):
            self.abort()
            return True
        if fault.drop:
            self.abort()
            return True
        if fault.status is not None:
            headers = {ERROR_HEADER: "fault"}
            if fault.status == 429 and fault.retry_after is not None:  # what the proxy itself sends after
                headers["Retry-After"] = str(math.ceil(fault.retry_after))  # an upstream 429 (_ratelimit)
            model = urlsplit(self.path).path.rpartition("/")[2].partition(":")[0]
            details = quota_details(model) if fault.status == 429 else None
            self.send_gemini_error(
                fault.status, fault.message, details=details, retry_after=fault.retry_after, headers=headers
            )
            return True
        return False

    def _answer(self, exchange: Exchange, relay: _ChunkedRelay, stream_chunks: int | None = None) -> None:
        state = self.state
        if exchange.kind in ("replayed", "forwarded"):
            state.count(exchange.kind)
            if exchange.streamed:
                relay.finish()
            else:
                self._send_recorded(exchange, stream_chunks if exchange.kind == "replayed" else None)
        elif exchange.kind == "miss":
            state.count("misses")
            self._send_made_up_error(409, "CASSETTE_MISS", exchange.message, "cassette-miss")
        elif exchange.kind == QUOTA_SPENT:  # "Retry-After: 0": the proxy answers the same at once, don't wait
            state.count("refused")
            message = f"dspy-bridge cassette proxy: {exchange.message}"
            headers = {ERROR_HEADER: QUOTA_SPENT, "Retry-After": "0"}
            self.send_gemini_error(429, message, grpc_status="RESOURCE_EXHAUSTED", headers=headers)
        elif exchange.kind == "no-key":
            state.count("refused")
            self._send_made_up_error(409, "NO_API_KEY", exchange.message, "no-key")
        elif exchange.kind == "tls-error":  # 400: neither DSPy nor LiteLLM retries it; waiting cannot fix it
            state.count("upstream_errors")
            self._send_made_up_error(400, "UPSTREAM_CERTIFICATE_INVALID", exchange.message, "upstream-tls")
        else:
            state.count("upstream_errors")
            if exchange.streamed:  # the head is out: all we can do is cut the stream
                self.abort()
            else:
                self._send_made_up_error(502, "UNAVAILABLE", exchange.message, "upstream-unreachable")

    def _send_recorded(self, exchange: Exchange, stream_chunks: int | None = None) -> None:
        """Send an answer vcrpy returned; an event stream goes out one chunk per event (its text re-cut
        into ``stream_chunks`` characters per event when a test asks)."""
        headers = [(n, v) for n, v in exchange.headers if n.lower() not in _HOP_BY_HOP]
        if is_event_stream(headers):
            self.start_chunks(exchange.status, headers, exchange.reason, bare=True)
            events, rest = split_events(exchange.body)
            if stream_chunks:
                events = rechunk_gemini_events(events, stream_chunks)
            for event in [*events, rest] if rest else events:
                self.write_chunk(event)
            self.end_chunks()
            return
        self.send_head(exchange.status, headers, exchange.reason, bare=True)
        self.send_header("Content-Length", str(len(exchange.body)))
        self.end_headers()
        self.wfile.write(exchange.body)

    # -- control -----------------------------------------------------------------------------

    def _control(self, raw: bytes) -> None:
        token = self.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(token.encode(), self.state.config.control_token.encode()):
            self.send_json(403, {"error": {"type": "Forbidden", "message": "missing or wrong control token"}})
            return
        split = urlsplit(self.path)
        route = (self.command, split.path.removeprefix(CONTROL_PREFIX).strip("/"))
        state = self.state
        try:
            data = json.loads(raw) if raw else {}
            if route == ("POST", "cassette"):
                _VCR_IMPORTED.wait(timeout=60)  # never import vcrpy from two threads at once
                options = CassetteOptions.from_json(data)
                state.use_cassette(options)
                out: dict[str, Any] = {"cassette": options.to_json()}
            elif route == ("DELETE", "cassette"):
                save = dict(parse_qsl(split.query)).get("save", "1") != "0"
                out = {"report": state.eject(save=save)}
            elif route == ("POST", "faults"):
                faults = [Fault.from_json(item) for item in data.get("faults", [])]
                out = {"pending": state.faults.extend(faults)}
            elif route == ("DELETE", "faults"):
                out = {"cleared": state.faults.clear()}
            elif route == ("GET", "stats"):
                out = state.snapshot()
            else:
                self.send_json(404, {"error": {"type": "NotFound", "message": f"no control endpoint {route}"}})
                return
        except CassetteCorrupt as exc:
            self.send_json(422, {"error": {"type": "CassetteCorrupt", "message": exc.message}})
            return
        except _Conflict as exc:
            self.send_json(409, {"error": {"type": "UsageError", "message": str(exc)}})
            return
        except (UsageError, ValueError, KeyError, TypeError) as exc:
            self.send_json(400, {"error": {"type": "UsageError", "message": str(exc)}})
            return
        except Exception as exc:  # a proxy bug must reach the host as an answer, not a dropped connection
            self.send_json(500, {"error": {"type": "Internal", "message": f"{type(exc).__name__}: {exc}"}})
            raise
        self.send_json(200, out)


# -- process -----------------------------------------------------------------------------------


def _die_with_parent(parent_pid: int | None) -> None:
    """SIGTERM when the host dies (Linux), and leave now if it is already gone."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)


_VCR_IMPORTED = threading.Event()


def _warm_up() -> None:
    """Import vcrpy (~0.5 s) while the host starts its workers, not in the first ``use_cassette``.

    ``use_cassette`` waits for this: two threads importing vcrpy's modules at once can see a partially
    initialised module (seen as a dropped control connection under pytest-xdist).
    """
    try:
        import vcr.patch  # noqa: F401
    finally:
        _VCR_IMPORTED.set()


def main(argv: list[str] | None = None) -> int:
    """Read the config line from stdin, serve, print the address; stop on stdin EOF or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m dspy_bridge.proxy", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--verbose", action="store_true", help="log each request to stderr")
    args = parser.parse_args(argv)

    line = sys.stdin.buffer.readline()
    try:
        config = ProxyConfig.from_json(json.loads(line))
    except (ValueError, UsageError) as exc:
        print(f"dspy-bridge proxy: bad config line on stdin: {exc}", file=sys.stderr)
        return 2
    _die_with_parent(config.parent_pid)
    stop = threading.Event()
    stop_on_signals(stop)

    state = ProxyState(config)
    server = _Server((args.host, args.port), state, args.verbose)
    threading.Thread(target=server.serve_forever, name="proxy-server", daemon=True).start()
    threading.Thread(target=watch_stdin_eof, args=(stop,), name="stdin-watch", daemon=True).start()
    port = server.server_port
    ready = {"port": port, "base_url": f"http://{args.host}:{port}/v1beta", "pid": os.getpid()}
    print(json.dumps(ready), flush=True)
    threading.Thread(target=_warm_up, name="warm-up", daemon=True).start()
    stop.wait()
    state.shutdown()
    server.socket.close()  # handler threads are daemons: the process ends with this function
    return 0
