"""Bridge cassettes: recorded worker requests and responses that mock workers replay.

    Cassette      one cassette file: load, O(1) replay lookup, unused report, prune
    RecordMode    none | once | new_episodes | all | rewrite (vcrpy / pytest-recording names)
    Recorder      host-side recording around the pool: merge-on-write, locked, atomic, scrubbed
    verify        scan cassette files for key-shaped strings (raises SecretLeak)

The format, matching rules and record modes are documented in ``docs/cassettes.md``.
"""

from __future__ import annotations

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

for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and _obj.__module__.startswith("dspy_bridge.cassettes."):
        _obj.__module__ = "dspy_bridge.cassettes"
del _name, _obj
