"""Replay state: which recordings one test (one session) has played, and why a request missed.

Identical requests get their recordings in recorded order; when they are used up, the next one
misses (or, with ``allow_repeats``, gets the last one again). One ``Replay`` belongs to one test:
the mock worker keeps one per (session id, cassette), and the pool pins a session to a worker.
"""

from __future__ import annotations

import shlex

from dspy_bridge._exceptions import CassetteMiss
from dspy_bridge.cassettes._match import VOLATILE_ARGS, Matcher, canonical_args, closest, short
from dspy_bridge.cassettes._scrub import scrub
from dspy_bridge.protocol._programs import canonical_program

TYPE_CHECKING = False  # typing stays off a mock worker's replay path
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, Protocol

    from dspy_bridge.cassettes._interaction import Interaction

    class ReplaySource(Protocol):
        """What a replay reads from a cassette (``Cassette`` is one; ``Replay`` never imports it)."""

        @property
        def path(self) -> Path: ...

        @property
        def interactions(self) -> list[Interaction]: ...

        def index(self, matcher: Matcher) -> dict[str, list[int]]: ...


__all__ = [
    "MODE_SLOT",
    "Replay",
    "default_record_hint",
    "fill_hint",
    "make_request",
    "missing_file_miss",
]


def make_request(
    command: str,
    args: dict[str, Any],
    *,
    session: str | None = None,
    program: dict[str, Any] | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """A request in the shape cassettes store and match: canonical, volatile-free, scrubbed."""
    request: dict[str, Any] = {"command": command, "session": session}
    if program is not None:
        request["program"] = program
    if model is not None:
        request["model"] = model
    args = {key: value for key, value in args.items() if key != "api_key"}
    if command == "create_program":
        args.update(canonical_program(args))  # signature whitespace never matters
        args.pop("state", None)  # the definition's state_digest stands for it: saved state never reaches a file
    request["args"] = canonical_args(args)
    scrubbed: dict[str, Any] = scrub(request)
    return scrubbed


MODE_SLOT = "{mode}"  # a record hint may leave the mode open: the miss fills in the one that will work


def default_record_hint(path: str | Path, context: dict[str, Any] | None = None) -> str:
    """The command that records what is missing (from the test id when the context has one)."""
    test_id = (context or {}).get("test_id")
    if isinstance(test_id, str) and test_id:
        return f"pytest {shlex.quote(test_id)} --bridge-record={MODE_SLOT}"
    return f"re-run the test with --bridge-record={MODE_SLOT}"


def fill_hint(hint: str, mode: str) -> str:
    """The hint with the record mode that fixes this miss: ``once`` for a missing file (``once`` never
    touches an existing one), ``new_episodes`` to add a recording, ``rewrite`` when the program itself
    changed (its old recordings are then dead weight)."""
    return hint.replace(MODE_SLOT, mode)


def describe(request: dict[str, Any]) -> str:
    """One line naming a request: command, program signature and inputs."""
    parts = [str(request.get("command"))]
    program = request.get("program")
    if isinstance(program, dict) and "module" in program:
        parts.append(f"program module {program['module']} (state {program.get('state_digest', 'none')})")
    elif isinstance(program, dict):
        parts.append(f"program {short(program.get('signature'), 80)} ({program.get('program_type', 'predict')})")
    args = request.get("args") or {}
    if "inputs" in args:
        parts.append(f"inputs {short(args['inputs'])}")
    elif args:
        parts.append(f"args {short(args)}")
    return " ".join(parts)


def _ignored_note(matcher: Matcher) -> str:
    ignored = [f"ignore={', '.join(matcher.ignore)}"] if matcher.ignore else []
    return (
        f"matched on: {', '.join(matcher.match_on)}"
        + (f"; {ignored[0]}" if ignored else "")
        + f"; never compared: volatile args ({', '.join(sorted(VOLATILE_ARGS))}), session ids, "
        "scrubbed secrets (api_key, authorization and other credential fields, key-shaped strings)"
    )


def missing_file_miss(path: str | Path, request: dict[str, Any], hint: str) -> CassetteMiss:
    """The miss for a cassette that does not exist yet."""
    hint = fill_hint(hint, "once")
    return CassetteMiss(
        f"cassette {path} does not exist, so nothing can be replayed for {describe(request)}\n  to record it: {hint}",
        reason="no_file",
        cassette=str(path),
        request=request,
        record_hint=hint,
    )


class Replay:
    """Which interactions of one cassette were played, for one test; ``play`` answers or misses."""

    def __init__(self, cassette: ReplaySource, matcher: Matcher, *, allow_repeats: bool = False) -> None:
        self.cassette = cassette
        self.matcher = matcher
        self.allow_repeats = allow_repeats
        self.played: dict[int, int] = {}  # interaction index -> times played
        self._cursor: dict[str, int] = {}  # match key -> identical requests seen so far
        self._last: dict[str, int] = {}  # match key -> the interaction it played last
        self._index = cassette.index(matcher)

    def lookup(self, request: dict[str, Any], *, retry: bool = False) -> Interaction | None:
        """The recording for ``request`` (advancing the state), or ``None``. O(1) in cassette size.

        ``retry``: the caller is retrying its previous identical request (the pool marks retries
        with ``context["attempt"]``). If that got a recorded error, the retry gets the same error
        again without using up a recording: the recorder only ever saw the final outcome.
        """
        key = self.matcher.key(request)
        last = self._last.get(key)
        if retry and last is not None and not self.cassette.interactions[last].response["ok"]:
            self.played[last] += 1
            return self.cassette.interactions[last]
        positions = self._index.get(key)
        if not positions:
            return None
        seen = self._cursor.get(key, 0)
        if seen < len(positions):
            index = positions[seen]
        elif self.allow_repeats:
            index = positions[-1]
        else:
            return None
        self._cursor[key] = seen + 1
        self._last[key] = index
        self.played[index] = self.played.get(index, 0) + 1
        return self.cassette.interactions[index]

    def play(self, request: dict[str, Any], *, record_hint: str | None = None, retry: bool = False) -> Interaction:
        """Like ``lookup`` but a miss raises ``CassetteMiss`` explaining itself."""
        found = self.lookup(request, retry=retry)
        if found is not None:
            return found
        raise self.miss(request, record_hint or default_record_hint(self.cassette.path))

    def miss(self, request: dict[str, Any], hint: str) -> CassetteMiss:
        """Build the diagnosis for a request ``lookup`` could not answer (scans: misses only)."""
        path = self.cassette.path
        key = self.matcher.key(request)
        positions = self._index.get(key)
        if positions:
            hint = fill_hint(hint, "new_episodes")
            seen = self._cursor.get(key, 0)
            listed = ", ".join(f"#{i}" for i in positions)
            return CassetteMiss(
                f"the matching recording in cassette {path} was already played: identical requests were "
                f"recorded {len(positions)} time(s) ({listed}) and this test already played them {seen} time(s)\n"
                f"  request: {describe(request)}\n"
                "  to replay the last recording again, allow repeats "
                '(context["cassette"]["allow_repeats"] = True); '
                f"to record one more: {hint}",
                reason="used_up",
                cassette=str(path),
                request=request,
                recorded=len(positions),
                played=seen,
                interactions=positions,
                record_hint=hint,
            )
        candidates = ((item.index, item.request) for item in self.cassette.interactions if item.replayable)
        best = closest(candidates, request, self.matcher)
        lines = [f"no recorded interaction in cassette {path} matches this request", f"  request: {describe(request)}"]
        details: dict[str, Any] = {"reason": "no_match", "cassette": str(path), "request": request}
        if best is None:
            lines.append(f"  the cassette has no {request.get('command')} recordings at all")
            details["closest"] = None
        else:
            index, recorded = best
            diffs = self.matcher.diff(recorded, request)
            program_changed = any(not d.same and d.field.split(".")[0] == "program" for d in diffs)
            hint = fill_hint(hint, "rewrite" if program_changed else "new_episodes")
            lines.append(
                f"  closest recording: interaction #{index} (session {recorded.get('session')}), "
                f"{sum(d.same for d in diffs)} of {len(diffs)} compared fields equal:"
            )
            lines.extend(f"  {diff}" for diff in diffs)
            details["closest"] = {
                "index": index,
                "request": recorded,
                "diff": [diff.as_dict() for diff in diffs],
                "played": self.played.get(index, 0),
            }
        hint = fill_hint(hint, "new_episodes")
        lines.append(f"  {_ignored_note(self.matcher)}")
        lines.append(f"  to record it: {hint}")
        details["record_hint"] = hint
        return CassetteMiss("\n".join(lines), **details)

    def report(self) -> dict[str, Any]:
        """Played and never-played replayable interactions (for reports and ``Cassette.prune``)."""
        return {
            "cassette": str(self.cassette.path),
            "interactions": len(self.cassette.interactions),
            "played": sorted(self.played),
            "unused": [
                item.index for item in self.cassette.interactions if item.replayable and item.index not in self.played
            ],
        }
