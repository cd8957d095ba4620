"""Session affinity and state replay.

A session is pinned to one worker while that worker lives. The pool remembers, per session, the
requests that established state on it (``STATE_COMMANDS``), compacted so replay reproduces what
the worker held: a later ``configure_lm`` replaces an earlier one, re-creating a program replaces
its earlier definition, deleting one drops its definition. When the worker dies (or is recycled),
the next request re-pins the session and replays this history — program ids are deterministic, so
the same ids come back. API keys in ``configure_lm`` live only here, in memory, never in reprs.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from dspy_bridge.protocol import program_id_for

if TYPE_CHECKING:
    from dspy_bridge.pool._worker import WorkerHandle

__all__ = ["STATE_COMMANDS", "History", "SessionState"]

STATE_COMMANDS = frozenset({"configure_lm", "create_program", "delete_program", "stub_program"})


class History:
    """The state-establishing requests of a session (or of the pool's default state), compacted."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: list[tuple[str, dict[str, Any]]] = []

    def remember(self, command: str, args: dict[str, Any]) -> None:
        """Record a request that succeeded; non-state commands are ignored."""
        if command not in STATE_COMMANDS:
            return
        args = dict(args)
        if command == "configure_lm":
            self._drop(lambda c, a: c == "configure_lm")
        elif command == "create_program":
            program_id = program_id_for(args)
            self._drop(lambda c, a: c == "create_program" and program_id_for(a) == program_id)
        elif command == "delete_program":
            deleted = args.get("program_id")
            self._drop(lambda c, a: c == "create_program" and program_id_for(a) == deleted)
            return
        self._entries.append((command, args))

    def _drop(self, match: Any) -> None:
        self._entries = [(c, a) for c, a in self._entries if not match(c, a)]

    def entries(self) -> list[tuple[str, dict[str, Any]]]:
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<History {[command for command, _ in self._entries]}>"  # args may hold an API key


class SessionState:
    """One session: the worker it is pinned to, its history, and a lock serialising re-pins."""

    __slots__ = ("history", "lock", "repins", "session_id", "worker")

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.worker: WorkerHandle | None = None
        self.history = History()
        self.lock = asyncio.Lock()
        self.repins = 0

    def pinned(self) -> WorkerHandle | None:
        """The pinned worker if it still takes work (a dead or draining worker means: re-pin)."""
        worker = self.worker
        return worker if worker is not None and worker.accepts_work() else None

    def __repr__(self) -> str:
        where = self.worker.worker_id if self.worker is not None else "unpinned"
        return f"<SessionState {self.session_id!r} on {where} history={len(self.history)}>"
