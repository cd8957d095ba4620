"""``cassettes unused|prune``: which recordings the last pytest run did not use, from its run record.

The pytest plugin writes the record (``<rootdir>/.dspy-bridge/last-run.json``, see ``_pytest/_usage``):
where every collected test's cassettes live, which bridge tests ran, the cassettes they used and the
interactions they played. Here each cassette file found is sorted into one of:

    used          a test that ran used it (its unplayed interactions are reported when the plays are known)
    unused        no collected test has it: its test was renamed or deleted, or no longer uses the bridge
    not covered   its test did not run (deselected, skipped, another file) or the run never saw its folder
    unknown plays used, but which interactions were played is not known (recorded in that run, changed since)

Only dspy-bridge's own files are judged: ``*.bridge.yaml``, ``*.http.yaml`` and legacy bridge ``*.yaml``;
a plain vcrpy ``*.yaml`` (pytest-recording's own) is never called unused.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dspy_bridge._exceptions import CassetteError, UsageError

__all__ = [
    "RECORD_NAME",
    "Finding",
    "UnusedReport",
    "cassette_stem",
    "digest",
    "find_record",
    "find_unused",
    "load_record",
    "record_roots",
]

RECORD_NAME = ".dspy-bridge/last-run.json"
RUN_FIRST = (
    "run your tests first so the plugin writes one: pytest (or a subset: pytest -m mock); "
    "or point at a record with --run-record PATH"
)


def cassette_stem(path: Path | str) -> str:
    """A cassette path without its level suffix: the name both levels of one test share."""
    text = str(path)
    for suffix in (".bridge.yaml", ".http.yaml", ".yaml"):
        if text.endswith(suffix):
            return text[: -len(suffix)]
    return text


def digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


# -- the record -----------------------------------------------------------------------------------
def find_record(start: Path) -> Path | None:
    """``.dspy-bridge/last-run.json`` in ``start`` or the nearest parent that has one (the rootdir)."""
    for folder in [start, *start.parents]:
        candidate = folder / RECORD_NAME
        if candidate.is_file():
            return candidate
    return None


def load_record(path: Path | None) -> dict[str, Any]:
    """The run record as plain data; ``UsageError`` saying what to run when there is none or it is unreadable."""
    if path is None:
        raise UsageError(f"no run record ({RECORD_NAME}) here or in any parent folder: {RUN_FIRST}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"run record {path} does not exist: {RUN_FIRST}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"run record {path} is not readable JSON ({exc}): delete it and {RUN_FIRST}") from None
    if not isinstance(data, dict) or data.get("format") != 1 or not isinstance(data.get("cassettes"), dict):
        raise UsageError(f"run record {path} is not one this dspy-bridge writes (format 1): delete it and {RUN_FIRST}")
    return data


def record_roots(record: dict[str, Any]) -> list[Path]:
    """The cassette folders the recorded run knew of (where ``unused`` looks when given no path)."""
    roots = {str(Path(owned).parent) for owned in record.get("owned") or []}
    roots.update(record.get("complete") or [])
    return [Path(root) for root in sorted(roots) if Path(root).is_dir()]


# -- sorting files ----------------------------------------------------------------------------------
@dataclass
class Finding:
    """One unused recording: a whole file (``indexes`` empty), or some interactions of a file in use."""

    path: str
    level: str
    reason: str
    indexes: list[int] = field(default_factory=list)  # unplayed interactions; empty: the whole file
    interactions: int = 0  # in the file
    digest: str | None = None  # the file's sha256 when the run record was written (prune checks it)

    @property
    def whole_file(self) -> bool:
        return not self.indexes

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "whole_file": self.whole_file}


@dataclass
class UnusedReport:
    record: str
    finished: str
    invocation: str
    ran: int
    selected: int
    collected: int
    unused: list[Finding] = field(default_factory=list)
    not_covered: list[str] = field(default_factory=list)  # left alone: that run did not vouch for them
    unknown: list[dict[str, str]] = field(default_factory=list)  # {path, reason}: used, plays not known
    skipped: list[str] = field(default_factory=list)  # not dspy-bridge's (pytest-recording's own *.yaml)
    errors: list[dict[str, str]] = field(default_factory=list)  # {path, error}: could not be read

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["unused"] = [finding.as_dict() for finding in self.unused]
        return data


def _ours(path: Path, level: str) -> bool:
    return level == "bridge" or path.name.endswith(".http.yaml")


def _unplayed(path: Path, level: str, played: list[int]) -> tuple[list[int], int]:
    """(indexes nobody played, interactions in the file); bridge: only replayable ones count."""
    if level == "bridge":
        from dspy_bridge.cassettes._cassette import Cassette

        cassette = Cassette.load(path)
        return [item.index for item in cassette.unused(played)], len(cassette)
    from dspy_bridge.cassettes._inventory import interactions_of

    _, _, items = interactions_of(path)
    seen = set(played)
    return [index for index in range(len(items)) if index not in seen], len(items)


def find_unused(files: list[Path], record: dict[str, Any], record_path: Path) -> UnusedReport:
    from dspy_bridge.cassettes._inventory import level_of

    report = UnusedReport(
        record=str(record_path),
        finished=str(record.get("finished", "?")),
        invocation=str(record.get("invocation", "pytest")),
        ran=int(record.get("ran") or 0),
        selected=int(record.get("selected") or 0),
        collected=int(record.get("collected") or 0),
    )
    used: dict[str, dict[str, Any]] = record["cassettes"]
    claimed: dict[str, str] = record.get("claimed") or {}
    tests: dict[str, str] = record.get("tests") or {}
    owned = set(record.get("owned") or [])
    complete = [Path(root) for root in record.get("complete") or []]
    for file in files:
        path = Path(os.path.abspath(file))
        level = level_of(path)
        if not _ours(path, level):
            report.skipped.append(str(file))
            continue
        stem = cassette_stem(path)
        entry = used.get(str(path))
        if entry is not None:
            _judge_used(report, file, path, level, entry)
        elif claimed.get(stem) == "ran":
            continue  # its test ran in a mode that does not read it (e.g. a mock test's HTTP cassette)
        elif claimed.get(stem) == "not run":
            report.not_covered.append(str(file))
        elif claimed.get(stem) == "other":
            reason = f"its test {tests.get(stem, '?')} no longer uses the bridge fixtures"
            report.unused.append(Finding(str(file), level, reason, digest=digest(path)))
        elif str(path.parent) in owned:
            reason = f"no test of module {path.parent.name} has this cassette: a renamed or deleted test"
            report.unused.append(Finding(str(file), level, reason, digest=digest(path)))
        elif any(path.is_relative_to(root) for root in complete):
            reason = "no collected test has this cassette: its test module is gone"
            report.unused.append(Finding(str(file), level, reason, digest=digest(path)))
        else:
            report.not_covered.append(str(file))
    return report


def _judge_used(report: UnusedReport, file: Path, path: Path, level: str, entry: dict[str, Any]) -> None:
    played = entry.get("played")
    if played is None:
        reason = "recorded in that run, or its worker went away: which interactions were played is not known"
        report.unknown.append({"path": str(file), "reason": reason})
        return
    now = digest(path)
    if entry.get("digest") is not None and now != entry.get("digest"):
        report.unknown.append({"path": str(file), "reason": "changed since that run: run the tests again"})
        return
    try:
        indexes, total = _unplayed(path, level, [int(index) for index in played])
    except (CassetteError, OSError) as exc:
        report.errors.append({"path": str(file), "error": str(exc)})
        return
    if indexes:
        tests = ", ".join(entry.get("tests") or []) or "?"
        reason = f"{len(indexes)} of {total} interaction(s) never played by {tests}"
        report.unused.append(Finding(str(file), level, reason, indexes, total, digest=now))
