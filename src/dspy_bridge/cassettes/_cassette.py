"""``Cassette``: one bridge cassette file in memory, its lookup index, reports and pruning.

Imports flow one way: ``_cassette`` → ``_replay`` → ``_interaction``. ``Replay`` only needs what it
reads from a cassette (``ReplaySource``), so it never imports this module.
"""

from __future__ import annotations

import functools
import os

TYPE_CHECKING = False  # typing stays off a mock worker's replay path
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from pathlib import Path
    from typing import Any

    from dspy_bridge._modes import RecordMode

from dspy_bridge._exceptions import CassetteError
from dspy_bridge._version import __version__
from dspy_bridge.cassettes._cache import MIN_BYTES
from dspy_bridge.cassettes._format import (
    CassetteDocument,
    corrupt,
    dump_document,
    dump_interactions,
    max_bytes,
    parse_document,
    without_gc,
)
from dspy_bridge.cassettes._interaction import Interaction
from dspy_bridge.cassettes._match import Matcher
from dspy_bridge.cassettes._replay import Replay

__all__ = ["Cassette", "current_versions", "default_meta"]


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@functools.cache
def _dspy_version() -> str | None:
    from importlib import metadata  # the distribution's metadata: no need to import dspy itself

    try:
        return metadata.version("dspy")
    except metadata.PackageNotFoundError:
        return None


def current_versions() -> dict[str, Any]:
    """The versions a recording made now would be made with."""
    return {"dspy_bridge_version": __version__, "dspy_version": _dspy_version()}


def default_meta(**overrides: Any) -> dict[str, Any]:
    """Metadata for a new cassette; ``overrides`` that are not ``None`` (e.g. ``recorded_against``) win."""
    meta: dict[str, Any] = {"created": _now(), **current_versions(), "model": None, "recorded_against": "unknown"}
    meta.update({key: value for key, value in overrides.items() if value is not None})
    return meta


