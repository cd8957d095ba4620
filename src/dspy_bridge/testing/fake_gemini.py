"""A faithful stand-in for the Gemini REST API (v1beta) on 127.0.0.1, for tests.

Real Gemini is out of reach in tests; this server speaks its wire format closely
enough that real DSPy (``dspy.LM("gemini/...", api_base=fake.base_url)``) runs
end to end against it, retries included::

    caller ──► dspy.LM ──HTTP──► FakeGemini ──► script queue (Reply/Fail/Delay/Drop)
                                     │               └─ empty: deterministic answer
                                     └─► requests[] (key separated from headers)

Routes (everything else is a 404 in Gemini's error shape):

* ``POST /v1beta/models/{model}:generateContent`` — one JSON response.
* ``POST /v1beta/models/{model}:streamGenerateContent`` — ``?alt=sse``: one
  ``data: {json}\\r\\n\\r\\n`` event per text chunk; without it a JSON array.
* ``POST …:countTokens``, ``…:embedContent``, ``…:batchEmbedContents`` and ``GET /v1beta/models[/{model}]``
  (``_gemini_catalog``); the script answers only the two generate routes.
* ``/__fake__/{health,requests,reset,enqueue}`` — control API for a fake running
  as its own process (``python -m dspy_bridge.testing.fake_gemini``).

Checks run in Gemini's order: route, API key (``x-goog-api-key`` header or
``?key=``; missing → 403 PERMISSION_DENIED, wrong → 400 INVALID_ARGUMENT with ErrorInfo
reason API_KEY_INVALID), model (only when ``models=`` is given), body (unknown fields,
``generationConfig`` included, are a 400 as Gemini's proto parser makes them), then the next
scripted item. Answers look like a thinking model's when the model thinks (2.5 Pro/Flash, 3.x):
``thoughtsTokenCount`` always, thought parts and ``thoughtSignature`` when asked for
(``includeThoughts``) or scripted (``Reply(thoughts=...)``). Every behaviour names its source
(the API reference page or a public recording) where it is built, in ``_gemini_wire``,
``_gemini_catalog`` and ``dspy_bridge._gemini``.

Usage::

    with FakeGemini(expected_key=key) as fake:
        fake.enqueue(Fail(429, retry_after=0.2), Empty("MAX_TOKENS"))  # a real-shaped 429, then no text
        lm = dspy.LM("gemini/gemini-2.5-flash", api_key=key, api_base=fake.base_url, cache=False)
        ...
        assert fake.requests[-1].api_key == key

This module is the server and its lifecycle; the pieces live beside it: ``_script`` (script items,
recorded requests), ``_gemini_wire`` (route, request checks, response chunks), ``_gemini_answers``
(answers in the layout DSPy's prompt asked for), and the HTTP plumbing shared with the cassette
proxy in ``dspy_bridge._http``.
"""

from __future__ import annotations

import argparse
import enum
import json
import os
import secrets
import stat
import sys
import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, Self, cast
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from dspy_bridge._gemini import quota_details
from dspy_bridge._http import LoopbackHandler, LoopbackServer, stop_on_signals, watch_stdin_eof
from dspy_bridge.testing import _gemini_catalog as catalog
from dspy_bridge.testing._gemini_answers import read_prompt, render_answer
from dspy_bridge.testing._gemini_wire import (
    BAD_KEY,
    GENERATE_ACTIONS,
    MISSING_KEY,
    MODELS_ROUTE,
    ROUTE,
    Thinking,
    bad_key_details,
    blocked_prompt_payload,
    body_problem,
    chunk_payloads,
    empty_payload,
)
from dspy_bridge.testing._script import (
    Delay,
    Drop,
    Empty,
    Fail,
    PromptBlocked,
    RecordedRequest,
    Reply,
    ScriptInput,
    ScriptItem,
    as_item,
    item_from_json,
)

__all__ = [
    "Delay",
    "Drop",
    "Empty",
    "Fail",
    "FakeGemini",
    "PromptBlocked",
    "RecordedRequest",
    "Reply",
    "ScriptItem",
    "main",
]


class _State(enum.Enum):
    NEW = "new"  # constructed, socket not bound
    RUNNING = "running"  # bound and serving on a background thread
    CLOSED = "closed"  # shut down; cannot be restarted


# ─── The server ─────────────────────────────────────────────────────────────


