"""HTTP plumbing shared by our two loopback servers (the cassette proxy and the fake Gemini)."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler

__all__ = ["read_request_body"]


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