class Cassette:
    """A bridge cassette: ``meta`` plus an ordered list of interactions, indexed for O(1) lookup.

    Usage::

        cassette = Cassette.load("cassettes/test_qa/test_answer.yaml")
        replay = cassette.replay(allow_repeats=False)
        interaction = replay.play(request)           # raises CassetteMiss with a diagnosis
        cassette.unused(replay)                      # recordings nobody asked for
    """

    def __init__(
        self,
        path: str | Path,
        interactions: Iterable[dict[str, Any]] = (),
        meta: dict[str, Any] | None = None,
        *,
        source: bytes | None = None,
        canonical: bool = False,
    ) -> None:
        self._file = os.fspath(path)  # a str: a mock worker replaying never imports pathlib
        self._path: Path | None = None  # made on first use of ``path``
        self.meta: dict[str, Any] = meta if meta is not None else default_meta()
        self.interactions = [
            Interaction(index, item["request"], item["response"]) for index, item in enumerate(interactions)
        ]
        self._source = source  # the bytes it was loaded from or saved as (None: never on disk)
        self._canonical = canonical  # ``_source`` is in the canonical layout (so it can be appended to)
        self._indexes: dict[tuple[tuple[str, ...], tuple[str, ...]], dict[str, list[int]]] = {}

    @property
    def path(self) -> Path:
        """The cassette file."""
        if self._path is None:
            from pathlib import Path

            self._path = Path(self._file)
        return self._path

    # -- files ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> Cassette:
        """Read and validate a cassette (``CassetteCorrupt`` on any problem, ``FileNotFoundError`` if absent)."""
        file = os.fspath(path)
        limit = max_bytes()
        if os.stat(file).st_size > limit:
            raise corrupt(file, None, None, f"larger than {limit} bytes ($DSPY_BRIDGE_CASSETTE_MAX_BYTES)")
        with open(file, "rb") as handle:
            raw = handle.read()
        return without_gc(cls._from_bytes, file, raw)

    @classmethod
    def _from_bytes(cls, file: str, raw: bytes) -> Cassette:
        big = len(raw) >= MIN_BYTES
        if big:
            import hashlib

            from dspy_bridge.cassettes import _cache

            digest = hashlib.sha256(raw).hexdigest()
            cached = _cache.read(digest)
            if cached is not None:
                return cls(file, cached[1], cached[0], source=raw, canonical=cached[2])
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise corrupt(file, None, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        document = parse_document(text, file)
        if big:
            _cache.write(digest, document.meta, document.interactions, canonical=document.canonical)
        return cls(file, document.interactions, document.meta, source=raw, canonical=document.canonical)

    @staticmethod
    def should_record(path: str | Path, mode: str | RecordMode) -> bool:
        """Does a test with this cassette and record mode run on real workers (and record)?"""
        from dspy_bridge._modes import RecordMode

        return RecordMode.parse(mode).records(path)

    def dumps(self) -> str:
        return without_gc(dump_document, CassetteDocument(self.meta, [item.as_dict() for item in self.interactions]))

    def save(self) -> None:
        """Write the whole cassette atomically, under the file lock (no merge: see ``Recorder``)."""
        from dspy_bridge.cassettes._storage import cassette_lock, remove_stale_temps, write_atomic  # filelock

        text = self.dumps()
        with cassette_lock(self.path):
            remove_stale_temps(self.path)
            write_atomic(self.path, text)
        self._source = text.encode("utf-8")
        self._canonical = True

    def unchanged_on_disk(self) -> bool:
        """Does the file still hold exactly the bytes this cassette was loaded from (or saved as)?"""
        try:
            with open(self._file, "rb") as handle:
                return self._source is not None and handle.read() == self._source
        except FileNotFoundError:
            return False

    def appended(self, interactions: list[dict[str, Any]]) -> bytes | None:
        """The file's bytes, as loaded, with ``interactions`` added at the end: the old text is kept byte for
        byte, not encoded again. ``None`` unless the file is in the canonical layout and ends with an
        interaction (then the caller writes the whole document)."""
        source = self._source
        if source is None or not self._canonical or not source.endswith(b"\n"):
            return None
        last = source[source.rfind(b"\n", 0, len(source) - 1) + 1 :]
        if not last.startswith(b"  response: "):
            return None  # e.g. "interactions: []", or a trailing comment
        return source + dump_interactions(interactions).encode("utf-8")

    # -- lookup --------------------------------------------------------------------------------
    def index(self, matcher: Matcher) -> dict[str, list[int]]:
        """Replayable interactions by match key, in recorded order (built once per matcher)."""
        found = self._indexes.get(matcher.spec)
        if found is None:
            found = {}
            for interaction in self.interactions:
                if interaction.replayable:
                    found.setdefault(matcher.key(interaction.request), []).append(interaction.index)
            self._indexes[matcher.spec] = found
        return found

    def replay(
        self,
        *,
        match_on: Iterable[str] | None = None,
        ignore: Iterable[str] = (),
        allow_repeats: bool = False,
    ) -> Replay:
        """Fresh replay state (which recordings were played) over this cassette."""
        return Replay(self, Matcher(match_on, ignore), allow_repeats=allow_repeats)

    # -- reports and pruning -------------------------------------------------------------------
    def unused(self, *played: Replay | Iterable[int]) -> list[Interaction]:
        """Replayable interactions that none of the given replays (or index lists) played."""
        used: set[int] = set()
        for item in played:
            used.update(item.played if hasattr(item, "played") else item)
        return [item for item in self.interactions if item.replayable and item.index not in used]

    def prune(self, *played: Replay | Iterable[int]) -> int:
        """Drop replayable interactions nobody played and rewrite the file; returns how many went.

        Refuses (``CassetteError``) when the file changed on disk since it was loaded, because the
        played indexes would then point at other interactions.
        """
        drop = {item.index for item in self.unused(*played)}
        if not drop:
            return 0
        from dspy_bridge.cassettes._storage import cassette_lock, remove_stale_temps, write_atomic  # filelock

        with cassette_lock(self.path):
            if self._source is not None and not self.unchanged_on_disk():
                raise CassetteError(
                    f"cassette {self.path} changed on disk since it was loaded; load it again, replay, then prune",
                    file=str(self.path),
                )
            kept = [item.as_dict() for item in self.interactions if item.index not in drop]
            self.interactions = [Interaction(i, item["request"], item["response"]) for i, item in enumerate(kept)]
            self._indexes.clear()
            text = self.dumps()
            remove_stale_temps(self.path)
            write_atomic(self.path, text)
            self._source = text.encode("utf-8")
        return len(drop)

    # -- container protocol --------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.interactions)

    def __iter__(self) -> Iterator[Interaction]:
        return iter(self.interactions)

    def __getitem__(self, index: int) -> Interaction:
        return self.interactions[index]

    def __repr__(self) -> str:
        return f"<Cassette {self._file!r} interactions={len(self.interactions)}>"
