"""One open HTTP cassette: every proxied call goes through ``http.client`` inside vcrpy.

    handler ──exchange()──► [session lock] ──► http.client.HTTP(S)Connection  (patched by vcrpy
                                                   │                              while open)
                       replay: vcrpy answers from the cassette, nothing leaves the machine
                       record: vcrpy sends upstream, records; _TeeResponse relays SSE events
                               to the worker as they arrive

vcrpy patches ``http.client`` process-wide while a cassette is open, which is why this runs in the
proxy process and nowhere else, and why exchanges are serialised: vcrpy's ``Cassette`` is not
thread-safe. Record modes, matchers and the cassette format are vcrpy's; this module adds the
``rewrite`` mode (vcrpy ``all`` + ``drop_unused_requests``), a ``body`` matcher that can ignore
volatile JSON fields, SSE events kept as a list, scrubbing hooks and the atomic persister.
"""

from __future__ import annotations

import copy
import http.client
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from dspy_bridge._exceptions import UsageError
from dspy_bridge._modes import RecordMode
from dspy_bridge._secrets import key_env_hint
from dspy_bridge.proxy._constants import DEFAULT_MATCH_ON
from dspy_bridge.proxy._persister import AtomicPersister
from dspy_bridge.proxy._scrub import Scrubber, vcr_filter_options
from dspy_bridge.proxy._serializer import ReadableYaml
from dspy_bridge.proxy._sse import EventFramer, events_to_storage, is_event_stream, storage_to_body

__all__ = ["CassetteOptions", "CassetteSession", "Exchange", "Relay", "Upstream"]

#: Our record mode → (vcrpy record mode, drop_unused_requests).
_VCR_MODES: dict[RecordMode, tuple[str, bool]] = {
    RecordMode.NONE: ("none", False),
    RecordMode.ONCE: ("once", False),
    RecordMode.NEW_EPISODES: ("new_episodes", False),
    RecordMode.ALL: ("all", False),
    RecordMode.REWRITE: ("all", True),
}


@dataclass(frozen=True, slots=True)
class CassetteOptions:
    """How one test's HTTP cassette is used (the JSON body of ``POST /__bridge__/cassette``)."""

    path: str
    record_mode: str = "none"
    match_on: tuple[str, ...] = DEFAULT_MATCH_ON
    ignore_body_fields: tuple[str, ...] = ()
    allow_playback_repeats: bool = False

    def __post_init__(self) -> None:
        if not self.path:
            raise UsageError("a cassette path is required")
        object.__setattr__(self, "record_mode", RecordMode.parse(self.record_mode).value)  # UsageError lists them
        import vcr

        known = sorted(vcr.VCR().matchers)
        unknown = [name for name in self.match_on if name not in known]
        if unknown:
            raise UsageError(f"unknown matcher(s) {unknown} in match_on; vcrpy knows: {', '.join(known)}")

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "record_mode": self.record_mode,
            "match_on": list(self.match_on),
            "ignore_body_fields": list(self.ignore_body_fields),
            "allow_playback_repeats": self.allow_playback_repeats,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CassetteOptions:
        return cls(
            path=str(data["path"]),
            record_mode=str(data.get("record_mode", "none")),
            match_on=tuple(data.get("match_on") or DEFAULT_MATCH_ON),
            ignore_body_fields=tuple(data.get("ignore_body_fields") or ()),
            allow_playback_repeats=bool(data.get("allow_playback_repeats", False)),
        )


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where recordings come from: scheme, host, port and an optional path prefix."""

    scheme: str
    host: str
    port: int
    prefix: str = ""

    @classmethod
    def parse(cls, url: str) -> Upstream:
        """``https://generativelanguage.googleapis.com``; a trailing ``/v1beta`` is tolerated."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(
                f"upstream must be an http(s) URL such as https://generativelanguage.googleapis.com, not {url!r}"
            )
        prefix = parts.path.rstrip("/").removesuffix("/v1beta")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, prefix)

    def target(self, path_and_query: str) -> str:
        return self.prefix + path_and_query

    def uri(self, path_and_query: str) -> str:
        """The absolute URI as vcrpy records it (default ports left out)."""
        default = 443 if self.scheme == "https" else 80
        port = "" if self.port == default else f":{self.port}"
        return f"{self.scheme}://{self.host}{port}{self.target(path_and_query)}"

    def connect(self, timeout: float) -> http.client.HTTPConnection:
        """A new connection, looked up on ``http.client`` now, so vcrpy's patched class is used."""
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=timeout)


