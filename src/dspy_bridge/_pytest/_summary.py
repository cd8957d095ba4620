"""What one pytest run did with dspy-bridge, and the one summary that says it.

Each pytest process keeps a ``RunReport``: pools (time to ready, how long tests waited), per-kind counts
(bridge and HTTP cassette level), drift results. Under pytest-xdist every worker process sends its report
to the controller at the end (``workeroutput``), the controller merges them and prints ONE summary — so a
drift found on ``gw1`` fails or shows in the run exactly as it does serially.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from dspy_bridge._pytest._spend import describe_spend
from dspy_bridge._pytest._usage import RunUsage

__all__ = ["WORKEROUTPUT_KEY", "RunReport", "describe_counts"]

WORKEROUTPUT_KEY = "dspy_bridge_report"
KINDS = ("mock", "integration", "scripted")


def describe_counts(kind: str, counts: Counter[str]) -> str:
    """One summary line per kind; integration tests add the HTTP cassette level beside the bridge level.

    Answers DSPy's own (per-test, in-memory) cache served instead of the cassette are named when there are any.
    """
    cached = f"; DSPy cache hits {counts['dspy_cache']} (answered by DSPy's cache, not the cassette)"
    if kind == "scripted":
        return (
            f"{kind:<11} tests {counts['tests']}, requests {counts['requests']}, runs answered by scripts "
            f"{counts['script']}" + (cached if counts["dspy_cache"] else "")
        )
    live = f" ({counts['live']} live: own endpoint, not replayed)" if counts["live"] else ""
    line = (
        f"{kind:<11} tests {counts['tests']}{live}, requests {counts['requests']}, LM answers {counts['lm']}, "
        f"cassette hits {counts['cassette']}, stubs {counts['stub']}, synthetic {counts['synthetic']}, misses "
        f"{counts['miss']}, new recordings {counts['recorded']}"
    )
    if kind == "integration":
        line += (
            f"; HTTP cassettes: hits {counts['http_hits']}, misses {counts['http_misses']}, "
            f"new recordings {counts['http_recorded']}"
        )
    return line + (cached if counts["dspy_cache"] else "")


@dataclass
class RunReport:
    """Counts, pools and drift results of one pytest process, or of a whole xdist run once merged."""

    label: str
    started: float = field(default_factory=time.perf_counter)
    counts: dict[str, Counter[str]] = field(
        default_factory=lambda: {kind: Counter() for kind in (*KINDS, "prompts", "spend")}
    )
    pools: list[dict[str, Any]] = field(default_factory=list)  # PoolRecord fields + "process"
    drifts: list[dict[str, str]] = field(default_factory=list)  # Drift.as_dict()
    drift_compared: int = 0
    notes: list[dict[str, str]] = field(default_factory=list)  # {nodeid, kind, message}: kinds as in write()
    test_seconds: float = 0.0
    processes: list[str] = field(default_factory=list)  # xdist workers merged into this report
    usage: RunUsage = field(default_factory=RunUsage)  # cassettes the tests used: the run record
    stale: list[dict[str, Any]] = field(default_factory=list)  # {path, reasons}: cassettes to re-record
    stale_mode: str = "warn"
    record_path: str | None = None  # where the run record was written

    # -- xdist: workers export, the controller merges ----------------------------------------
    def export(self) -> dict[str, Any]:
        """Plain data (execnet can carry it) for the controller."""
        return {
            "label": self.label,
            "counts": {kind: dict(counter) for kind, counter in self.counts.items()},
            "pools": self.pools,
            "drifts": self.drifts,
            "drift_compared": self.drift_compared,
            "notes": self.notes,
            "test_seconds": self.test_seconds,
            "usage": self.usage.export(),
        }

    def merge(self, data: dict[str, Any]) -> None:
        for kind, counter in (data.get("counts") or {}).items():
            self.counts.setdefault(kind, Counter()).update(counter)
        self.pools.extend(data.get("pools") or [])
        self.drifts.extend(data.get("drifts") or [])
        self.drift_compared += int(data.get("drift_compared") or 0)
        self.notes.extend(data.get("notes") or [])
        self.test_seconds += float(data.get("test_seconds") or 0.0)
        self.usage.merge(data.get("usage") or {})
        self.processes.append(str(data.get("label")))

    def add_pools(self, records: list[Any]) -> None:
        self.pools.extend({**asdict(record), "process": self.label} for record in records)

    # -- the summary -----------------------------------------------------------------------------
    @property
    def empty(self) -> bool:
        return not self.pools and not any(counter["tests"] for counter in self.counts.values())

    def write(self, reporter: Any) -> None:
        if self.empty:
            return
        wall = time.perf_counter() - self.started
        where = f"{self.label}, merged from {', '.join(sorted(self.processes))}" if self.processes else self.label
        reporter.write_sep("=", f"dspy-bridge summary ({where})")
        blocked = 0.0
        for record in self.pools:
            blocked += float(record.get("waited_s") or 0.0)
            reporter.write_line(_describe_pool(record, show_process=bool(self.processes)))
        for kind, counts in self.counts.items():
            if counts["tests"]:
                reporter.write_line(describe_counts(kind, counts))
        if self.drift_compared or self.drifts:
            regressions = sum(1 for drift in self.drifts if drift.get("verdict", "regression") == "regression")
            reporter.write_line(
                f"drift check: {self.drift_compared} recorded answers compared with real DSPy, "
                f"{len(self.drifts)} field(s) differ ({regressions} regression(s), "
                f"{len(self.drifts) - regressions} benign)" + (":" if self.drifts else "")
            )
            for drift in self.drifts:
                verdict = f" [{drift.get('verdict', 'regression')}: {drift.get('reason', '')}]"
                reporter.write_line(
                    f"  {drift['nodeid']}: {drift['program']} {drift['inputs']} field {drift['field']!r}{verdict}\n"
                    f"    recorded: {drift['recorded']}\n    real now: {drift['now']}"
                )
        for message, nodeids in _grouped(self.notes, "quota spent").items():
            reporter.write_line(f"recording stopped: {message}")
            reporter.write_line(f"  {len(nodeids)} test(s) got the proxy's 429 instead: {', '.join(nodeids)}")
        for kind, title in (
            ("near match", "HTTP near matches (a drifted prompt answered by a similar recording, not an exact one)"),
            ("rate limited", "upstream rate limits waited out (RetryInfo)"),
            ("not recorded", "not recorded"),
        ):
            notes = [note for note in self.notes if note.get("kind") == kind]
            if notes:
                reporter.write_line(f"{title}: {len(notes)}")
                for note in notes:
                    reporter.write_line(f"  {note['nodeid']}: {note['message']}")
        spend = describe_spend(self.counts.get("spend") or Counter())
        if spend:
            reporter.write_line(spend)
        prompts = self.counts.get("prompts") or Counter()
        if sum(prompts.values()):
            reporter.write_line(
                f"prompt locks: checked {prompts['checked']} (changed {prompts['changed']}), "
                f"written {prompts['written']}, unchanged {prompts['unchanged']}"
            )
        self._write_cassette_lines(reporter)
        share = 100.0 * blocked / wall if wall > 0 else 0.0
        reporter.write_line(
            f"wall time {wall:.2f} s: waiting for workers to start {blocked:.2f} s ({share:.1f}%), "
            f"in bridge tests {self.test_seconds:.2f} s, the rest (collection, other tests) "
            f"{max(wall - blocked - self.test_seconds, 0.0):.2f} s"
        )

    def _write_cassette_lines(self, reporter: Any) -> None:
        if self.stale:
            what = "fail the run (--bridge-stale=fail)" if self.stale_mode == "fail" else "a warning"
            reporter.write_line(
                f"stale cassettes: {len(self.stale)} ({what}; re-record them with --bridge-record=all):"
            )
            for entry in self.stale:
                reporter.write_line(f"  {entry['path']}: {'; '.join(entry['reasons'])}")
        if self.record_path:
            reporter.write_line(
                f"run record: {self.record_path} ({self.usage.ran} bridge test(s) ran, "
                f"{len(self.usage.cassettes)} cassette(s) used); see dspy-bridge cassettes unused"
            )


def _grouped(notes: list[dict[str, str]], kind: str) -> dict[str, list[str]]:
    """Notes of one kind by message: a spent quota is one message however many tests it stopped."""
    out: dict[str, list[str]] = {}
    for note in notes:
        if note.get("kind") == kind:
            out.setdefault(note["message"], []).append(note["nodeid"])
    return out


def _describe_pool(record: dict[str, Any], *, show_process: bool) -> str:
    ready_s = record.get("ready_s")
    ready = f"{ready_s:.3f} s" if ready_s is not None else f"failed: {record.get('error')}"
    how = "background warm-up" if record.get("background") else "started on first use"
    stats = record.get("stats") or {}
    extra = ""
    if stats:
        extra = (
            f"; served {stats.get('requests_served', '?')}, crashes {stats.get('crashes', 0)}, "
            f"restarts {stats.get('restarts', 0)}, breaker {stats.get('breaker_state', '?')}"
        )
    strategy = stats.get("start_strategy") or record.get("strategy")
    process = f" [{record.get('process')}]" if show_process else ""
    return (
        f"pool {record.get('kind', '?'):<11}{process} {record.get('workers')} workers, ready in {ready} ({how}, "
        f"strategy {strategy}); tests waited {float(record.get('waited_s') or 0.0):.3f} s{extra}"
    )
