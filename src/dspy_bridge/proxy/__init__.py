"""The cassette proxy: real DSPy workers reach Gemini through a loopback HTTP server that
records and replays with vcrpy, in its own process (vcrpy patches ``http.client`` process-wide).

Host side: ``ProxyProcess`` (start/stop, ``use_cassette``/``eject``, ``inject_faults``, ``stats``).
Files: ``verify_http_cassette`` raises ``SecretLeak`` on anything key-shaped.
See docs/recording.md for the team workflow.
"""

from __future__ import annotations

from dspy_bridge.proxy._constants import DEFAULT_MATCH_ON, DEFAULT_UPSTREAM, ERROR_HEADER, PLACEHOLDER_KEY
from dspy_bridge.proxy._control import CassetteReport, ProxyProcess, ProxyStats
from dspy_bridge.proxy._faults import Fault
from dspy_bridge.proxy._scrub import find_http_secrets, verify_http_cassette

__all__ = [
    "DEFAULT_MATCH_ON",
    "DEFAULT_UPSTREAM",
    "ERROR_HEADER",
    "PLACEHOLDER_KEY",
    "CassetteReport",
    "Fault",
    "ProxyProcess",
    "ProxyStats",
    "find_http_secrets",
    "verify_http_cassette",
]
