"""Host-side recording: capture what real workers answer, merge it into the cassette file.

Recording happens around the pool, never inside workers::

    test ──► Bridge ──► Recorder.lookup (new_episodes: already recorded? answer from the file)
                 │
                 └──► Pool (real workers) ──► response ──► Recorder.record ──► pending list
                                                                 │
    test ends ──► Recorder.save: lock file ─ re-read ─ merge ─ scrub ─ temp file ─ fsync ─ rename

Session ids are random per run, so they are written as stable labels (``s1``, ``s2`` in order
of first appearance; the worker-wide default session stays ``null``). ``execute_program``
requests are stored with the canonical definition of their program and the session's model,
learnt from the ``create_program`` and ``configure_lm`` requests the recorder saw.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from dspy_bridge._exceptions import CassetteCorrupt, HandlerError, UsageError
from dspy_bridge._modes import RecordMode
from dspy_bridge._secrets import secret_values
from dspy_bridge.cassettes._cassette import Cassette, current_versions, default_meta
from dspy_bridge.cassettes._format import CassetteDocument, dump_document, without_gc
from dspy_bridge.cassettes._match import REPLAYED_COMMANDS, Matcher, canonical_response, plain_keep_order
from dspy_bridge.cassettes._replay import Replay, make_request
from dspy_bridge.cassettes._scrub import scrub_interaction
from dspy_bridge.cassettes._storage import cassette_lock, remove_stale_temps, write_atomic
from dspy_bridge.protocol._programs import canonical_json, canonical_program, program_id_for

__all__ = ["NOT_RECORDED", "Recorder", "default_run_id", "error_response"]

#: Commands that say nothing about the program's behaviour; never written to a cassette.
NOT_RECORDED = frozenset(
    {"ping", "get_stats", "shutdown", "reset_state", "cleanup_session", "stub_program", "cassette_report"}
)
_PROCESS_RUN_ID = uuid.uuid4().hex[:12]


def _is_loopback(url: object) -> bool:
    return isinstance(url, str) and url.startswith(("http://127.0.0.1:", "http://localhost:", "http://[::1]:"))


def default_run_id() -> str:
    """The run id of a ``Recorder`` given none: one per process (the pytest plugin passes xdist's run uid)."""
    return _PROCESS_RUN_ID


def error_response(exc: HandlerError) -> dict[str, Any]:
    """The response map for a request that failed with ``HandlerError`` (for ``Recorder.record``)."""
    return {
        "ok": False,
        "error": {
            "type": exc.type,
            "message": exc.message,
            "retryable": exc.retryable,
            "details": exc.error_details or None,
        },
    }


class Recorder:
    """Records request/response maps into one cassette, as ``mode`` says (see ``RecordMode``).

    Usage::

        with Recorder(path, RecordMode.ONCE, meta={"recorded_against": "fake-gemini"}) as recorder:
            if recorder.recording:            # else: run the test on mock workers instead
                result = await pool.request(command, args, session_id=sid)
                recorder.record({"command": command, "args": args, "session_id": sid},
                                {"ok": True, "result": result})
        # saved (merged, scrubbed, atomic) on exit
    """

    def __init__(
        self,
        path: str | Path,
        mode: str | RecordMode = RecordMode.NONE,
        *,
        meta: dict[str, Any] | None = None,
        run_id: str | None = None,
        match_on: list[str] | tuple[str, ...] | None = None,
        ignore: list[str] | tuple[str, ...] = (),
        secrets: Iterable[str] | None = None,
    ) -> None:
        self.path = Path(path)
        # Exact values removed before writing, whatever their shape (default: every secret in the environment).
        self._secrets = tuple(secret_values(os.environ) if secrets is None else secrets)
        self.mode = RecordMode.parse(mode)
        #: Whether this test runs on real workers and records (decided once, at construction).
        self.recording = self.mode.records(self.path)
        self.run_id = run_id or default_run_id()
        self._meta = dict(meta or {})
        self._matcher = Matcher(match_on, ignore)
        self._labels: dict[str, str] = {}
        self._programs: dict[tuple[str | None, str], dict[str, Any]] = {}
        self._models: dict[str | None, str] = {}
        self._first_model: str | None = None
        self._pending: list[dict[str, Any]] = []
        self._seen_setup: set[str] = set()
        self._rerecorded: set[str] = set()  # match keys of replayable requests recorded in this run
        self._rerecorded_setup: set[str] = set()  # (command, session, args) of the other ones
        self._saved = False
        # What this recorder already saved, by canonical JSON: never dropped by its own later saves
        self._written: dict[str, dict[str, Any]] = {}
        self._existing: Cassette | None = None
        self._replays: dict[str | None, Replay] = {}
        self._lock = threading.Lock()  # record() may run on the pool's thread while the test saves
        if self.recording and self.mode.replays_existing and self.path.exists():
            self._existing = Cassette.load(self.path)

    # -- translating protocol requests into cassette requests ---------------------------------
    def _label(self, session_id: str | None) -> str | None:
        if session_id is None:
            return None
        label = self._labels.get(session_id)
        if label is None:
            label = self._labels[session_id] = f"s{len(self._labels) + 1}"
        return label

    def _recorded_request(self, request: dict[str, Any]) -> dict[str, Any]:
        command = str(request["command"])
        session_id = request.get("session_id")
        args = dict(request.get("args") or {})
        if command == "configure_lm" and _is_loopback(args.get("api_base")):
            # The cassette proxy's port changes every run; keeping it would churn every re-recording.
            args["api_base"] = "<loopback proxy>"
        program = model = None
        if command in REPLAYED_COMMANDS:
            program = self._programs.get((session_id, str(args.get("program_id"))))
            model = self._models.get(session_id) or self._models.get(None)
        return make_request(command, args, session=self._label(session_id), program=program, model=model)

    def _learn(self, command: str, args: dict[str, Any], session_id: str | None, response: dict[str, Any]) -> None:
        if not response["ok"]:
            return
        result = response.get("result")
        if command == "configure_lm" and isinstance(args.get("model"), str):
            self._models[session_id] = args["model"]
            self._first_model = self._first_model or args["model"]
        elif command == "create_program":
            program_id = result.get("program_id") if isinstance(result, dict) else None
            self._programs[(session_id, str(program_id or program_id_for(args)))] = canonical_program(args)
        elif command == "delete_program":
            self._programs.pop((session_id, str(args.get("program_id"))), None)

    # -- the API the Bridge uses --------------------------------------------------------------
    def lookup(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """In ``new_episodes`` mode: the recorded response for ``request`` if the file has it, else ``None``.

        ``request`` is ``{command, args, session_id}``; only ``execute_program`` is answered.
        """
        with self._lock:
            return self._lookup(request)

    def _lookup(self, request: dict[str, Any]) -> dict[str, Any] | None:
        if self._existing is None or request.get("command") not in REPLAYED_COMMANDS:
            return None
        session_id = request.get("session_id")
        replay = self._replays.get(session_id)
        if replay is None:
            replay = self._replays[session_id] = Replay(self._existing, self._matcher)
        found = replay.lookup(self._recorded_request(request))
        if found is None:
            return None
        answer: dict[str, Any] = plain_keep_order(found.response)
        return answer

    def record(self, request: dict[str, Any], response: dict[str, Any]) -> None:
        """Capture one exchange: ``request`` = ``{command, args, session_id}``, ``response`` =
        ``{ok: true, result}`` or ``{ok: false, error: {type, message, ...}}`` (see ``error_response``)."""
        with self._lock:
            self._record(request, response)

    def _record(self, request: dict[str, Any], response: dict[str, Any]) -> None:
        if not self.recording:
            raise UsageError(
                f"this Recorder does not record (mode {self.mode.value!r}"
                + (", and the cassette already exists" if self.mode is RecordMode.ONCE else "")
                + f"): check Recorder.recording before sending {self.path.name}'s requests to real workers"
            )
        command = request.get("command")
        if not isinstance(command, str) or command in NOT_RECORDED:
            return
        session_id = request.get("session_id")
        stored_response = canonical_response(response)
        configured = stored_response.get("result", {}).get("configured") if command == "configure_lm" else None
        if isinstance(configured, dict) and _is_loopback(configured.get("api_base")):
            stored_response["result"]["configured"] = {**configured, "api_base": "<loopback proxy>"}
        self._learn(command, dict(request.get("args") or {}), session_id, stored_response)
        interaction = scrub_interaction(
            {"request": self._recorded_request(request), "response": stored_response}, self._secrets
        )
        recorded = interaction["request"]
        if command in REPLAYED_COMMANDS:
            self._rerecorded.add(self._matcher.key(recorded))
        else:
            signature = canonical_json(interaction)
            if signature in self._seen_setup:  # e.g. the pool re-sent session state to a new worker
                return
            self._seen_setup.add(signature)
            self._rerecorded_setup.add(canonical_json([command, recorded.get("session"), recorded.get("args")]))
        self._pending.append(interaction)

    @property
    def pending(self) -> int:
        """Interactions recorded but not saved yet."""
        return len(self._pending)

    # -- saving -------------------------------------------------------------------------------
    def _replaced(self, interaction: dict[str, Any]) -> bool:
        request = interaction["request"]
        if request.get("command") in REPLAYED_COMMANDS:
            return self._matcher.key(request) in self._rerecorded
        return canonical_json([request.get("command"), request.get("session"), request.get("args")]) in (
            self._rerecorded_setup
        )

    def _read_current(self) -> Cassette | None:
        if not self.path.exists():
            return None
        if self._existing is not None and self._existing.unchanged_on_disk():
            return self._existing  # nobody wrote since this recorder loaded it: no need to parse it again
        try:
            return Cassette.load(self.path)
        except CassetteCorrupt:
            if self.mode is RecordMode.REWRITE:
                return None  # rewrite is the documented way out of a corrupt cassette
            raise

    def _meta_for(self, old_meta: dict[str, Any] | None) -> dict[str, Any]:
        """New metadata, or the old one with versions and the caller's overrides updated."""
        given = {key: value for key, value in {"model": self._first_model, **self._meta}.items() if value is not None}
        if old_meta is None:
            return default_meta(**given)
        versions = {key: value for key, value in current_versions().items() if value is not None}
        return {**old_meta, **versions, **given}

    def _merge(self, current: Cassette | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        old = [item.as_dict() for item in current] if current is not None else []
        old_meta = current.meta if current is not None else None
        same_run = old_meta is not None and old_meta.get("run_id") == self.run_id
        if self.mode in (RecordMode.ALL, RecordMode.REWRITE):
            # Interactions before ``run_start`` predate this run; after it, peers of this run wrote them.
            start = int(old_meta.get("run_start", 0)) if same_run and old_meta else len(old)
            start = min(max(start, 0), len(old))
            before, this_run = old[:start], old[start:]
            # What this recorder saved earlier is its own recording, whoever wrote in between (another run
            # may have moved ``run_id``/``run_start``): it is never dropped as "replaced" or "older".
            if self.mode is RecordMode.REWRITE:
                # another run's rewrite dropped ours: put them back (each rewrite run keeps its own)
                kept = {canonical_json(i) for i in old}
                before = [i for i in before if canonical_json(i) in self._written]
                before += [item for key, item in self._written.items() if key not in kept]
            else:
                before = [i for i in before if canonical_json(i) in self._written or not self._replaced(i)]
            merged = before + this_run
            meta = self._meta_for(None if self.mode is RecordMode.REWRITE and not same_run else old_meta)
            meta["run_id"], meta["run_start"] = self.run_id, len(before)
        else:
            merged = old
            meta = self._meta_for(old_meta)
        present = {canonical_json(item) for item in merged if item["request"].get("command") not in REPLAYED_COMMANDS}
        for interaction in self._pending:
            if interaction["request"]["command"] not in REPLAYED_COMMANDS:
                signature = canonical_json(interaction)
                if signature in present:
                    continue
                present.add(signature)
            merged.append(interaction)
        return meta, merged

    @staticmethod
    def _encoded(current: Cassette | None, meta: dict[str, Any], interactions: list[dict[str, Any]]) -> str | bytes:
        """The new file: the old bytes plus the new interactions when the merge only added some at the end
        (no need to encode thousands of old ones again), else the whole document. Either way it is written
        to a temporary file and renamed over the old one: a crash never leaves a torn cassette."""
        if current is not None and meta == current.meta and len(interactions) >= len(current):
            kept = zip(interactions, current.interactions, strict=False)
            if all(new["request"] is old.request and new["response"] is old.response for new, old in kept):
                appended = current.appended(interactions[len(current) :])
                if appended is not None:
                    return appended
        return without_gc(dump_document, CassetteDocument(meta, interactions))

    def save(self) -> bool:
        """Merge what was recorded into the file (locked, atomic). Returns whether it wrote."""
        if not self.recording:
            return False
        creates_file = not self._saved and self.mode in (RecordMode.ONCE, RecordMode.REWRITE)
        with self._lock:
            if not self._pending and not creates_file:
                return False
            with cassette_lock(self.path):
                remove_stale_temps(self.path)
                current = self._read_current()
                meta, interactions = self._merge(current)
                write_atomic(self.path, self._encoded(current, meta, interactions))
            self._written.update((canonical_json(item), item) for item in self._pending)
            self._pending.clear()
            self._saved = True
            return True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.save()

    def __repr__(self) -> str:
        state = "recording" if self.recording else "not recording"
        return f"<Recorder {str(self.path)!r} mode={self.mode.value} {state} pending={len(self._pending)}>"