class Relay(Protocol):
    """Where a recorded SSE answer is relayed to as it arrives (the worker's connection)."""

    started: bool

    def head(self, status: int, reason: str, headers: list[tuple[str, str]]) -> None: ...

    def chunk(self, data: bytes) -> None: ...


@dataclass(slots=True)
class Exchange:
    """What one proxied call came to. ``streamed``: head and body were already relayed."""

    kind: str  # "replayed" | "forwarded" | "miss" | "no-key" | "upstream-error"
    status: int = 0
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    streamed: bool = False
    message: str = ""


def _tee_response_class(relay: Relay) -> type[http.client.HTTPResponse]:
    """An ``http.client`` response class that hands SSE events to ``relay`` while vcrpy reads it whole."""

    class _TeeResponse(http.client.HTTPResponse):
        _relaying = False

        def begin(self) -> None:
            super().begin()
            self._relaying = is_event_stream(self.getheaders())
            if self._relaying:
                relay.head(self.status, self.reason, self.getheaders())

        def read(self, amt: int | None = None) -> bytes:
            if amt is not None or not self._relaying:
                return super().read(amt)
            framer, parts = EventFramer(), []
            while data := self.read1(65536):
                parts.append(data)
                for event in framer.feed(data):
                    relay.chunk(event)
            if rest := framer.flush():
                relay.chunk(rest)
            return b"".join(parts)

    return _TeeResponse


# -- vcrpy hooks and matcher -------------------------------------------------------------------


def _header_pairs(headers: dict[str, Any]) -> list[tuple[str, str]]:
    return [(k, v) for k, values in headers.items() for v in (values if isinstance(values, list) else [values])]


