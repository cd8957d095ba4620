"""Record modes: the one list of names, their validation, and the one "does this record?" rule.

A leaf (stdlib and ``_exceptions`` only) because every layer that records needs the same answer:
the pytest plugin decides per test whether to run on real workers, the bridge-cassette
``Recorder`` whether to write, and the HTTP cassette proxy which vcrpy mode to open. The plugin
imports it at start-up, so it must not pull pydantic or YAML. ``dspy_bridge.RecordMode`` and
``dspy_bridge.cassettes.RecordMode`` / ``RECORD_MODES`` re-export it.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from dspy_bridge._exceptions import UsageError

__all__ = ["RECORD_MODES", "RecordMode"]


class RecordMode(StrEnum):
    """When requests go to real workers and get written to the cassettes (vcrpy / pytest-recording names)."""

    NONE = "none"  # replay only (the default); a request with no recording is a cassette_miss
    ONCE = "once"  # record when a cassette file does not exist yet, else replay only
    NEW_EPISODES = "new_episodes"  # replay what matches, send the rest to real workers and append it
    ALL = "all"  # send everything to real workers; re-recorded requests replace their old recordings
    REWRITE = "rewrite"  # send everything to real workers; the file keeps only this run's recordings

    @classmethod
    def parse(cls, value: str | RecordMode) -> RecordMode:
        """Accept a mode or its name; a misspelling lists the valid names (raises ``UsageError``)."""
        if isinstance(value, RecordMode):
            return value
        try:
            return cls(str(value).strip().lower().replace("-", "_"))
        except ValueError:
            raise UsageError(f"unknown record mode {value!r}; choose one of: {', '.join(RECORD_MODES)}") from None

    def records(self, *paths: str | Path) -> bool:
        """Does a test in this mode run on real workers and record into ``paths`` (its cassette files)?

        The one rule: ``none`` never records; ``once`` records while any of the files is missing;
        the other modes always record.
        """
        if self is RecordMode.NONE:
            return False
        if self is RecordMode.ONCE:
            return not all(Path(path).exists() for path in paths)
        return True

    @property
    def replays_existing(self) -> bool:
        """Are recordings already in the file answered from the file (host-side) while recording?"""
        return self is RecordMode.NEW_EPISODES


#: Every mode name, in documentation order: argparse/pytest ``choices``, the proxy, the tests.
RECORD_MODES: tuple[str, ...] = tuple(mode.value for mode in RecordMode)
