"""One open HTTP cassette: vcrpy's ``Cassette`` decides and stores, our own connection does the I/O.

    handler ──exchange()──► [lock] match: vcrpy's can_play_response_for / play_response ──► replayed
                                   (or miss, near match, no key)
                            ──► no lock: http.client.HTTP(S)Connection to the upstream (_upstream.py),
                                _TeeResponse relays SSE events to the worker as they arrive
                            ──► [lock] append: vcrpy's Cassette.append (hooks, scrubbing) ──► forwarded

Only matching and appending hold the session lock (vcrpy's ``Cassette`` is not thread-safe), so N calls
recording at once take about as long as the slowest, not the sum. vcrpy patches nothing here (every
patcher is skipped): the upstream call is made with plain ``http.client`` and handed to the cassette as
vcrpy's own ``VCRConnection`` would. Identical requests in flight at once are each sent upstream and each
recorded, in the order their answers completed, as they would be one after the other; a replay answers
identical requests from those recordings in the same order. Closing with ``save`` waits for calls in
flight (up to the upstream timeout) so their recordings are kept.

Record modes, matchers and the cassette format are vcrpy's; this module adds the ``rewrite`` mode (vcrpy
``all`` + ``drop_unused_requests``), a ``body`` matcher that can ignore volatile JSON fields, SSE
separators beside vcrpy's ``body.string``, scrubbing hooks, loopback upstream URIs without their (random)
port, the atomic persister, and the recording policy:

* a failure the proxy itself saw (DNS, refused, timeout, TLS, a cut connection) is never recorded:
  it is reported as ``upstream unreachable: <reason>`` (``not_recorded``); a certificate failure is
  its own kind (``tls-error``), as retrying cannot fix it;
* an error status the upstream answered (429, 5xx, 4xx) is recorded only with ``record_errors``;
  otherwise it reaches the worker but not the file, and the report says so;
* ``record_empty`` writes a cassette with no interactions when a recording run made no call, so the
  next replay finds its file; ``near_match`` (see ``_near``) answers a drifted prompt, and says so.
"""

from __future__ import annotations

import copy
import http.client
import json
import os
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from dspy_bridge._exceptions import UsageError
from dspy_bridge._modes import RecordMode
from dspy_bridge._secrets import key_env_hint
from dspy_bridge.proxy._constants import DEFAULT_MATCH_ON
from dspy_bridge.proxy._near import drop_fields, find_near_match
from dspy_bridge.proxy._persister import AtomicPersister
from dspy_bridge.proxy._scrub import Scrubber, vcr_filter_options
from dspy_bridge.proxy._serializer import ReadableYaml
from dspy_bridge.proxy._sse import EventFramer, is_event_stream, restore_sse_events, store_sse_events
from dspy_bridge.proxy._upstream import ForwardProxy, Upstream, tls_advice

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
    record_errors: bool = False  # record error statuses the upstream answered (fault tests)
    record_empty: bool = False  # a recording run without calls still writes the (empty) file
    keep_partial: bool = True  # False: an unreachable upstream discards the whole cassette's save
    near_match: float | None = None  # difflib ratio threshold on the prompt text; None = exact only
    filter_headers: tuple[str, ...] = ()  # request headers never stored, besides credentials
    filter_query_parameters: tuple[str, ...] = ()
    filter_post_data_parameters: tuple[str, ...] = ()
    stream_chunks: int | None = None  # replayed event streams re-cut into N characters per event

    def __post_init__(self) -> None:
        if not self.path:
            raise UsageError("a cassette path is required")
        if self.stream_chunks is not None and (
            isinstance(self.stream_chunks, bool) or not isinstance(self.stream_chunks, int) or self.stream_chunks < 1
        ):
            raise UsageError(
                f"stream_chunks must be a whole number of characters (1 or more), not {self.stream_chunks!r}"
            )
        if self.near_match is not None and not 0.0 < float(self.near_match) <= 1.0:
            raise UsageError(f"near_match must be a similarity in (0, 1], e.g. 0.9, not {self.near_match!r}")
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
            "record_errors": self.record_errors,
            "record_empty": self.record_empty,
            "keep_partial": self.keep_partial,
            "near_match": self.near_match,
            "filter_headers": list(self.filter_headers),
            "filter_query_parameters": list(self.filter_query_parameters),
            "filter_post_data_parameters": list(self.filter_post_data_parameters),
            "stream_chunks": self.stream_chunks,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CassetteOptions:
        near = data.get("near_match")
        return cls(
            path=str(data["path"]),
            record_mode=str(data.get("record_mode", "none")),
            match_on=tuple(data.get("match_on") or DEFAULT_MATCH_ON),
            ignore_body_fields=tuple(data.get("ignore_body_fields") or ()),
            allow_playback_repeats=bool(data.get("allow_playback_repeats", False)),
            record_errors=bool(data.get("record_errors", False)),
            record_empty=bool(data.get("record_empty", False)),
            keep_partial=bool(data.get("keep_partial", True)),
            near_match=float(near) if near is not None else None,
            filter_headers=tuple(str(h) for h in data.get("filter_headers") or ()),
            filter_query_parameters=tuple(str(q) for q in data.get("filter_query_parameters") or ()),
            filter_post_data_parameters=tuple(str(q) for q in data.get("filter_post_data_parameters") or ()),
            stream_chunks=data.get("stream_chunks"),
        )


