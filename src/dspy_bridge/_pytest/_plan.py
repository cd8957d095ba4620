"""Per-test plan: which kind of worker, which cassettes, whether this run records.

Computed once per test from its mark and the run-level settings (precedence in ``_settings``), so
the warm-up after collection, the fixtures and the summary all agree on what a test will do.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dspy_bridge._modes import RecordMode
from dspy_bridge._pytest._names import cassette_paths
from dspy_bridge._pytest._settings import HTTP_MARK_KEYS, run_level, validate_mark

__all__ = ["KINDS", "TestPlan", "cassette_root", "plan_for"]

KINDS = ("mock", "integration", "scripted")


@dataclass(frozen=True)
class TestPlan:
    nodeid: str
    marked: str  # what the test asked for: "mock" | "integration" | "scripted"
    kind: str  # what it runs as after forced modes (a scripted test stays scripted)
    record: str  # effective record mode
    bridge_cassette: Path
    http_cassette: Path
    synthetic: bool
    allow_repeats: bool
    match_on: tuple[str, ...] | None
    live: bool = False  # @pytest.mark.integration(live=True): its own LM endpoint; never replayed or recorded
    http_mark: dict[str, Any] = field(default_factory=dict)  # the mark's HTTP-level keywords (record_errors, http_*)
    stream_chunks: int | None = None  # replayed streams re-cut into N characters per chunk; None: as recorded

    @property
    def records(self) -> bool:
        """True when this run writes cassettes (and therefore runs on real workers)."""
        if self.live or self.kind == "scripted":
            return False
        needed = [self.bridge_cassette] if self.kind == "mock" else [self.bridge_cassette, self.http_cassette]
        return RecordMode.parse(self.record).records(*needed)

    @property
    def real(self) -> bool:
        """Runs on real DSPy workers: integration and scripted tests, and any test that records."""
        return self.kind in ("integration", "scripted") or self.live or self.records

    @property
    def pool_kind(self) -> str:
        return "integration" if self.real else "mock"

    def record_command(self, mode: str = "once") -> str:
        return f"pytest {shlex.quote(self.nodeid)} --bridge-record={mode}"

    def mock_context(self) -> dict[str, Any]:
        cassette: dict[str, Any] = {
            "path": str(self.bridge_cassette),
            "synthetic": self.synthetic,
            "allow_repeats": self.allow_repeats,
            "record_hint": self.record_command("{mode}"),  # the miss fills in the mode that fixes it
        }
        if self.match_on is not None:
            cassette["match_on"] = list(self.match_on)
        if self.stream_chunks is not None:
            cassette["stream_chunks"] = self.stream_chunks
        return {"test_id": self.nodeid, "cassette": cassette}


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("1", "true", "yes", "on")


def cassette_root(config: pytest.Config) -> str | None:
    """``--bridge-cassette-dir`` made absolute (from the rootdir); ``None``: ``cassettes/`` beside each module."""
    root, _ = run_level(config, "cassette_dir")
    if root is not None and not os.path.isabs(root):
        root = str(Path(str(config.rootpath)) / root)
    return None if root is None else str(root)


def plan_for(item: pytest.Item) -> TestPlan:
    config = item.config
    marks = [m for m in (item.get_closest_marker(name) for name in KINDS) if m is not None]
    if len(marks) > 1:
        raise pytest.UsageError(f"{item.nodeid}: marked {' and '.join(m.name for m in marks)}; choose one")
    mark = marks[0] if marks else None
    options = validate_mark(mark, item.nodeid) if mark is not None else {}
    default_mark, _ = run_level(config, "default_mark")
    marked = mark.name if mark is not None else str(default_mark)

    forced, _ = run_level(config, "mode")
    # A scripted test needs its script, never an LM or a cassette: --bridge-mode does not move it.
    kind = marked if forced == "auto" or marked == "scripted" else str(forced)

    record, source = run_level(config, "record")
    if source == "default" and "record" in options:
        record = options["record"]

    synthetic_setting, synthetic_source = run_level(config, "synthetic")
    synthetic = _truthy(synthetic_setting)
    if synthetic_source == "default" and "synthetic" in options:
        synthetic = _truthy(options["synthetic"])

    bridge_path, http_path = cassette_paths(item, cassette_root(config), options.get("cassette"))
    match_on = options.get("match_on")
    return TestPlan(
        nodeid=item.nodeid,
        marked=marked,
        kind=kind,
        record=str(record),
        bridge_cassette=bridge_path,
        http_cassette=http_path,
        synthetic=synthetic,
        allow_repeats=bool(options.get("allow_repeats", False)),
        match_on=tuple(match_on) if match_on is not None else None,
        live=_truthy(options.get("live", False)),
        http_mark={key: options[key] for key in sorted(HTTP_MARK_KEYS | {"allow_repeats"}) if key in options},
        stream_chunks=None if options.get("stream_chunks") in (None, "recorded") else int(options["stream_chunks"]),
    )
