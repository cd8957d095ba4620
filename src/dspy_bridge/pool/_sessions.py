"""Session affinity, state replay, and the pool-wide default state.

A session is pinned to one worker while that worker lives. The pool remembers, per session, the
requests that established state on it (``STATE_COMMANDS``), compacted so replay reproduces what
the worker held: a later ``configure_lm`` replaces an earlier one, re-creating a program replaces
its earlier definition, deleting one drops its definition. When the worker dies (or is recycled),
the next request re-pins the session and replays this history — program ids are deterministic, so
the same ids come back. API keys in ``configure_lm`` live only here, in memory, never in reprs.

State sent without a session is pool-wide (``DefaultState``): every worker, and every worker started
later, gets it before it takes a request. ``Sessions`` owns both, and is the only writer of which
session is pinned where; it sends through the pool's ``call`` on slots reserved from ``Slots``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from dspy_bridge._exceptions import BridgeError, HandlerError
from dspy_bridge.pool._slots import Repin, Slots
from dspy_bridge.protocol import program_id_for
from dspy_bridge.protocol._commands import STATE_COMMANDS

if TYPE_CHECKING:
    from dspy_bridge.pool._stats import Counters
    from dspy_bridge.pool._worker import WorkerHandle

__all__ = ["STATE_COMMANDS", "Call", "DefaultState", "History", "SessionState", "Sessions"]

log = logging.getLogger("dspy_bridge.pool")

# Send on a slot already reserved on the handle: (handle, command, args, session_id, context, timeout).
Call = Callable[["WorkerHandle", str, dict[str, Any], str | None, dict[str, Any] | None, float | None], Awaitable[Any]]


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


class DefaultState:
    """The pool-wide state (default LM, anonymous programs) and how much of it each worker has."""

    __slots__ = ("_applied", "_entries", "_locks")

    def __init__(self, lm: dict[str, Any] | None, allowed_hosts: list[str] | None = None) -> None:
        self._entries: list[tuple[str, dict[str, Any]]] = []
        if allowed_hosts is not None:  # first: the guard is on before anything else reaches the worker
            self._entries.append(("allow_hosts", {"hosts": list(allowed_hosts)}))
        if lm is not None:
            self._entries.append(("configure_lm", dict(lm)))
        self._applied: dict[WorkerHandle, int] = {}
        self._locks: dict[WorkerHandle, asyncio.Lock] = {}

    def add(self, command: str, args: dict[str, Any]) -> None:
        self._entries.append((command, dict(args)))

    async def apply(self, handle: WorkerHandle, slots: Slots, call: Call, timeout: float | None) -> None:
        """Send ``handle`` what it has not seen yet, in order (one applier per worker at a time)."""
        lock = self._locks.setdefault(handle, asyncio.Lock())
        async with lock:
            while self._applied.get(handle, 0) < len(self._entries):
                command, args = self._entries[self._applied.get(handle, 0)]
                slots.reserve(handle)
                try:
                    await call(handle, command, args, None, None, timeout)
                except HandlerError as exc:
                    if not (command == "delete_program" and exc.type == "program_not_found"):
                        raise
                self._applied[handle] = self._applied.get(handle, 0) + 1

    def forget(self, handle: WorkerHandle) -> None:
        self._applied.pop(handle, None)
        self._locks.pop(handle, None)


class Sessions:
    """Every session of one pool: where it is pinned, what it holds, and the pool-wide default state."""

    def __init__(
        self,
        slots: Slots,
        call: Call,
        *,
        lm: dict[str, Any] | None,
        allowed_hosts: list[str] | None = None,
        counters: Counters,
        emit: Callable[..., None],
        recycle: Callable[[WorkerHandle], None],
        request_timeout: float | None,
    ) -> None:
        self._slots = slots
        self._call = call
        self._counters = counters
        self._emit = emit
        self._recycle = recycle
        self._request_timeout = request_timeout
        self._sessions: dict[str, SessionState] = {}
        self.defaults = DefaultState(lm, allowed_hosts)

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def __getitem__(self, session_id: str) -> SessionState:
        return self._sessions[session_id]

    def worker_of(self, session_id: str) -> WorkerHandle | None:
        """The worker a session is pinned to right now, if any."""
        session = self._sessions.get(session_id)
        return session.worker if session is not None else None

    def pinned(self, session_id: str) -> WorkerHandle | None:
        """The session's worker if it is pinned to one that takes work now (else a checkout must pin it)."""
        session = self._sessions.get(session_id)
        return session.pinned() if session is not None else None

    def pin_new(self, session_id: str, handle: WorkerHandle) -> bool:
        """Pin a session that does not exist yet (nothing to replay) to ``handle``; False if it exists now."""
        session = SessionState(session_id)
        session.worker = handle
        if self._sessions.setdefault(session_id, session) is not session:
            return False
        handle.pin(session_id)
        return True

    def drop(self, session_id: str) -> WorkerHandle | None:
        """Forget a session now (``SyncPool``'s direct close); its worker, if it still takes work."""
        session = self._sessions.pop(session_id, None)
        if session is None or session.worker is None:
            return None
        session.worker.unpin(session_id)
        return session.pinned()

    def remember_now(self, session_id: str, command: str, args: dict[str, Any]) -> None:
        """A session's state command succeeded on ``SyncPool``'s direct lane: keep it for replay."""
        session = self._sessions.get(session_id)
        if session is not None:
            session.history.remember(command, args)

    async def prepare(self, handle: WorkerHandle) -> None:
        """A new worker gets the pool-wide state before its first request."""
        await self.defaults.apply(handle, self._slots, self._call, self._request_timeout)

    def forget_worker(self, handle: WorkerHandle) -> None:
        self.defaults.forget(handle)

    async def worker_for(self, session_id: str, probe: bool, deadline: float) -> WorkerHandle:
        """The session's worker with a reserved slot; re-pins (and replays the history) if it died."""
        session = self._sessions.get(session_id)
        if session is None:
            session = self._sessions[session_id] = SessionState(session_id)
        while True:
            pinned = session.pinned()
            if pinned is not None:
                try:
                    return await self._slots.checkout(pinned, probe, deadline)
                except Repin:
                    continue
            async with session.lock:
                if session.pinned() is not None:
                    continue
                return await self._repin(session, probe, deadline)

    async def _repin(self, session: SessionState, probe: bool, deadline: float) -> WorkerHandle:
        previous = session.worker
        if previous is not None:
            previous.unpin(session.session_id)
        session.worker = None
        handle = await self._slots.checkout(None, probe, deadline)
        try:
            await self._replay(session, handle)
        except BaseException:
            self._slots.release(handle)
            raise
        session.worker = handle
        handle.pin(session.session_id)
        if previous is not None:
            session.repins += 1
            self._counters.repins += 1
            replayed = len(session.history)
            self._emit(
                "session_repinned",
                handle,
                session_id=session.session_id,
                previous=previous.worker_id,
                replayed=replayed,
            )
            log.info(
                "session %s moved from %s to %s; replayed %d requests",
                session.session_id,
                previous.worker_id,
                handle.worker_id,
                replayed,
            )
        return handle

    async def _replay(self, session: SessionState, handle: WorkerHandle) -> None:
        """Send the session's history to its new worker (the checkout's slot stays reserved for the request)."""
        for command, args in session.history.entries():
            self._slots.reserve(handle)
            await self._call(handle, command, args, session.session_id, None, self._request_timeout)

    async def remember(
        self, command: str, args: dict[str, Any], session_id: str | None, ready: list[WorkerHandle]
    ) -> None:
        """A state command succeeded: keep it for replay (a session's) or give it to every worker (pool-wide)."""
        if session_id is not None:
            session = self._sessions.get(session_id)
            if session is not None:
                session.history.remember(command, args)
            return
        self.defaults.add(command, args)
        results = await asyncio.gather(*(self.prepare(w) for w in ready), return_exceptions=True)
        for handle, result in zip(ready, results, strict=True):
            if isinstance(result, HandlerError):
                log.error("worker %s refused pool-wide %s (%s); recycling it", handle.worker_id, command, result)
                if handle.accepts_work():
                    self._recycle(handle)

    async def close(self, session_id: str, *, running: bool, deadline: float) -> bool:
        """Forget a session and drop its state on its worker; True if the pool knew it."""
        session = self._sessions.pop(session_id, None)
        if session is None:
            return False
        handle = session.pinned()
        if handle is not None:
            handle.unpin(session_id)
            if running:
                try:
                    handle = await self._slots.checkout(handle, False, deadline)
                    await self._call(handle, "cleanup_session", {"session_id": session_id}, session_id, None, 5.0)
                except (Repin, BridgeError) as exc:
                    log.debug("cleanup of session %s skipped: %s", session_id, exc)
        return True