class Relay(Protocol):
    """Where a recorded SSE answer is relayed to as it arrives (the worker's connection)."""

    started: bool

    def head(self, status: int, reason: str, headers: list[tuple[str, str]]) -> None: ...

    def chunk(self, data: bytes) -> None: ...


@dataclass(slots=True)
class Exchange:
    """What one proxied call came to. ``streamed``: head and body were already relayed."""

    kind: str  # "replayed" | "forwarded" | "miss" | "no-key" | "upstream-error" | "tls-error"
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


_LOOPBACK = ("127.", "localhost", "::1", "[::1]")


def portable_uri(uri: str) -> str:
    """A loopback upstream's URI without its port: a fake on another random port matches the same recording."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    if parts.port is None or not host.startswith(_LOOPBACK):
        return uri
    netloc = f"[{host}]" if ":" in host else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def body_matcher(ignore_fields: Sequence[str]) -> Callable[[Any, Any], None]:
    """vcrpy's ``body`` matcher, after removing ``ignore_fields`` (dotted paths, ``*`` wildcards)
    from JSON bodies, e.g. ``generationConfig.seed`` or ``contents.*.parts.*.thoughtSignature``."""
    from vcr import matchers

    if not ignore_fields:
        return matchers.body  # type: ignore[no-any-return]

    def without_ignored(request: Any) -> Any:
        try:
            data = json.loads(request.body or b"")
        except (ValueError, TypeError):
            return request
        drop_fields(data, ignore_fields)
        clone = copy.copy(request)
        clone.body = json.dumps(data, sort_keys=True)
        return clone

    def body(r1: Any, r2: Any) -> None:
        matchers.body(without_ignored(r1), without_ignored(r2))

    return body


# -- the session ---------------------------------------------------------------------------------


class CassetteSession:
    """An open vcrpy cassette, the lock around its state, and the calls in flight through it."""

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
        self._via: ForwardProxy | None = upstream.forward_proxy()
        self._scrubber = Scrubber([api_key, *secrets])
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified when a call in flight is done
        self._in_flight = 0
        self._context: Any = None
        self._cassette: Any = None
        self._loaded = 0
        self._current = ""  # "METHOD target" of the interaction being appended (under the lock)
        self._live = False  # appending a live answer: vcrpy's hooks also run for interactions loaded from the file
        self.counts = {"requests": 0, "replayed": 0, "forwarded": 0, "misses": 0, "errors": 0, "unreachable": 0}
        self.misses: list[str] = []
        self.not_recorded: list[str] = []  # what was not written, and why
        self.near_matches: list[str] = []

    # vcrpy hooks ------------------------------------------------------------------------------

    def _before_record_request(self, request: Any) -> Any:
        request = self._scrubber.request(request)
        request.uri = portable_uri(request.uri)
        return request

    def _before_record_response(self, response: dict[str, Any]) -> dict[str, Any] | None:
        status = response.get("status") or {}
        code = int(status.get("code") or 0)
        if self._live and code >= 400 and not self.options.record_errors:
            self.not_recorded.append(
                f"{self._current}: the upstream answered {code} {status.get('message') or ''}".rstrip()
                + " — not recorded (an error answer is recorded only with record_errors=True)"
            )
            return None  # vcrpy: not appended; the worker still gets the answer
        return self._scrubber.response(response)

    def open(self) -> None:
        """Load the cassette (``CassetteCorrupt`` on a bad file); nothing is patched."""
        import vcr
        from vcr.patch import PATCHER_NAMES

        options = self.options
        mode, drop_unused = _VCR_MODES[RecordMode(options.record_mode)]
        filters = vcr_filter_options()
        filters["filter_headers"] += [(name, None) for name in options.filter_headers]
        filters["filter_query_parameters"] += [(name, None) for name in options.filter_query_parameters]
        recorder = vcr.VCR(
            record_mode=mode,
            match_on=options.match_on,
            before_record_request=self._before_record_request,
            before_record_response=self._before_record_response,
            before_save_interaction=store_sse_events,
            after_load_interaction=restore_sse_events,
            decode_compressed_response=True,
            drop_unused_requests=drop_unused,
            skip_patchers=list(PATCHER_NAMES),  # we hand vcrpy each call ourselves (``exchange``)
            filter_post_data_parameters=[(name, None) for name in options.filter_post_data_parameters],
            **filters,
        )
        recorder.register_serializer("yaml", ReadableYaml)
        recorder.register_persister(AtomicPersister())
        recorder.register_matcher("body", body_matcher(options.ignore_body_fields))
        context = recorder.use_cassette(
            options.path,
            allow_playback_repeats=options.allow_playback_repeats,
            record_on_exception=False,  # close(save=False) passes an exception to skip the save
        )
        with self._lock:
            self._cassette = context.__enter__()
            self._context = context
            self._loaded = len(self._cassette.data)

    def close(self, *, save: bool = True) -> dict[str, Any]:
        """Write the cassette (unless ``save`` is false) and return the test's report.

        With ``save``, calls still in flight are waited for (up to the upstream timeout), so what they record
        is kept; without, they finish for their worker but are not recorded.
        """
        with self._lock:
            if save:
                self._idle.wait_for(lambda: self._in_flight == 0, timeout=self._timeout + 5.0)
            cassette, context = self._cassette, self._context
            self._cassette = self._context = None
        if cassette is None:
            raise RuntimeError("cassette session is not open")
        discarded_because = ""
        if save and self.counts["unreachable"] and not self.options.keep_partial:
            save, discarded_because = False, "the upstream could not be reached"
        will_write = save and bool(cassette.dirty)
        write_empty = (
            save
            and self.options.record_empty
            and not cassette.write_protected
            and not cassette.data
            and not self.not_recorded
            and not os.path.exists(self.options.path)
        )
        played = [index for index in range(self._loaded) if cassette.play_counts[index]]
        unplayed = self._loaded - len(played)
        if save:
            context.__exit__(None, None, None)
        else:
            discarded = RuntimeError("cassette discarded")
            context.__exit__(RuntimeError, discarded, None)
        if write_empty:  # vcrpy writes only a dirty cassette; the next replay needs the file
            AtomicPersister().save_cassette(self.options.path, {"requests": [], "responses": []}, ReadableYaml)
        return {
            **self.options.to_json(),
            **self.counts,
            "miss_messages": list(self.misses),
            "not_recorded": list(self.not_recorded),
            "near_matches": list(self.near_matches),
            "interactions": len(cassette.data),
            "unplayed": unplayed,
            "played": played,  # indexes (file order) of the loaded interactions answered at least once
            "saved": will_write or write_empty,
            "discarded_because": discarded_because,
        }

    def exchange(self, method: str, target: str, headers: dict[str, str], body: bytes, relay: Relay) -> Exchange:
        """Answer one call from the cassette, or send it upstream and record it (per record mode)."""
        from vcr.request import Request

        sent_headers = dict(headers)
        if self._api_key:
            sent_headers["x-goog-api-key"] = self._api_key
        request = Request(method, self._upstream.uri(target), body, sent_headers)
        with self._lock:
            answer = self._from_cassette(request, f"{method} {target}")
            if answer is not None:
                return answer
            self._in_flight += 1
        try:
            try:
                response, data = self._send(method, target, body, sent_headers, relay)
            except (OSError, http.client.HTTPException) as exc:
                return self._failed(method, target, exc, relay)
            with self._lock:
                self._record(request, response, data, f"{method} {target}")
        finally:
            with self._lock:
                self._in_flight -= 1
                self._idle.notify_all()
        return Exchange(
            "forwarded", response.status, response.reason, list(response.getheaders()), data, streamed=relay.started
        )

    def records(self, method: str, target: str, headers: dict[str, str], body: bytes) -> bool:
        """Would this call go upstream to be recorded (not in the cassette, and the mode lets it be)?"""
        from vcr.request import Request

        sent_headers = {**headers, **({"x-goog-api-key": self._api_key} if self._api_key else {})}
        with self._lock:
            cassette = self._cassette
            if cassette is None or cassette.write_protected:
                return False
            return not cassette.can_play_response_for(Request(method, self._upstream.uri(target), body, sent_headers))

    def _from_cassette(self, request: Any, current: str) -> Exchange | None:
        """Under the lock: the answer the cassette gives (replay, miss, near match, no key), or None to record."""
        from vcr.errors import CannotOverwriteExistingCassetteException

        cassette = self._cassette
        if cassette is None:
            raise RuntimeError("cassette session is not open")
        self.counts["requests"] += 1
        self._current = current
        if cassette.can_play_response_for(request):
            self.counts["replayed"] += 1
            return _exchange_from_recording("replayed", cassette.play_response(request))
        if cassette.write_protected and cassette.filter_request(request):
            near = self._near_match(cassette, request)
            if near is not None:
                return near
            exc = CannotOverwriteExistingCassetteException(cassette=cassette, failed_request=request)
            message = self._scrubber.text(str(exc))
            self.counts["misses"] += 1
            self.misses.append(message)
            return Exchange("miss", message=message)
        if not self._api_key:
            self.counts["errors"] += 1
            return Exchange(
                "no-key",
                message=f"{current} is not in {self.options.path} and would be recorded, but the proxy "
                f"has no API key. Export {key_env_hint()} in the host to record.",
            )
        return None

    def _send(
        self, method: str, target: str, body: bytes, headers: dict[str, str], relay: Relay
    ) -> tuple[http.client.HTTPResponse, bytes]:
        """The upstream call itself, outside the lock; SSE events reach ``relay`` as they arrive."""
        connection = self._upstream.connect(self._timeout, self._via)
        connection.response_class = _tee_response_class(relay)
        try:
            target = self._upstream.request_target(target, self._via)
            if self._via is not None and self._via.authorization and self._upstream.scheme == "http":
                headers = {**headers, "Proxy-Authorization": self._via.authorization}  # the hop only: not recorded
            connection.request(method, target, body=body, headers=headers)
            response = connection.getresponse()
            return response, response.read()
        finally:
            connection.close()

    def _record(self, request: Any, response: http.client.HTTPResponse, data: bytes, current: str) -> None:
        """Under the lock: hand the answer to vcrpy as its ``VCRConnection`` does (hooks, scrubbing, append)."""
        from vcr.stubs import serialize_headers

        cassette = self._cassette
        if cassette is None:  # ejected without saving while the call was in flight
            return
        recorded = {
            "status": {"code": response.status, "message": response.reason},
            "headers": serialize_headers(response),
            "body": {"string": data},
        }
        self._live, self._current = True, current
        try:
            cassette.append(request, recorded)
        finally:
            self._live = False
        self.counts["forwarded"] += 1

    def _failed(self, method: str, target: str, exc: Exception, relay: Relay) -> Exchange:
        """A failure the proxy itself saw: never recorded, always reported."""
        with self._lock:
            self.counts["errors"] += 1
            self.counts["unreachable"] += 1
            if isinstance(exc, ssl.SSLCertVerificationError):
                message = tls_advice(self._upstream, self._via, exc)
                self.not_recorded.append(f"upstream unreachable: {message} ({method} {target})")
                return Exchange("tls-error", message=message)
            via = f" through the forward proxy {self._via}" if self._via is not None else ""
            reason = f"{type(exc).__name__}: {self._scrubber.text(str(exc))}".rstrip(": ")
            message = (
                f"upstream unreachable: {reason} ({self._upstream.origin}{via}, {method} {target}) — nothing recorded"
            )
            self.not_recorded.append(message)
            return Exchange("upstream-error", streamed=relay.started, message=message)

    def _near_match(self, cassette: Any, probe: Any) -> Exchange | None:
        """With ``near_match`` set: answer a miss from the most similar recording, and say so."""
        threshold = self.options.near_match
        if threshold is None:
            return None
        request = cassette.filter_request(probe)
        found = find_near_match(cassette, request, threshold, self.options.ignore_body_fields)
        if found is None:
            return None
        cassette.play_counts[found.index] += 1
        self.counts["replayed"] += 1
        self.near_matches.append(
            f"{self._current}: answered by recording #{found.index + 1} of {len(cassette.data)} "
            f"(prompt similarity {found.similarity:.3f}, threshold {threshold:g}) — re-record to make it exact"
        )
        return _exchange_from_recording("replayed", cassette.data[found.index][1])


def _exchange_from_recording(kind: str, response: dict[str, Any]) -> Exchange:
    """A recorded vcrpy response as the worker gets it (what ``VCRHTTPResponse`` would give)."""
    status = response.get("status") or {}
    headers = [(name, str(value)) for name, value in _header_items(response.get("headers") or {})]
    content = (response.get("body") or {}).get("string") or b""
    content = content if isinstance(content, bytes) else str(content).encode("utf-8")
    return Exchange(kind, int(status.get("code") or 200), str(status.get("message") or ""), headers, content)


def _header_items(headers: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(k, v) for k, values in headers.items() for v in (values if isinstance(values, list) else [values])]
