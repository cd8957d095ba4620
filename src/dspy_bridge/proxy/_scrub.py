"""Keep keys out of HTTP cassettes: vcrpy ``before_record`` hooks, and a verifier for written files.

Layers, all applied before vcrpy matches or writes anything:

* vcrpy's own filters drop credential headers (``x-goog-api-key``, ``Authorization``, ...) and
  query parameters (``?key=``) — see ``vcr_filter_options``;
* ``Scrubber.request`` / ``Scrubber.response`` replace key-shaped strings in bodies, URIs and
  response headers, using the project's one set of patterns (``cassettes._scrub.redact_text``:
  ``AIza…``, ``ya29.…``, ``sk-…``, ``sk-ant-…``, bearer tokens), plus exact occurrences of the
  real key, whatever its shape.

``verify_http_cassette`` re-reads a written file and raises ``SecretLeak`` naming the file and
where, never the secret.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from dspy_bridge._exceptions import CassetteCorrupt, SecretLeak
from dspy_bridge.cassettes._scrub import redact_text
from dspy_bridge.proxy._constants import PLACEHOLDER_KEY

__all__ = [
    "CREDENTIAL_HEADERS",
    "CREDENTIAL_QUERY_PARAMS",
    "Scrubber",
    "find_http_secrets",
    "vcr_filter_options",
    "verify_http_cassette",
]

CREDENTIAL_HEADERS = ("x-goog-api-key", "authorization", "proxy-authorization", "x-api-key", "api-key", "cookie")
CREDENTIAL_QUERY_PARAMS = ("key", "api_key", "apikey", "access_token")
_SECRET_MARK = "<REDACTED:api-key>"
_MIN_EXACT = 8  # shorter "secrets" would mangle ordinary text
_KIND = re.compile(r"<REDACTED:([\w-]+)>")


def vcr_filter_options() -> dict[str, Any]:
    """vcrpy ``VCR(...)`` options that drop credential headers and query parameters."""
    return {
        "filter_headers": [(name, None) for name in CREDENTIAL_HEADERS],
        "filter_query_parameters": [(name, None) for name in CREDENTIAL_QUERY_PARAMS],
    }


class Scrubber:
    """vcrpy ``before_record_request`` / ``before_record_response`` hooks.

    ``secrets`` are exact strings (the real key) removed wherever they appear, even when they do
    not look like a key. vcrpy deep-copies a request before its hooks run, so the live request
    still carries the real key upstream.
    """

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        found = {s for s in secrets if s and len(s) >= _MIN_EXACT}
        self._secrets = sorted(found, key=len, reverse=True)

    def text(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, _SECRET_MARK)
        return redact_text(text)

    def body(self, body: Any) -> Any:
        if isinstance(body, str):
            return self.text(body)
        if isinstance(body, bytes | bytearray):
            try:
                return self.text(bytes(body).decode("utf-8")).encode("utf-8")
            except UnicodeDecodeError:  # binary: only the exact secrets can be found
                data = bytes(body)
                for secret in self._secrets:
                    data = data.replace(secret.encode(), _SECRET_MARK.encode())
                return data
        return body

    def request(self, request: Any) -> Any:
        """Hook for vcrpy ``Request`` objects (already a copy)."""
        request.uri = self.text(request.uri)
        request.body = self.body(request.body)
        request.headers = {name: self._header_value(value) for name, value in request.headers.items()}
        return request

    def response(self, response: dict[str, Any]) -> dict[str, Any]:
        """Hook for vcrpy response dicts (already a copy)."""
        body = response.get("body")
        if isinstance(body, dict) and "string" in body:
            body["string"] = stable_response_ids(self.body(body["string"]))
        headers = response.get("headers")
        if isinstance(headers, dict):
            response["headers"] = {
                name: self._header_value(value) for name, value in headers.items() if not volatile_header(name)
            }
        return response

    def _header_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list | tuple):
            return [self.text(v) if isinstance(v, str) else v for v in value]
        return value


#: Response headers that change on every call (or describe the transfer, not the answer): never recorded, so
#: re-recording the same answer gives the same file. The proxy computes the framing of a replayed answer itself.
VOLATILE_HEADERS = frozenset(
    {
        "date",
        "server-timing",
        "alt-svc",
        "transfer-encoding",
        "content-length",
        "connection",
        "keep-alive",
        "age",
        "expires",
    }
)


_RESPONSE_ID = re.compile(r'"responseId"(\s*):(\s*)"[^"\\]*"')


def stable_response_ids(body: Any) -> Any:
    """Gemini's ``responseId`` (new on every call) replaced by a digest of the rest of the answer, so re-recording
    the same answer writes the same bytes; one stream's events keep one id between them. DSPy never reads it."""
    raw = body.decode("utf-8") if isinstance(body, bytes | bytearray) else body
    if not isinstance(raw, str) or '"responseId"' not in raw:
        return body
    import hashlib

    digest = hashlib.sha256(_RESPONSE_ID.sub('"responseId":""', raw).encode("utf-8")).hexdigest()[:22]
    stable = _RESPONSE_ID.sub(lambda m: f'"responseId"{m.group(1)}:{m.group(2)}"recorded-{digest}"', raw)
    return stable.encode("utf-8") if isinstance(body, bytes | bytearray) else stable


