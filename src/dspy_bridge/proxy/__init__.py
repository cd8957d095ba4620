"""The cassette proxy: real DSPy workers reach Gemini through a loopback HTTP server that
records and replays with vcrpy, in its own process (vcrpy patches ``http.client`` process-wide).

Host side: ``ProxyProcess`` (start/stop, ``use_cassette``/``eject``, ``inject_faults``, ``stats``).
Files: ``verify_http_cassette`` raises ``SecretLeak`` on anything key-shaped.
See docs/recording.md for the team workflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dspy_bridge.proxy._constants import (
    DEFAULT_MATCH_ON,
    DEFAULT_UPSTREAM,
    DEFAULT_UPSTREAM_TIMEOUT,
    ERROR_HEADER,
    PLACEHOLDER_KEY,
)
from dspy_bridge.proxy._control import CassetteReport, ProxyProcess, ProxyStats
from dspy_bridge.proxy._faults import Fault

if TYPE_CHECKING:
    from dspy_bridge.proxy._scrub import find_http_secrets, verify_http_cassette

# The scrubbing checks pull in the cassette models (pydantic, YAML): loaded on first use, so that binding the
# control client early (the pytest plugin does, next to pytest-recording) costs a run without bridge tests nothing.
_LAZY = {"find_http_secrets", "verify_http_cassette"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from dspy_bridge.proxy import _scrub

        return getattr(_scrub, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_MATCH_ON",
    "DEFAULT_UPSTREAM",
    "DEFAULT_UPSTREAM_TIMEOUT",
    "ERROR_HEADER",
    "PLACEHOLDER_KEY",
    "CassetteReport",
    "Fault",
    "ProxyProcess",
    "ProxyStats",
    "find_http_secrets",
    "verify_http_cassette",
]