class _Server(LoopbackServer):
    """The loopback server, knowing its fake; closing it cuts open connections (``LoopbackServer``)."""

    block_on_close = True  # server_close joins handler threads (they end once sockets are cut)

    def __init__(self, address: tuple[str, int], fake: FakeGemini) -> None:
        self.fake = fake
        super().__init__(address, _Handler)


class FakeGemini:
    """A Gemini v1beta server on 127.0.0.1 with a script queue and a request log.

    ``FakeGemini(expected_key=None, models=None, stream_chunk_chars=32, seed="")``:
    any non-empty key is accepted unless ``expected_key`` is set; any model is
    served unless ``models`` names them.  Use as a context manager, or call
    :meth:`start` and :meth:`close`.  Thread-safe.
    """

    def __init__(
        self,
        *,
        expected_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        models: Iterable[str] | None = None,
        stream_chunk_chars: int = 32,
        seed: str = "",
    ) -> None:
        if stream_chunk_chars < 1:
            raise ValueError("stream_chunk_chars must be at least 1")
        self.expected_key = expected_key
        self.models = frozenset(m.removeprefix("models/") for m in models) if models is not None else None
        self.stream_chunk_chars = stream_chunk_chars
        self.seed = seed
        self._address = (host, port)
        self._lock = threading.Lock()
        self._queue: deque[ScriptItem] = deque()
        self._requests: list[RecordedRequest] = []
        self._closing = threading.Event()
        self._state = _State.NEW
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        where = f" at {self.base_url}" if self._state is _State.RUNNING else ""
        return f"<FakeGemini {self._state.value}{where} requests={self.request_count} pending={self.pending}>"

    # lifecycle

    def start(self) -> Self:
        """Bind a free port and serve on a background thread."""
        with self._lock:
            if self._state is _State.RUNNING:
                raise RuntimeError("FakeGemini is already running")
            if self._state is _State.CLOSED:
                raise RuntimeError("FakeGemini is closed; create a new one")
            self._server = _Server(self._address, self)
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},  # how soon shutdown() is noticed; close() waits on it
                name=f"fake-gemini:{self._server.server_port}",
                daemon=True,
            )
            self._thread.start()
            self._state = _State.RUNNING
        return self

    def close(self) -> None:
        """Stop serving, cut open connections, wake delayed handlers and join them. Idempotent."""
        with self._lock:
            if self._state is not _State.RUNNING:
                self._state = _State.CLOSED
                return
            self._state = _State.CLOSED
            server, thread = self._server, self._thread
        assert server is not None and thread is not None
        self._closing.set()
        server.shutdown()
        server.cut_connections()
        server.server_close()
        thread.join()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        """The bound TCP port."""
        if self._server is None or self._state is not _State.RUNNING:
            raise RuntimeError("FakeGemini is not running; call start() or use it as a context manager")
        return int(self._server.server_port)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1beta``, the value for ``dspy.LM(api_base=...)``."""
        return f"http://{self._address[0]}:{self.port}/v1beta"

    # scripting

    def enqueue(self, *items: ScriptInput, times: int = 1) -> None:
        """Append items to the script; each answers one model call, ``times`` over.

        A ``dict`` means ``Reply(fields=...)``, a ``str`` means ``Reply(text=...)``.
        """
        if times < 0:
            raise ValueError("times must be >= 0")
        parsed = [as_item(i) for i in items]
        with self._lock:
            for _ in range(times):
                self._queue.extend(parsed)

    def script(self, *items: ScriptInput) -> None:
        """Replace whatever is still queued with exactly these items, in order."""
        parsed = [as_item(i) for i in items]
        with self._lock:
            self._queue.clear()
            self._queue.extend(parsed)

    def reset(self) -> None:
        """Forget queued items and recorded requests."""
        with self._lock:
            self._queue.clear()
            self._requests.clear()

    @property
    def pending(self) -> int:
        """How many scripted items are still queued."""
        with self._lock:
            return len(self._queue)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received (control API excluded), oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        """How many requests arrived (control API excluded)."""
        with self._lock:
            return len(self._requests)

    # used by the handler

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _take(self) -> ScriptItem | None:
        with self._lock:
            return self._queue.popleft() if self._queue else None

    def _answer_text(self, body: Mapping[str, Any], reply: Reply | None) -> str:
        if reply is not None and reply.text is not None:
            return reply.text
        return render_answer(read_prompt(body), reply.fields if reply else None, seed=self.seed)


class _Handler(LoopbackHandler):
    server_version = "scaffolding on HTTPServer2"  # what Google's front end calls itself
    default_headers = {"Vary": "Origin, X-Origin, Referer"}
    timeout = 120  # idle keep-alive connections end on their own

    @property
    def fake(self) -> FakeGemini:
        return cast(_Server, self.server).fake

    # request handling

    def dispatch(self, raw: bytes) -> None:
        split = urlsplit(self.path)
        path = unquote(split.path)
        if path.startswith("/__fake__/"):
            self._control(path, raw)
            return
        query_pairs = parse_qsl(split.query, keep_blank_values=True)
        query = {k: v for k, v in query_pairs if k != "key"}
        header_key = self.headers.get("x-goog-api-key")
        query_key = next((v for k, v in query_pairs if k == "key"), None)
        api_key: str | None = header_key or query_key or None
        source: Literal["header", "query"] | None = "header" if header_key else "query" if query_key else None
        try:
            body: Any = json.loads(raw) if raw else None
            body_error = None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            body, body_error = None, f"Invalid JSON payload received. {exc.msg if hasattr(exc, 'msg') else exc}."
        route = ROUTE.match(path)
        listing = MODELS_ROUTE.match(path) if self.command == "GET" else None
        model = route.group("model").split("/", 1)[1] if route else listing.group("model") if listing else None
        action = route.group("action") if route else ("get" if model else "list") if listing else None
        self.fake._record(
            RecordedRequest(
                method=self.command,
                path=split.path + (f"?{urlencode(query)}" if query else ""),
                query=query,
                headers={k: v for k, v in self.headers.items() if k.lower() != "x-goog-api-key"},
                body=body,
                api_key=api_key,
                key_source=source,
                model=model,
                action=action,
                sse=query.get("alt") == "sse",
            )
        )
        if action is None or (route is not None and self.command != "POST"):
            self.send_gemini_error(404, f"Method not found: {self.command} {split.path}")
            return
        if not api_key:
            self.send_gemini_error(403, MISSING_KEY)
            return
        if self.fake.expected_key is not None and api_key != self.fake.expected_key:
            self.send_gemini_error(400, BAD_KEY, details=bad_key_details())
            return
        if model is not None and self.fake.models is not None and model not in self.fake.models:
            self.send_gemini_error(
                404,
                f"models/{model} is not found for API version v1beta, or is not supported for "
                f"{action}. Call ListModels to see the list of available models and their supported methods.",
            )
            return
        if listing is not None:
            self._list_models(model, query)
            return
        assert model is not None and action is not None
        problem = body_error or body_problem(body, action)
        if problem:
            self.send_gemini_error(400, problem)
            return
        if action not in GENERATE_ACTIONS:
            answer = {
                "countTokens": catalog.count_tokens,
                "embedContent": lambda b: {"embedding": catalog.embedding(b)},
                "batchEmbedContents": catalog.batch_embeddings,
            }[action](body)
            self.send_json(200, answer)
            return
        self._perform(self.fake._take(), cast(dict[str, Any], body), model, action, query)

    def _list_models(self, model: str | None, query: Mapping[str, str]) -> None:
        if model is not None:
            self.send_json(200, catalog.model_info(model))
            return
        names = sorted(self.fake.models) if self.fake.models is not None else [entry[0] for entry in catalog.CATALOG]
        size = query.get("pageSize")
        self.send_json(
            200, catalog.models_page(names, int(size) if size and size.isdigit() else None, query.get("pageToken"))
        )

    def _perform(
        self, item: ScriptItem | None, body: dict[str, Any], model: str, action: str, query: Mapping[str, str]
    ) -> None:
        if isinstance(item, Delay):
            if self.fake._closing.wait(item.seconds):
                self.abort()
                return
            item = item.then
        if isinstance(item, Fail):
            self._send_fail(item, model)
            return
        response_id = secrets.token_urlsafe(16)[:22]
        if isinstance(item, Empty | PromptBlocked):
            if isinstance(item, Empty):
                payload = empty_payload(body, model, item.finish_reason, response_id)
            else:
                payload = blocked_prompt_payload(body, model, item.block_reason, response_id)
            self._send_payloads([payload], action, query, partial=False)
            return
        reply = item if isinstance(item, Reply) else None
        text = self.fake._answer_text(body, reply)
        finish = reply.finish_reason if reply else "STOP"
        partial = isinstance(item, Drop) and item.partial
        if isinstance(item, Drop) and not partial:
            self.abort()
            return
        thinking = Thinking.for_request(body, model, text, reply.thoughts if reply else None)
        size = self.fake.stream_chunk_chars if action == "streamGenerateContent" else max(1, len(text))
        chunks = chunk_payloads(body, text, model, finish, response_id, size, thinking)
        self._send_payloads(chunks, action, query, partial=partial)

    def _send_payloads(
        self, chunks: Sequence[dict[str, Any]], action: str, query: Mapping[str, str], *, partial: bool
    ) -> None:
        if action == "streamGenerateContent" and query.get("alt") == "sse":
            self._send_sse(chunks, partial=partial)
        elif action == "streamGenerateContent":
            array = "[" + ",\r\n".join(json.dumps(c, indent=2, ensure_ascii=False) for c in chunks) + "]"
            self.send_body(200, array.encode(), partial=partial)
        else:
            self.send_body(200, json.dumps(chunks[0], indent=2, ensure_ascii=False).encode(), partial=partial)

    # responses

    def _send_fail(self, fail: Fail, model: str) -> None:
        # A 429 carries QuotaFailure and Help, then RetryInfo, and no Retry-After header (``_gemini``).
        details = None
        if fail.status == 429:
            details = quota_details(model)
            violation = details[0]["violations"][0]
            violation["quotaId"] = fail.quota_id or violation["quotaId"]
            violation["quotaMetric"] = fail.quota_metric or violation["quotaMetric"]
        self.send_gemini_error(
            fail.status, fail.message, grpc_status=fail.grpc_status, details=details, retry_after=fail.retry_after
        )

    def _send_sse(self, chunks: Sequence[dict[str, Any]], *, partial: bool) -> None:
        self.start_chunks(200, {"Content-Type": "text/event-stream", "Content-Disposition": "attachment"})
        for payload in chunks:
            self.write_chunk(f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\r\n\r\n".encode())
            if partial:  # one event, then the connection goes away mid-stream
                self.abort()
                return
        self.end_chunks()

    # control API

    def _control(self, path: str, raw: bytes) -> None:
        fake = self.fake
        try:
            data = json.loads(raw) if raw else {}
            if path == "/__fake__/health" and self.command == "GET":
                out: dict[str, Any] = {"status": "ok", "base_url": fake.base_url, "pid": os.getpid()}
                out.update(request_count=fake.request_count, pending=fake.pending)
            elif path == "/__fake__/requests" and self.command == "GET":
                out = {"requests": [r.to_json() for r in fake.requests]}
            elif path == "/__fake__/reset" and self.command == "POST":
                fake.reset()
                out = {"pending": 0}
            elif path == "/__fake__/enqueue" and self.command == "POST":
                items = [item_from_json(i) for i in data.get("items", [])]
                if data.get("replace"):
                    fake.script(*items)
                else:
                    fake.enqueue(*items, times=int(data.get("times", 1)))
                out = {"pending": fake.pending}
            else:
                self.send_gemini_error(404, f"Unknown control endpoint: {self.command} {path}")
                return
        except (ValueError, KeyError, TypeError) as exc:
            self.send_gemini_error(400, f"Bad control request: {exc}")
            return
        self.send_body(200, json.dumps(out).encode())


# ─── Standalone process ─────────────────────────────────────────────────────


def _stdin_is_pipe() -> bool:
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT, or until stdin (when it is a pipe) reaches EOF."""
    parser = argparse.ArgumentParser(
        prog="python -m dspy_bridge.testing.fake_gemini", description="Serve a fake Gemini v1beta API."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--expected-key-env", metavar="VAR", help="only accept the key held in this environment variable"
    )
    parser.add_argument("--model", action="append", dest="models", help="serve only these models (repeatable)")
    parser.add_argument("--stream-chunk-chars", type=int, default=32)
    parser.add_argument("--seed", default="")
    parser.add_argument("--no-stdin-watch", action="store_true", help="do not exit when stdin closes")
    args = parser.parse_args(argv)
    expected = os.environ.get(args.expected_key_env) if args.expected_key_env else None
    if args.expected_key_env and not expected:
        parser.error(f"environment variable {args.expected_key_env} is empty or unset")

    stop = threading.Event()
    stop_on_signals(stop)
    fake = FakeGemini(
        expected_key=expected,
        host=args.host,
        port=args.port,
        models=args.models,
        stream_chunk_chars=args.stream_chunk_chars,
        seed=args.seed,
    )
    with fake:
        if not args.no_stdin_watch and _stdin_is_pipe():
            threading.Thread(target=watch_stdin_eof, args=(stop,), name="stdin-watch", daemon=True).start()
        print(json.dumps({"base_url": fake.base_url, "port": fake.port, "pid": os.getpid()}), flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
