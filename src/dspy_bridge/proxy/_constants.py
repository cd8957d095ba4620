"""Names shared by the proxy process and its host-side client (the wire between them)."""

from __future__ import annotations

from dspy_bridge._secrets import PLACEHOLDER_KEY  # the key workers are given: one value, shared with them

__all__ = [
    "CONTROL_PREFIX",
    "DEFAULT_MATCH_ON",
    "DEFAULT_UPSTREAM",
    "DEFAULT_UPSTREAM_TIMEOUT",
    "ERROR_HEADER",
    "PLACEHOLDER_KEY",
    "TOKEN_HEADER",
]

#: Where real Gemini lives; tests point the proxy at the bundled fake instead.
DEFAULT_UPSTREAM = "https://generativelanguage.googleapis.com"

#: Seconds the proxy waits on the upstream per call (connect, and between bytes of the answer): DSPy's own
#: client (lm15) and LiteLLM wait 600 s, and a thinking model's long answer may need it.
DEFAULT_UPSTREAM_TIMEOUT = 600.0


#: Control endpoints live on the same server under this reserved prefix.
CONTROL_PREFIX = "/__bridge__/"

#: Header carrying the random control token; a worker does not know it, so it cannot switch cassettes.
TOKEN_HEADER = "x-dspy-bridge-token"

#: Set on every answer the proxy makes up itself (miss, fault, refusal): ``cassette-miss``, ``quota-spent``,
#: ``fault``, ``no-cassette``, ``no-key``, ``upstream-unreachable``, ``upstream-tls``.
ERROR_HEADER = "x-dspy-bridge-error"

#: vcrpy matcher names: the API key is scrubbed before matching, so ``query`` ignores it.
DEFAULT_MATCH_ON: tuple[str, ...] = ("method", "path", "query", "body")
