"""A mock worker's cassettes: loaded once per file version, replay state per (session, cassette).

The worker imports this on the first request that names a cassette (never at start-up: it
pulls in pydantic and YAML). A changed file (mtime, size or inode) is loaded again and its
replay states start over. Safe under ``--max-concurrency`` > 1: one lock guards the maps.
"""

from __future__ import annotations

import os
import threading

TYPE_CHECKING = False  # typing stays off a mock worker's replay path
if TYPE_CHECKING:
    from typing import Any

    _ReplayKey = tuple[str | None, str, tuple[tuple[str, ...], tuple[str, ...]], bool]

from dspy_bridge._exceptions import UsageError
from dspy_bridge.cassettes._cassette import Cassette
from dspy_bridge.cassettes._config import CassetteConfig
from dspy_bridge.cassettes._replay import Replay, default_record_hint, missing_file_miss

__all__ = ["CassetteLibrary"]


class CassetteLibrary:
    """Loaded cassettes and the replay states of the sessions using them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cassettes: dict[str, tuple[tuple[int, int, int], Cassette]] = {}  # by absolute path
        self._replays: dict[_ReplayKey, Replay] = {}
        self._schemas: dict[tuple[str, str], tuple[Cassette, dict[str, Any] | None]] = {}

    def _cassette(self, path: str) -> Cassette | None:
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:  # a name too long, a NUL byte, a file used as a folder, no access
            raise UsageError(f"cassette path {str(path)[:300]!r} cannot be used: {exc}") from None
        signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        cached = self._cassettes.get(path)
        if cached is not None and cached[0] == signature:
            return cached[1]
        try:
            cassette = Cassette.load(path)  # CassetteCorrupt passes through
        except OSError as exc:  # e.g. a directory, or unreadable
            raise UsageError(f"cassette path {str(path)[:300]!r} cannot be read: {exc}") from None
        self._cassettes[path] = (signature, cassette)
        for key in [key for key in self._replays if key[1] == path]:
            del self._replays[key]  # recordings changed: old positions mean nothing now
        return cassette

    def play(
        self, session_id: str | None, config: CassetteConfig, request: dict[str, Any], context: dict[str, Any]
    ) -> dict[str, Any]:
        """The recorded response for ``request``; raises ``CassetteMiss`` or ``CassetteCorrupt``."""
        assert config.path is not None
        hint = config.record_hint or default_record_hint(config.path, context)
        with self._lock:
            cassette = self._cassette(config.path)
            if cassette is None:
                raise missing_file_miss(config.path, request, hint)
            key: _ReplayKey = (session_id, config.path, config.matcher.spec, config.allow_repeats)
            replay = self._replays.get(key)
            if replay is None:
                replay = self._replays[key] = Replay(cassette, config.matcher, allow_repeats=config.allow_repeats)
            attempt = context.get("attempt")
            retry = isinstance(attempt, int) and not isinstance(attempt, bool) and attempt > 0
            return replay.play(request, record_hint=hint, retry=retry).response

    def program_schema(self, path: str, program_id: str) -> dict[str, Any] | None:
        """What the recorded ``create_program`` result said about ``program_id``: ``{"schema":
        {"inputs": {...}, "outputs": {...}}, "signature": {...}, "predictors": [...], "kind": ...}`` (the last
        recording wins), or ``None``."""
        with self._lock:
            cassette = self._cassette(path)
            if cassette is None:
                return None
            cached = self._schemas.get((path, program_id))
            if cached is not None and cached[0] is cassette:
                return cached[1]
            found = None
            for item in cassette:
                result = item.response.get("result") if item.command == "create_program" else None
                if isinstance(result, dict) and result.get("program_id") == program_id and "schema" in result:
                    found = {
                        "schema": result["schema"],
                        "signature": result.get("signature"),
                        "predictors": result.get("predictors"),
                        "kind": result.get("kind"),
                    }
            self._schemas[(path, program_id)] = (cassette, found)
            return found

    def report(self, session_id: str | None, path: str) -> dict[str, Any]:
        """What this session played from ``path`` (over every matcher it used)."""
        target = os.path.abspath(path)
        with self._lock:
            cassette = self._cassette(target)
            replays = [replay for key, replay in self._replays.items() if key[0] == session_id and key[1] == target]
            if cassette is None:
                return {"cassette": str(target), "exists": False, "interactions": 0, "played": [], "unused": []}
            played = sorted({index for replay in replays for index in replay.played})
            return {
                "cassette": str(target),
                "exists": True,
                "interactions": len(cassette),
                "played": played,
                "unused": [item.index for item in cassette.unused(played)],
            }

    def forget(self, session_id: str | None = None, *, everything: bool = False) -> int:
        """Drop the replay states of one session (or all); returns how many went."""
        with self._lock:
            doomed = [key for key in self._replays if everything or key[0] == session_id]
            for key in doomed:
                del self._replays[key]
            return len(doomed)
