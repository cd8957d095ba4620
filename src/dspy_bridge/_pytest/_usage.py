"""Which cassettes a pytest run used: the run record that ``dspy-bridge cassettes unused|prune`` reads.

Each pytest process notes where every collected test's cassettes would live (selected or not, ours or
not), which bridge tests ran, the cassettes they used and, where the replayer knows, the interactions
they played (mock workers answer ``cassette_report``; the cassette proxy's report lists ``played``).
Under pytest-xdist the notes ride in each worker's ``RunReport`` to the controller, which merges them
and writes ONE record, ``<rootdir>/.dspy-bridge/last-run.json`` (``--bridge-run-record``; the folder
ignores itself for git, as ``.pytest_cache`` does; pytest's own cache is not used because projects
turn it off with ``-p no:cacheprovider``). A partial run (``-k``, a file, ``--lf``) only vouches for the tests it ran: the record
says which cassette folders it saw whole, and ``unused`` leaves everything else alone.
"""

from __future__ import annotations

import fnmatch
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from dspy_bridge._pytest._names import cassette_paths

if TYPE_CHECKING:
    from dspy_bridge._pytest._plan import TestPlan

__all__ = ["DEFAULT_RECORD", "RECORD_FORMAT", "RunUsage"]

DEFAULT_RECORD = ".dspy-bridge/last-run.json"  # relative to the rootdir (cassettes._unused.RECORD_NAME)
RECORD_FORMAT = 1
RAN, NOT_RUN, OTHER = "ran", "not run", "other"  # what a claimed cassette stem's test did; merged by rank
_RANK = {OTHER: 0, NOT_RUN: 1, RAN: 2}


def cassette_stem(path: Path | str) -> str:
    """``cassettes._unused.cassette_stem``, imported on first use (the plugin loads no cassette code)."""
    from dspy_bridge.cassettes._unused import cassette_stem as stem

    return stem(path)


def _explicit(item: pytest.Item) -> str | None:
    for name in ("mock", "integration"):
        mark = item.get_closest_marker(name)
        if mark is not None and isinstance(mark.kwargs.get("cassette"), str):
            return str(mark.kwargs["cassette"])
    return None


