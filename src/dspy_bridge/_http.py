"""The loopback-HTTP base shared by our two servers: the cassette proxy and the fake Gemini.

Both are ``ThreadingHTTPServer``s on 127.0.0.1 that speak HTTP/1.1 keep-alive to DSPy/LiteLLM,
answer every method through one dispatch, send JSON (often Gemini's error shape), relay chunked
streams, sometimes cut a connection on purpose, and, run as their own process, stop on SIGTERM,
SIGINT or EOF on the stdin pipe their parent holds. That plumbing lives here once; each server
keeps only what it means (routes, cassettes, scripts).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from dspy_bridge._gemini import gemini_error_body

__all__ = [
    "JSON_CONTENT_TYPE",
    "Headers",
    "LoopbackHandler",
    "LoopbackServer",
    "read_request_body",
    "stop_on_signals",
    "watch_stdin_eof",
]

JSON_CONTENT_TYPE = "application/json; charset=UTF-8"

#: Response headers: a map, or pairs when a name may repeat (a relayed upstream answer).
Headers = Mapping[str, str] | Sequence[tuple[str, str]]


def read_request_body(handler: BaseHTTPRequestHandler) -> bytes:
    """The request body, whether sent with Content-Length or chunked transfer encoding."""
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        data = bytearray()
        while size := int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16):
            data += handler.rfile.read(size)
            handler.rfile.readline()
        while handler.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
            pass
        return bytes(data)
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length > 0 else b""


class LoopbackServer(ThreadingHTTPServer):
    """A threading server that knows its open connections, so closing it can cut them.

    ``verbose`` turns on the handler's per-request log lines (stderr).
    """

    daemon_threads = True
    # socketserver's default backlog is 5: a burst of parallel clients (an xdist run, a threaded
    # evaluation) on a loaded machine then sees refused connections before the accept loop catches up.
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], *, verbose: bool = False
    ) -> None:
        self.verbose = verbose
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        """Shut down every open connection (handlers blocked on them return)."""
        with self.connections_lock:
            open_now = list(self.connections)
        for conn in open_now:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:  # already closed by the peer or by its handler
                pass


class LoopbackHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 handler: every method goes to ``dispatch(body)``; helpers for JSON, errors, chunks.

    Subclasses implement ``dispatch`` and may set ``default_headers`` (sent with every answer).
    """

    protocol_version = "HTTP/1.1"
    sys_version = ""
    default_headers: ClassVar[dict[str, str]] = {}

    def dispatch(self, body: bytes) -> None:
        raise NotImplementedError

    def do_GET(self) -> None:
        self.dispatch(read_request_body(self))

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        if getattr(self.server, "verbose", False):
            super().log_message(format, *args)

    # -- answers -------------------------------------------------------------------------------

    def send_head(
        self, status: int, headers: Headers | None = None, reason: str | None = None, *, bare: bool = False
    ) -> None:
        """Status line and headers (``default_headers`` first); the caller ends or extends them.

        ``bare``: no ``Server``/``Date`` of our own (relaying a recorded answer that has its own).
        """
        if bare:
            self.send_response_only(status, reason)
        else:
            self.send_response(status, reason)
        pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
        for name, value in [*self.default_headers.items(), *pairs]:
            self.send_header(name, value)

    def send_body(
        self,
        status: int,
        data: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        content_type: str = JSON_CONTENT_TYPE,
        partial: bool = False,
    ) -> None:
        """A whole answer with Content-Length; ``partial`` sends half the body, then cuts the connection."""
        self.send_head(status, {"Content-Type": content_type, **(headers or {})})
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2] if partial else data)
        if partial:
            self.abort()

    def send_json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        """``payload`` as indented JSON."""
        self.send_body(status, json.dumps(payload, indent=2).encode() + b"\n", headers=headers)

    def send_gemini_error(
        self,
        status: int,
        message: str | None = None,
        *,
        grpc_status: str | None = None,
        details: list[dict[str, Any]] | None = None,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """An error in Gemini's shape (``_gemini.gemini_error_body``)."""
        body = gemini_error_body(status, message, grpc_status=grpc_status, details=details, retry_after=retry_after)
        self.send_json(status, body, headers)

    def start_chunks(
        self, status: int, headers: Headers | None = None, reason: str | None = None, *, bare: bool = False
    ) -> None:
        """Head of a chunked answer; follow with ``write_chunk`` calls and ``end_chunks``."""
        self.send_head(status, headers, reason, bare=bare)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def write_chunk(self, data: bytes) -> None:
        if data:  # an empty chunk would end the stream
            self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data))

    def end_chunks(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    def abort(self) -> None:
        """Cut this connection without (the rest of) an answer."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:  # the client already went away
            pass


# -- running as a process ------------------------------------------------------------------------


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set ``stop`` (call from the main thread)."""
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())


def watch_stdin_eof(stop: threading.Event) -> None:
    """Set ``stop`` when stdin reaches EOF: the parent holding our stdin pipe closed it or died.

    Blocks; run it on a daemon thread.
    """
    try:
        fd = sys.stdin.fileno()
        while os.read(fd, 65536):
            pass
    except (OSError, ValueError):
        pass
    stop.set()