def volatile_header(name: str) -> bool:
    lower = name.lower()
    return lower in VOLATILE_HEADERS or lower.startswith("x-")


# -- verify ------------------------------------------------------------------------------------


def _finding(where: str, original: str, redacted: str) -> str:
    kinds = sorted(set(_KIND.findall(redacted)) - set(_KIND.findall(original))) or ["secret"]
    return f"{where}: {', '.join(kinds)}"


def _check_text(where: str, text: str, secrets: list[str]) -> Iterator[str]:
    scrubber = Scrubber(secrets)
    redacted = scrubber.text(text)
    if redacted != text:
        yield _finding(where, text, redacted)


def _walk(node: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, str):
        yield where, node
    elif isinstance(node, bytes):
        yield where, node.decode("utf-8", errors="replace")
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(key, f"{where} (key)")
            yield from _walk(value, f"{where}.{key}")
    elif isinstance(node, list | tuple):
        for index, value in enumerate(node):
            yield from _walk(value, f"{where}[{index}]")


def _credential_fields(data: dict[str, Any]) -> Iterator[str]:
    """Credential headers or query parameters that survived with a real-looking value."""
    harmless = {"", PLACEHOLDER_KEY}
    for index, interaction in enumerate(data.get("interactions") or []):
        request = interaction.get("request") if isinstance(interaction, dict) else None
        if not isinstance(request, dict):
            continue
        for name, values in (request.get("headers") or {}).items():
            if str(name).lower() in CREDENTIAL_HEADERS:
                listed = values if isinstance(values, list) else [values]
                if any(str(v) not in harmless and not str(v).startswith("<REDACTED") for v in listed):
                    yield f"interactions[{index}].request.headers.{name}: credential header kept"
        query = parse_qsl(urlsplit(str(request.get("uri", ""))).query, keep_blank_values=True)
        for name, value in query:
            if name.lower() in CREDENTIAL_QUERY_PARAMS and value not in harmless and not value.startswith("<REDACTED"):
                yield f"interactions[{index}].request.uri: ?{name}= kept"


def find_http_secrets(path: str | os.PathLike[str], *, secrets: Iterable[str] = ()) -> list[str]:
    """Every key-shaped string or kept credential in one HTTP cassette, as ``location: kind`` lines."""
    from vcr.serializers import yamlserializer

    file = Path(path)
    exact = [s for s in secrets if s and len(s) >= _MIN_EXACT]
    text = file.read_text(encoding="utf-8", errors="replace")
    findings = [f for n, line in enumerate(text.splitlines(), 1) for f in _check_text(f"line {n}", line, exact)]
    try:
        data = yamlserializer.deserialize(text)
    except Exception as exc:  # any YAML or constructor error means the file is unreadable
        raise CassetteCorrupt(f"{file}: not a readable HTTP cassette ({exc}); delete it and re-record") from exc
    if isinstance(data, dict):
        for where, value in _walk(data, "cassette"):
            findings.extend(_check_text(where, value, exact))
        findings.extend(_credential_fields(data))
    return findings


def verify_http_cassette(path: str | os.PathLike[str], *, secrets: Iterable[str] = ()) -> None:
    """Raise ``SecretLeak`` if an HTTP cassette holds anything key-shaped (or one of ``secrets``).

    Scans the raw text and every parsed string (so escaped or folded keys are caught) and checks
    that no credential header or ``?key=`` survived. The message never contains the secret.
    """
    findings = find_http_secrets(path, secrets=secrets)
    if findings:
        shown = "\n".join(f"  {finding}" for finding in findings[:20])
        more = f"\n  ... and {len(findings) - 20} more" if len(findings) > 20 else ""
        raise SecretLeak(
            f"{len(findings)} secret-looking value(s) in HTTP cassette {path}:\n{shown}{more}\n"
            "Delete the cassette and re-record it through the proxy (it scrubs by default), "
            "and rotate any real key that was exposed.",
            path=str(path),
            findings=findings,
        )