class RunUsage:
    """What one pytest process (or a whole xdist run, once merged) did with cassettes."""

    def __init__(self) -> None:
        self.claimed: dict[str, str] = {}  # cassette stem -> RAN | NOT_RUN (a bridge test) | OTHER (not ours)
        self.tests: dict[str, str] = {}  # cassette stem -> the node id claiming it (for messages)
        self.owned: set[str] = set()  # <cassette root>/<module stem>: the folder of a collected module
        self.complete: set[str] = set()  # cassette roots whose every test module was collected
        self.cassettes: dict[str, dict[str, Any]] = {}  # path -> {level, tests, played: [..] | None}
        self.collected = 0
        self.selected = 0
        self.ran = 0

    # -- collection ---------------------------------------------------------------------------
    def note_collection(
        self,
        config: pytest.Config,
        selected: list[pytest.Item],
        deselected: list[pytest.Item],
        bridge: set[str],
        root: str | None,
    ) -> None:
        """Claim every collected test's cassette stem; ``bridge``: node ids using the bridge fixtures."""
        modules: dict[Path, Path] = {}  # module file -> its cassette root
        self.collected += len(selected) + len(deselected)
        self.selected += len(selected)
        for item in [*selected, *deselected]:
            try:
                bridge_path, _ = cassette_paths(item, root, _explicit(item))
            except Exception:  # a bad cassette= name: the plan reports it when the test runs
                continue
            stem = cassette_stem(bridge_path)
            status = NOT_RUN if item.nodeid in bridge else OTHER
            if _RANK[status] >= _RANK.get(self.claimed.get(stem, OTHER), 0):
                self.claimed[stem] = status
                self.tests[stem] = item.nodeid
            module = Path(str(item.path))
            base = Path(root) if root else module.parent / "cassettes"
            modules[module] = base
            self.owned.add(str(base / module.stem))
        if root is None:
            self.complete.update(_complete_roots(modules, list(config.getini("python_files"))))

    def note_test(self, plan: TestPlan, played: list[int] | None, http_report: Any) -> None:
        """A bridge test ran: its cassettes are in use (``played``: the bridge interactions it replayed)."""
        self.ran += 1
        stem = cassette_stem(plan.bridge_cassette)
        self.claimed[stem] = RAN
        self.tests[stem] = plan.nodeid
        if plan.live:
            return
        # An integration test replaying reads only its HTTP cassette; its bridge cassette stays its test's (the
        # claim above). Recording writes it, the drift check reads it: used, plays unknown.
        reads_bridge = not plan.real or plan.records or plan.marked == "mock"
        if reads_bridge and plan.bridge_cassette.exists():
            self._use(plan.bridge_cassette, "bridge", plan.nodeid, None if plan.real else played)
        if plan.real and plan.http_cassette.exists():
            known = http_report is not None and not http_report.saved
            self._use(plan.http_cassette, "http", plan.nodeid, list(http_report.played) if known else None)

    def _use(self, path: Path, level: str, nodeid: str, played: list[int] | None) -> None:
        entry = self.cassettes.setdefault(str(path), {"level": level, "tests": [], "played": []})
        entry["tests"].append(nodeid)
        if entry["played"] is None or played is None:
            entry["played"] = None  # one test whose plays are unknown makes the whole file's unknown
        else:
            entry["played"] = sorted(set(entry["played"]) | set(played))

    # -- xdist ----------------------------------------------------------------------------------
    def export(self) -> dict[str, Any]:
        return {
            "claimed": self.claimed,
            "tests": self.tests,
            "owned": sorted(self.owned),
            "complete": sorted(self.complete),
            "cassettes": self.cassettes,
            "collected": self.collected,
            "selected": self.selected,
            "ran": self.ran,
        }

    def merge(self, data: dict[str, Any]) -> None:
        """Fold in a worker's notes: every xdist worker collects the same tests and runs some of them."""
        for stem, status in (data.get("claimed") or {}).items():
            if _RANK.get(status, 0) >= _RANK.get(self.claimed.get(stem, OTHER), 0):
                self.claimed[stem] = status
                self.tests[stem] = (data.get("tests") or {}).get(stem, self.tests.get(stem, ""))
        self.owned.update(data.get("owned") or [])
        self.complete.update(data.get("complete") or [])
        for path, entry in (data.get("cassettes") or {}).items():
            for nodeid in entry.get("tests") or []:
                self._use(Path(path), entry.get("level", "bridge"), nodeid, entry.get("played"))
        self.collected = max(self.collected, int(data.get("collected") or 0))  # each worker collects all
        self.selected = max(self.selected, int(data.get("selected") or 0))
        self.ran += int(data.get("ran") or 0)

    # -- the record ------------------------------------------------------------------------------
    def record(self, config: pytest.Config, exitstatus: int) -> dict[str, Any]:
        from dspy_bridge.cassettes._unused import digest

        for path, entry in self.cassettes.items():  # prune refuses a file that changed after this run
            entry["digest"] = digest(Path(path)) if entry["played"] is not None else None
        return {
            "format": RECORD_FORMAT,
            "finished": datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
            "rootdir": str(config.rootpath),
            "invocation": " ".join(["pytest", *config.invocation_params.args]),
            "exitstatus": int(exitstatus),
            "python": sys.version.split()[0],
            **self.export(),
        }

    def write(self, config: pytest.Config, exitstatus: int, where: str) -> Path | None:
        """Write the record to ``where`` (relative to the rootdir; ``off``: nowhere). Nothing is written when
        no bridge test ran (a run of other tests keeps the last useful record)."""
        if not self.ran or where.lower() in ("off", "none", ""):
            return None
        import json

        from dspy_bridge.cassettes._storage import write_atomic

        path = Path(os.path.expanduser(where))
        path = path if path.is_absolute() else config.rootpath / path
        path.parent.mkdir(parents=True, exist_ok=True)
        ignore = path.parent / ".gitignore"
        if path.parent.name == ".dspy-bridge" and not ignore.exists():
            ignore.write_text("# written by dspy-bridge: run records are per machine\n*\n", encoding="utf-8")
        write_atomic(path, json.dumps(self.record(config, exitstatus), indent=1, sort_keys=True) + "\n")
        return path


def _complete_roots(modules: dict[Path, Path], patterns: list[str]) -> set[str]:
    """Cassette roots (``<dir>/cassettes``) whose every test module (``python_files``) was collected: only
    there may a folder of a deleted module be called unused."""
    complete = set()
    for directory in {module.parent for module in modules}:
        present = {
            path
            for path in directory.iterdir()
            if path.is_file() and any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns)
        }
        if present <= set(modules):
            complete.add(str(directory / "cassettes"))
    return complete