def _store_sse_events(request: Any, response: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``before_save_interaction``: keep an event stream as a list of events, not one blob."""
    body = response.get("body")
    if (
        isinstance(body, dict)
        and isinstance(body.get("string"), bytes)
        and is_event_stream(_header_pairs(response.get("headers") or {}))
    ):
        stored = events_to_storage(body["string"])
        if stored is not None:
            response["body"] = stored
    return request, response


def _restore_sse_events(request: Any, response: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``after_load_interaction``: the inverse of ``_store_sse_events``."""
    body = response.get("body")
    if isinstance(body, dict) and "sse_events" in body:
        response["body"] = {"string": storage_to_body(body)}
    return request, response


def _drop_path(node: Any, path: Sequence[str]) -> None:
    if not path:
        return
    head, rest = path[0], path[1:]
    if isinstance(node, dict):
        keys = list(node) if head == "*" else [head] if head in node else []
        for key in keys:
            if rest:
                _drop_path(node[key], rest)
            else:
                del node[key]
    elif isinstance(node, list):
        if head == "*":
            indexes = list(range(len(node)))
        elif head.isdigit() and int(head) < len(node):
            indexes = [int(head)]
        else:
            indexes = []
        for index in reversed(indexes):
            if rest:
                _drop_path(node[index], rest)
            else:
                del node[index]


def body_matcher(ignore_fields: Sequence[str]) -> Callable[[Any, Any], None]:
    """vcrpy's ``body`` matcher, after removing ``ignore_fields`` (dotted paths, ``*`` wildcards)
    from JSON bodies, e.g. ``generationConfig.seed`` or ``contents.*.parts.*.thoughtSignature``."""
    from vcr import matchers

    if not ignore_fields:
        return matchers.body  # type: ignore[no-any-return]
    paths = [field.split(".") for field in ignore_fields]

    def without_ignored(request: Any) -> Any:
        try:
            data = json.loads(request.body or b"")
        except (ValueError, TypeError):
            return request
        for path in paths:
            _drop_path(data, path)
        clone = copy.copy(request)
        clone.body = json.dumps(data, sort_keys=True)
        return clone

    def body(r1: Any, r2: Any) -> None:
        matchers.body(without_ignored(r1), without_ignored(r2))

    return body


# -- the session ---------------------------------------------------------------------------------


class CassetteSession:
    """An open vcrpy cassette plus the lock that serialises calls through it."""

    def __init__(
        self,
        options: CassetteOptions,
        *,
        upstream: Upstream,
        api_key: str | None,
        timeout: float,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self.options = options
        self._upstream = upstream
        self._api_key = api_key
        self._timeout = timeout
        self._scrubber = Scrubber([api_key, *secrets])
        self._lock = threading.Lock()
        self._context: Any = None
        self._cassette: Any = None
        self._loaded = 0
        self.counts = {"requests": 0, "replayed": 0, "forwarded": 0, "misses": 0, "errors": 0}
        self.misses: list[str] = []

    def open(self) -> None:
        """Load the cassette (``CassetteCorrupt`` on a bad file) and patch ``http.client``."""
        import vcr
        from vcr.patch import PATCHER_NAMES

        mode, drop_unused = _VCR_MODES[RecordMode(self.options.record_mode)]
        recorder = vcr.VCR(
            record_mode=mode,
            match_on=self.options.match_on,
            before_record_request=self._scrubber.request,
            before_record_response=self._scrubber.response,
            before_save_interaction=_store_sse_events,
            after_load_interaction=_restore_sse_events,
            decode_compressed_response=True,
            drop_unused_requests=drop_unused,
            skip_patchers=[name for name in PATCHER_NAMES if name != "httplib"],
            **vcr_filter_options(),
        )
        recorder.register_serializer("yaml", ReadableYaml)
        recorder.register_persister(AtomicPersister())
        recorder.register_matcher("body", body_matcher(self.options.ignore_body_fields))
        context = recorder.use_cassette(
            self.options.path,
            allow_playback_repeats=self.options.allow_playback_repeats,
            record_on_exception=False,  # close(save=False) passes an exception to skip the save
        )
        with self._lock:
            self._cassette = context.__enter__()
            self._context = context
            self._loaded = len(self._cassette.data)

    def close(self, *, save: bool = True) -> dict[str, Any]:
        """Unpatch and (unless ``save`` is false) write the cassette; returns the test's report."""
        with self._lock:
            cassette, context = self._cassette, self._context
            self._cassette = self._context = None
        if cassette is None:
            raise RuntimeError("cassette session is not open")
        will_write = save and bool(cassette.dirty)
        unplayed = sum(1 for index in range(self._loaded) if cassette.play_counts[index] == 0)
        if save:
            context.__exit__(None, None, None)
        else:
            discarded = RuntimeError("cassette discarded")
            context.__exit__(RuntimeError, discarded, None)
        return {
            **self.options.to_json(),
            **self.counts,
            "miss_messages": list(self.misses),
            "interactions": len(cassette.data),
            "unplayed": unplayed,
            "saved": will_write,
        }

    def exchange(self, method: str, target: str, headers: dict[str, str], body: bytes, relay: Relay) -> Exchange:
        """Answer one call from the cassette, or send it upstream and record it (per record mode)."""
        from vcr.errors import CannotOverwriteExistingCassetteException
        from vcr.request import Request

        sent_headers = dict(headers)
        if self._api_key:
            sent_headers["x-goog-api-key"] = self._api_key
        with self._lock:
            cassette = self._cassette
            if cassette is None:
                raise RuntimeError("cassette session is not open")
            self.counts["requests"] += 1
            probe = Request(method, self._upstream.uri(target), body, sent_headers)
            if not self._api_key and not cassette.write_protected and not cassette.can_play_response_for(probe):
                self.counts["errors"] += 1
                return Exchange(
                    "no-key",
                    message=f"{method} {target} is not in {self.options.path} and would be recorded, but the proxy "
                    f"has no API key. Export {key_env_hint()} in the host to record.",
                )
            played_before = cassette.play_count
            connection = self._upstream.connect(self._timeout)
            connection.response_class = _tee_response_class(relay)
            try:
                connection.request(method, self._upstream.target(target), body=body, headers=sent_headers)
                response = connection.getresponse()
                data = response.read()
            except CannotOverwriteExistingCassetteException as exc:
                message = self._scrubber.text(str(exc))
                self.counts["misses"] += 1
                self.misses.append(message)
                return Exchange("miss", message=message)
            except (OSError, http.client.HTTPException) as exc:
                self.counts["errors"] += 1
                return Exchange(
                    "upstream-error",
                    streamed=relay.started,
                    message=f"upstream {self._upstream.scheme}://{self._upstream.host}:{self._upstream.port} "
                    f"failed: {type(exc).__name__}: {self._scrubber.text(str(exc))}",
                )
            finally:
                connection.close()
            kind = "replayed" if cassette.play_count > played_before else "forwarded"
            self.counts[kind] += 1
        return Exchange(
            kind, response.status, response.reason, list(response.getheaders()), data, streamed=relay.started
        )
