"""Host side of the cassette proxy: start/stop the process and drive it between tests.

    with ProxyProcess(upstream=fake.base_url, api_key=key) as proxy:
        lm = dspy.LM("gemini/gemini-2.5-flash", cache=False, **proxy.lm_kwargs())   # in a worker
        proxy.use_cassette("cassettes/http/test_x.yaml", record_mode="once")
        ...                                   # the test's LM calls go through the proxy
        report = proxy.eject()                # writes the cassette; report.misses, .forwarded, ...
        proxy.inject_faults(Fault(status=429, times=2, retry_after=0))

The key (``api_key``; default: ``GEMINI_API_KEY`` / ``GOOGLE_API_KEY`` from this environment)
reaches the proxy on its stdin only, with a random control token. The proxy's environment is built as
every worker's is (``dspy_bridge._secrets.child_environment``): no key variable of any provider, nor any
name in ``secret_env``. Workers get ``PLACEHOLDER_KEY``.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import secrets
import selectors
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass, fields
from http.client import HTTPConnection, HTTPException
from pathlib import Path
from typing import IO, Any, Self

from dspy_bridge._exceptions import BridgeError, CassetteCorrupt, UsageError
from dspy_bridge._modes import RecordMode
from dspy_bridge._secrets import api_key_from_env, child_environment, secret_values
from dspy_bridge.proxy._constants import (
    CONTROL_PREFIX,
    DEFAULT_MATCH_ON,
    DEFAULT_UPSTREAM,
    DEFAULT_UPSTREAM_TIMEOUT,
    PLACEHOLDER_KEY,
    TOKEN_HEADER,
)
from dspy_bridge.proxy._faults import Fault
from dspy_bridge.proxy._ratelimit import RateLimitPolicy

__all__ = ["CassetteReport", "ProxyProcess", "ProxyStats"]


class _Unset(enum.Enum):
    UNSET = "UNSET"


UNSET = _Unset.UNSET


@dataclass(frozen=True, slots=True)
class ProxyStats:
    """Counters since the proxy started (all cassettes)."""

    requests: int  # calls from workers, faults included
    forwarded: int  # answered by the upstream (and recorded)
    replayed: int  # answered from a cassette
    faults: int  # answered (or delayed, or dropped) by an injected fault
    misses: int  # not in the cassette, and the record mode forbids recording
    refused: int  # no cassette in use, no key to record with, or the upstream quota is spent
    upstream_errors: int  # the upstream could not be reached
    cassette: str | None  # the cassette in use now
    pending_faults: int


@dataclass(frozen=True, slots=True)
class CassetteReport:
    """What happened to one cassette between ``use_cassette`` and ``eject``."""

    path: str
    record_mode: str
    match_on: tuple[str, ...]
    requests: int
    replayed: int
    forwarded: int
    misses: int
    errors: int  # upstream failures and refusals for lack of a key
    miss_messages: tuple[str, ...]  # vcrpy's explanation for each miss
    interactions: int  # in the cassette at eject time
    unplayed: int  # loaded from the file but never asked for
    saved: bool  # the file was (re)written
    unreachable: int = 0  # calls the proxy could not deliver upstream (DNS, refused, timeout, TLS)
    not_recorded: tuple[str, ...] = ()  # "upstream unreachable: …" and error answers left out, with why
    near_matches: tuple[str, ...] = ()  # misses answered by a near match (near_match=…), with the similarity
    discarded_because: str = ""  # why a recording was not saved at all (keep_partial=False)
    rate_limits: tuple[str, ...] = ()  # upstream 429s the proxy waited out (RetryInfo), one line each
    quota_spent: str = ""  # the upstream quota that ran out, when calls of this cassette were refused for it
    quota_refused: int = 0  # calls answered by the proxy because the quota is spent
    played: tuple[int, ...] = ()  # indexes of the loaded interactions answered (for ``cassettes unused``)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CassetteReport:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        for name in ("match_on", "miss_messages", "not_recorded", "near_matches", "rate_limits", "played"):
            values[name] = tuple(values.get(name) or ())
        return cls(**values)


class _State(enum.Enum):
    NEW = "new"  # constructed; no process yet
    RUNNING = "running"  # the proxy process is serving
    CLOSED = "closed"  # stopped; cannot be restarted


class ProxyProcess:
    """One cassette proxy process, owned by this (host) process. Thread-safe; use as a context manager.

    ``secret_env``: more variable names the proxy must not inherit (key variables never are).
    ``rate_limit_max_wait``/``rate_limit_retries``: how an upstream 429's RetryInfo is honoured while
    recording (``proxy/_ratelimit.py``; docs/recording.md, "Quotas and rate limits").
    ``upstream_timeout``: seconds the proxy waits on the upstream per call (default 600, as DSPy's own
    client); ``control_timeout`` (default: that plus 30 s) bounds ``eject``, which waits for calls in flight.
    The proxy reads ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` and ``SSL_CERT_FILE``/``REQUESTS_CA_BUNDLE``
    from this environment (docs/recording.md, "Recording against real Gemini").
    """

    def __init__(
        self,
        *,
        upstream: str = DEFAULT_UPSTREAM,
        api_key: str | _Unset | None = UNSET,
        upstream_timeout: float = DEFAULT_UPSTREAM_TIMEOUT,
        start_timeout: float = 30.0,
        control_timeout: float | None = None,
        verbose: bool = False,
        secret_env: tuple[str, ...] | list[str] = (),
        extra_secrets: Iterable[str] | None = None,
        rate_limit_max_wait: float = 60.0,
        rate_limit_retries: int = 3,
    ) -> None:
        RateLimitPolicy(rate_limit_max_wait, rate_limit_retries)  # a bad value fails here, not in the process
        self._rate_limit = {"rate_limit_max_wait": rate_limit_max_wait, "rate_limit_retries": rate_limit_retries}
        self.upstream = upstream
        self._secret_env = tuple(secret_env)
        self._api_key = api_key_from_env(os.environ) if api_key is UNSET else api_key
        # Exact values scrubbed from every HTTP cassette besides the key (default: every secret in the env).
        self._secrets = list(secret_values(os.environ, self._secret_env) if extra_secrets is None else extra_secrets)
        self._upstream_timeout = upstream_timeout
        self._start_timeout = start_timeout
        if upstream_timeout <= 0:
            raise UsageError(f"upstream_timeout must be a positive number of seconds, not {upstream_timeout!r}")
        self._control_timeout = upstream_timeout + 30.0 if control_timeout is None else control_timeout
        self._verbose = verbose
        self._token = secrets.token_urlsafe(32)
        self._lock = threading.Lock()
        self._state = _State.NEW
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._port = 0

    def __repr__(self) -> str:
        where = f" pid={self.pid} at {self.base_url}" if self._state is _State.RUNNING else ""
        return f"<ProxyProcess {self._state.value}{where} upstream={self.upstream}>"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        """Spawn ``python -m dspy_bridge.proxy`` and wait for its ready line."""
        with self._lock:
            if self._state is not _State.NEW:
                raise RuntimeError(f"ProxyProcess is already {self._state.value}; create a new one")
            # No key variable in its environment: the key goes via stdin.
            env = child_environment(os.environ, secret_env=self._secret_env, ours={"PYTHONUNBUFFERED": "1"})
            command = [sys.executable, "-m", "dspy_bridge.proxy", *(["--verbose"] if self._verbose else [])]
            with contextlib.ExitStack() as cleanup_on_fail:
                self._stderr = cleanup_on_fail.enter_context(tempfile.TemporaryFile())
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=self._stderr,
                    env=env,
                    # Its own session: a terminal's Ctrl-C interrupts the host, which then ejects the test's
                    # cassette without saving; the proxy still dies with the host (stdin EOF, PDEATHSIG).
                    start_new_session=True,
                )
                cleanup_on_fail.callback(self._reap, process)
                assert process.stdin is not None and process.stdout is not None
                config = {
                    "control_token": self._token,
                    "upstream": self.upstream,
                    "api_key": self._api_key,
                    "secrets": self._secrets,
                    "upstream_timeout": self._upstream_timeout,
                    "parent_pid": os.getpid(),
                    **self._rate_limit,
                }
                process.stdin.write(json.dumps(config).encode() + b"\n")
                process.stdin.flush()
                ready = self._read_ready_line(process)
                self._port = int(ready["port"])
                self._process = process
                self._state = _State.RUNNING
                cleanup_on_fail.pop_all()
        return self

    def _read_ready_line(self, process: subprocess.Popen[bytes]) -> dict[str, Any]:
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            if not selector.select(self._start_timeout):
                raise self._startup_failed(process, f"no ready line within {self._start_timeout:g} s")
        line = process.stdout.readline()
        try:
            ready = json.loads(line)
        except ValueError:
            raise self._startup_failed(process, "it exited or printed no ready line") from None
        if not isinstance(ready, dict) or "port" not in ready:
            raise self._startup_failed(process, f"unexpected ready line {line!r}")
        return ready

    def _startup_failed(self, process: subprocess.Popen[bytes], why: str) -> BridgeError:
        self._reap(process)
        tail = ""
        if self._stderr is not None:
            self._stderr.seek(0)
            tail = self._stderr.read()[-4000:].decode("utf-8", errors="replace")
        return BridgeError(
            f"the cassette proxy did not start: {why} (exit code {process.returncode})"
            + (f"\n--- its stderr ---\n{tail}" if tail else "")
        )

    @staticmethod
    def _reap(process: subprocess.Popen[bytes]) -> None:
        """EOF on stdin, then SIGTERM, then SIGKILL; always wait."""
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        for escalate in (None, process.terminate, process.kill):
            if process.poll() is not None:
                return
            if escalate is not None:
                with contextlib.suppress(ProcessLookupError):
                    escalate()
            try:
                process.wait(timeout=5)
                return
            except subprocess.TimeoutExpired:
                continue
        process.wait()

    def close(self) -> None:
        """Stop the proxy. A cassette still in use is discarded: ``eject()`` first to keep it. Idempotent."""
        with self._lock:
            process, self._process = self._process, None
            self._state = _State.CLOSED
        if process is not None:
            self._reap(process)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- addresses -----------------------------------------------------------------------------

    def _running(self) -> subprocess.Popen[bytes]:
        if self._state is not _State.RUNNING or self._process is None:
            raise RuntimeError(f"ProxyProcess is {self._state.value}; call start() or use it as a context manager")
        return self._process

    @property
    def pid(self) -> int:
        return self._running().pid

    @property
    def port(self) -> int:
        self._running()
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1beta``: the ``api_base`` real workers use."""
        return f"http://127.0.0.1:{self.port}/v1beta"

    def lm_kwargs(self) -> dict[str, str]:
        """``dspy.LM`` keyword arguments that route a Gemini model through this proxy."""
        return {"api_base": self.base_url, "api_key": PLACEHOLDER_KEY}

    # -- control -------------------------------------------------------------------------------

    def _call(self, method: str, endpoint: str, payload: Any = None) -> dict[str, Any]:
        port = self.port
        body = json.dumps(payload).encode() if payload is not None else None
        connection = HTTPConnection("127.0.0.1", port, timeout=self._control_timeout)
        try:
            headers = {TOKEN_HEADER: self._token, "Content-Type": "application/json"}
            connection.request(method, CONTROL_PREFIX + endpoint, body=body, headers=headers)
            response = connection.getresponse()
            status, raw = response.status, response.read()
        except (OSError, HTTPException) as exc:
            alive = self._process is not None and self._process.poll() is None
            raise BridgeError(
                f"cassette proxy control call {method} {endpoint} failed: {exc!r}"
                + ("" if alive else " (the proxy process has exited)")
            ) from exc
        finally:
            connection.close()
        data = json.loads(raw) if raw else {}
        if status == 200:
            return data if isinstance(data, dict) else {}
        error = data.get("error", {}) if isinstance(data, dict) else {}
        message = str(error.get("message") or raw[:500])
        if error.get("type") == "CassetteCorrupt":
            raise CassetteCorrupt(message)
        if error.get("type") == "UsageError":
            raise UsageError(message)
        raise BridgeError(f"cassette proxy refused {method} {endpoint} (HTTP {status}): {message}")

    def use_cassette(
        self,
        path: str | os.PathLike[str],
        *,
        record_mode: str | RecordMode = RecordMode.NONE,
        match_on: tuple[str, ...] | list[str] = DEFAULT_MATCH_ON,
        ignore_body_fields: tuple[str, ...] | list[str] = (),
        allow_playback_repeats: bool = False,
        record_errors: bool = False,
        record_empty: bool = False,
        keep_partial: bool = True,
        near_match: float | None = None,
        filter_headers: tuple[str, ...] | list[str] = (),
        filter_query_parameters: tuple[str, ...] | list[str] = (),
        filter_post_data_parameters: tuple[str, ...] | list[str] = (),
        stream_chunks: int | None = None,
    ) -> None:
        """Answer calls from (and record into) this vcrpy cassette until ``eject()``.

        ``record_mode``: ``none`` (replay only, the default), ``once``, ``new_episodes``, ``all``
        (vcrpy's meanings) or ``rewrite`` (``all``, keeping only this run's recordings); a
        ``RecordMode`` works too. ``match_on``: vcrpy matcher names; the key is never compared.
        ``ignore_body_fields``: dotted JSON paths (``*`` wildcards) the ``body`` matcher skips.
        ``record_errors``: also record error statuses the upstream answers (default: they reach the
        worker but not the file; ``report.not_recorded`` says so). An unreachable upstream is never
        recorded; ``keep_partial=False`` then discards the whole recording. ``record_empty``: a
        recording run that made no call still writes the file (no interactions). ``near_match``: a
        difflib ratio (e.g. 0.9) at which a miss is answered by the most similar recording
        (``report.near_matches``). ``filter_*``: more headers, query or form parameters never stored.
        ``stream_chunks``: replayed Gemini event streams are re-cut into N characters of text per event.
        Raises ``CassetteCorrupt`` for an unreadable file, ``UsageError`` for bad options or when a
        cassette is already in use.
        """
        mode = RecordMode.parse(record_mode).value  # a misspelling fails here, listing the modes
        if near_match is not None and not 0.0 < float(near_match) <= 1.0:
            raise UsageError(f"near_match must be a similarity in (0, 1], e.g. 0.9, not {near_match!r}")
        payload = {
            "path": str(Path(path).absolute()),
            "record_mode": mode,
            "match_on": list(match_on),
            "ignore_body_fields": list(ignore_body_fields),
            "allow_playback_repeats": allow_playback_repeats,
            "record_errors": record_errors,
            "record_empty": record_empty,
            "keep_partial": keep_partial,
            "near_match": near_match,
            "filter_headers": list(filter_headers),
            "filter_query_parameters": list(filter_query_parameters),
            "filter_post_data_parameters": list(filter_post_data_parameters),
            "stream_chunks": stream_chunks,
        }
        self._call("POST", "cassette", payload)

    def eject(self, *, save: bool = True) -> CassetteReport:
        """Stop using the cassette and write it (unless ``save=False``); says what happened."""
        return CassetteReport.from_json(self._call("DELETE", "cassette" + ("" if save else "?save=0"))["report"])

    def inject_faults(self, *faults: Fault) -> int:
        """Queue faults for the next calls (in order); returns how many calls are now queued to fail."""
        return int(self._call("POST", "faults", {"faults": [fault.to_json() for fault in faults]})["pending"])

    def clear_faults(self) -> int:
        """Drop queued faults; returns how many were dropped."""
        return int(self._call("DELETE", "faults")["cleared"])

    def stats(self) -> ProxyStats:
        return ProxyStats(**self._call("GET", "stats"))
