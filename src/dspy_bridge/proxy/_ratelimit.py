"""Upstream 429s while recording: honour Gemini's RetryInfo, and stop asking once a quota is spent.

Real Gemini answers a rate limit with 429 RESOURCE_EXHAUSTED whose body carries a QuotaFailure (which
quota) and a RetryInfo (``"retryDelay": "36s"``) but **no** ``Retry-After`` header, so DSPy backs off
1, 2, 4 s and burns its retries inside a minute-long window. The proxy reads the body instead::

    upstream 429 ─► RetryInfo delay ≤ max_wait and tries left ─► wait, ask upstream again (not recorded)
               ├─► tries used up ─► the live 429 to the worker, plus Retry-After from RetryInfo (not recorded)
               └─► a per-day quota, or a delay > max_wait ─► the quota is spent: this and every later
                   upstream-bound call get a proxy-made 429 naming the quota at once (never recorded)

Replayed answers are never touched, nor anything while the test asked to record errors
(``record_errors=True``: the 429 is what it wants to keep). Each wait is written to stderr as it starts.
"""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from dspy_bridge._gemini import RateLimit, rate_limit_of

if TYPE_CHECKING:  # _session pulls in the cassette machinery; the host-side client needs only the policy
    from dspy_bridge.proxy._session import Exchange

__all__ = ["QUOTA_SPENT", "RateLimitPolicy", "RateLimiter"]

QUOTA_SPENT = "quota-spent"  # the ERROR_HEADER value of the proxy's own answer for a spent quota


@dataclass(frozen=True, slots=True)
class RateLimitPolicy:
    """How long the proxy may wait for a rate limit, and how often it asks again.

    ``RateLimitPolicy(max_wait=60.0, retries=3)``: a RetryInfo delay up to ``max_wait`` seconds is
    waited out, at most ``retries`` times per call; a longer one (or a per-day quota) means the quota
    is spent for this run.
    """

    max_wait: float = 60.0
    retries: int = 3

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_wait) and self.max_wait >= 0):
            raise ValueError(f"rate_limit_max_wait must be a number of seconds >= 0, not {self.max_wait!r}")
        if self.retries < 0:
            raise ValueError(f"rate_limit_retries must be >= 0, not {self.retries!r}")


class RateLimiter:
    """One per proxy process (a quota is the key's, not a cassette's). Thread-safe."""

    def __init__(
        self, policy: RateLimitPolicy, closing: threading.Event, log: Callable[[str], None] | None = None
    ) -> None:
        self.policy = policy
        self._closing = closing
        self._log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self._lock = threading.Lock()
        self._spent: str | None = None  # the message naming the spent quota
        self._notes: list[dict[str, Any]] = []  # since the last drain (one cassette)
        self.waited = 0.0
        self.refused = 0

    @property
    def spent(self) -> str | None:
        """Why nothing more goes upstream in this run, or None."""
        with self._lock:
            return self._spent

    def refuse(self, what: str) -> Exchange:
        """The proxy's own answer to an upstream-bound call once the quota is spent."""
        with self._lock:
            self.refused += 1
            message = self._spent or ""
            self._notes.append({"kind": "quota_refused", "call": what})
        return _refusal(message)

    def run(self, what: str, call: Callable[[], Exchange], *, record_errors: bool = False) -> Exchange:
        """``call()`` (one exchange through the cassette), again after each RetryInfo wait the policy allows."""
        tries = 0
        while True:
            exchange = call()
            if exchange.kind != "forwarded" or exchange.status != 429 or exchange.streamed or record_errors:
                return exchange
            limit = rate_limit_of(exchange.body)
            if limit is None or limit.retry_delay is None:
                return exchange  # no RetryInfo: nothing to go by, the worker's own back-off decides
            if limit.daily or limit.retry_delay > self.policy.max_wait:
                return self._mark_spent(what, limit)
            if tries >= self.policy.retries:
                self._note(what, f"still rate limited after {tries} wait(s); answered 429 with Retry-After", limit)
                return _with_retry_after(exchange, limit.retry_delay)
            tries += 1
            self._log(
                f"dspy-bridge proxy: {what}: upstream rate limit ({limit.describe()}); waiting "
                f"{limit.retry_delay:g} s as its RetryInfo asks (try {tries} of {self.policy.retries})"
            )
            if self._closing.wait(limit.retry_delay):
                return exchange
            with self._lock:
                self.waited += limit.retry_delay
            self._note(what, f"waited {limit.retry_delay:g} s for the upstream rate limit, then asked again", limit)

    def report(self) -> dict[str, Any]:
        """What happened since the last report, for one cassette's: waits, and the spent quota if any."""
        with self._lock:
            notes, self._notes = self._notes, []
            spent = self._spent or ""
        return {
            "rate_limits": [note["message"] for note in notes if note["kind"] == "rate_limited"],
            "quota_spent": spent if any(note["kind"] != "rate_limited" for note in notes) else "",
            "quota_refused": sum(1 for note in notes if note["kind"] != "rate_limited"),
        }

    # ------------------------------------------------------------------------------------------

    def _note(self, what: str, text: str, limit: RateLimit) -> None:
        with self._lock:
            self._notes.append(
                {"kind": "rate_limited", "call": what, "message": f"{what}: {text} ({limit.describe()})"}
            )

    def _mark_spent(self, what: str, limit: RateLimit) -> Exchange:
        why = (
            "a per-day quota"
            if limit.daily
            else f"the upstream asks to retry in {limit.retry_delay:g} s, more than the proxy waits "
            f"(rate_limit_max_wait={self.policy.max_wait:g} s)"
        )
        message = (
            f"upstream {limit.describe()} is spent ({why}). Nothing more is sent upstream in this run and "
            "nothing was recorded for these calls; record again when the quota resets, or with a key on a "
            "higher tier (https://ai.google.dev/gemini-api/docs/rate-limits)"
        )
        with self._lock:
            first = self._spent is None
            self._spent = self._spent or message
            self._notes.append({"kind": "quota_spent", "call": what, "message": message})
        if first:
            self._log(f"dspy-bridge proxy: {what}: {message}")
        return _refusal(message)


def _refusal(message: str) -> Exchange:
    from dspy_bridge.proxy._session import Exchange

    return Exchange(QUOTA_SPENT, 429, "Too Many Requests", message=message)


def _with_retry_after(exchange: Exchange, delay: float) -> Exchange:
    """The live 429 plus ``Retry-After`` (whole seconds, rounded up), which DSPy honours and Gemini omits."""
    headers = [(name, value) for name, value in exchange.headers if name.lower() != "retry-after"]
    return replace(exchange, headers=[*headers, ("Retry-After", str(math.ceil(delay)))])
