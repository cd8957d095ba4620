"""Record modes, with vcrpy/pytest-recording names and one documented meaning each."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from dspy_bridge._exceptions import UsageError

__all__ = ["RECORD_MODES", "RecordMode"]


class RecordMode(StrEnum):
    """When requests go to real workers and get written to the bridge cassette."""

    NONE = "none"  # replay only (the default); a request with no recording is a cassette_miss
    ONCE = "once"  # record when the cassette file does not exist yet, else replay only
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

    def records(self, path: str | Path) -> bool:
        """Does a test in this mode run on real workers and record into ``path``?"""
        if self is RecordMode.NONE:
            return False
        if self is RecordMode.ONCE:
            return not Path(path).exists()
        return True

    @property
    def replays_existing(self) -> bool:
        """Are recordings already in the file answered from the file (host-side) while recording?"""
        return self is RecordMode.NEW_EPISODES


RECORD_MODES: tuple[str, ...] = tuple(mode.value for mode in RecordMode)
