"""Bridge cassettes: recorded worker requests and responses that mock workers replay.

    Cassette      one cassette file: load, O(1) replay lookup, unused report, prune
    RecordMode    none | once | new_episodes | all | rewrite (vcrpy / pytest-recording names)
    Recorder      host-side recording around the pool: merge-on-write, locked, atomic, scrubbed
    verify        scan cassette files for key-shaped strings (raises SecretLeak)

The format, matching rules and record modes are documented in ``docs/cassettes.md``.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself stays off a mock worker's replay path
if TYPE_CHECKING:
    from typing import Any

    from dspy_bridge._modes import RECORD_MODES, RecordMode  # a leaf: the plugin and the proxy share it
    from dspy_bridge.cassettes._cassette import Cassette
    from dspy_bridge.cassettes._format import FORMAT_VERSION
    from dspy_bridge.cassettes._interaction import Interaction
    from dspy_bridge.cassettes._match import DEFAULT_MATCH_ON, Matcher
    from dspy_bridge.cassettes._record import Recorder, error_response
    from dspy_bridge.cassettes._replay import Replay, make_request
    from dspy_bridge.cassettes._scrub import redact_text, scrub, verify
    from dspy_bridge.cassettes._synthetic import synthetic_answer

__all__ = [
    "DEFAULT_MATCH_ON",
    "FORMAT_VERSION",
    "RECORD_MODES",
    "Cassette",
    "Interaction",
    "Matcher",
    "RecordMode",
    "Recorder",
    "Replay",
    "error_response",
    "make_request",
    "redact_text",
    "scrub",
    "synthetic_answer",
    "verify",
]

# Loaded on first use: a mock worker replaying a cassette imports only the modules replay needs (never
# pydantic, the recorder or the file lock), and the package stays cheap to import for everyone else.
_WHERE = {
    "RECORD_MODES": "dspy_bridge._modes",  # pathlib: not for a mock worker replaying a cassette
    "RecordMode": "dspy_bridge._modes",
    "Cassette": "_cassette",
    "FORMAT_VERSION": "_format",
    "Interaction": "_interaction",
    "DEFAULT_MATCH_ON": "_match",
    "Matcher": "_match",
    "Recorder": "_record",
    "error_response": "_record",
    "Replay": "_replay",
    "make_request": "_replay",
    "redact_text": "_scrub",
    "scrub": "_scrub",
    "verify": "_scrub",
    "synthetic_answer": "_synthetic",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module if "." in module else f"{__name__}.{module}"), name)
    if isinstance(value, type) and value.__module__.startswith(f"{__name__}."):
        value.__module__ = __name__  # documented as dspy_bridge.cassettes.X
    globals()[name] = value
    return value
