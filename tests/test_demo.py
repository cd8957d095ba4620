"""``dspy-bridge demo``: run end to end as a user runs it (one subprocess, the hidden tiny size, all three
ways), then the comparison on its kept cassettes with one answer changed, and the work dir's lifetime."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from dspy_bridge._demo import SUITE
from dspy_bridge._demo._display import DemoDisplay
from dspy_bridge._demo._run import DemoReport, show_report, work_dir
from dspy_bridge._demo._ways import bridge_cassette, mock_way

pytestmark = pytest.mark.slow

MARK_NAME = "DSPY_BRIDGE_DEMO_RUN_MARK"  # inherited by every process the demo starts (not key-shaped)


@dataclass
class DemoRun:
    returncode: int
    stdout: str
    stderr: str
    parent: Path
    marker: str


def processes_with(marker: str) -> list[int]:
    """Pids of live processes whose environment holds ``MARK_NAME=marker``."""
    needle = f"{MARK_NAME}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or a zombie
            continue
    return found


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """``dspy-bridge demo --quick`` at the hidden tiny size, keeping its work dir under a fresh parent."""
    command = shutil.which("dspy-bridge")
    assert command is not None, "the dspy-bridge console script is not installed: pip install -e '.[dev]'"
    parent = tmp_path_factory.mktemp("demo")
    marker = uuid.uuid4().hex
    env = {**os.environ, MARK_NAME: marker}
    done = subprocess.run(
        [command, "demo", "--quick", "--size", "tiny", "--keep", "--dir", str(parent)],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    return DemoRun(done.returncode, done.stdout, done.stderr, parent, marker)


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The table's rows by way: cells split on runs of 2+ spaces."""
    rows = {}
    for line in stdout.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells[0] in ("seed's way", "mock", "integration"):
            rows[cells[0]] = cells
    return rows


def test_the_demo_runs_all_three_ways_and_leaves_only_the_kept_work_dir(demo_run: DemoRun) -> None:
    assert demo_run.returncode == 0, demo_run.stdout + demo_run.stderr
    rows = table_rows(demo_run.stdout)
    assert rows["seed's way"][1:2] == ["1 of 2"] and rows["seed's way"][-2:] == ["—", "yes"]
    assert rows["mock"][1] == "2" and rows["mock"][-2:] == ["2 bridge", "yes"]
    assert rows["integration"][1] == "2" and rows["integration"][-2:] == ["2 HTTP", "yes"]
    assert re.search(r"The seed's way spent \d+% of its time starting workers", demo_run.stdout)
    assert "\x1b[" not in demo_run.stdout  # not a terminal: plain lines, no redraw, no colour
    assert "  recording against the fake Gemini: test_capital_of_france done in" in demo_run.stdout
    kept = list(demo_run.parent.iterdir())
    assert len(kept) == 1 and f"kept the work dir (cassettes): {kept[0]}" in demo_run.stdout
    assert sorted(p.name for p in (kept[0] / "cassettes").iterdir()) == [
        "http",
        "test_capital_of_france.bridge.yaml",
        "test_largest_planet.bridge.yaml",
    ]
    assert processes_with(demo_run.marker) == []  # fake Gemini, proxy, zygote, workers: all stopped


def test_an_answer_that_differs_from_the_recording_makes_the_demo_fail(demo_run: DemoRun) -> None:
    assert demo_run.returncode == 0, demo_run.stderr
    workdir = next(demo_run.parent.iterdir())
    tests = SUITE[:2]
    with DemoDisplay(Console(file=io.StringIO())).phase("mock", 2) as phase:
        reference = mock_way(tests, 1, workdir, phase).answers  # what the recording answered (the run said "yes")

    cassette = bridge_cassette(workdir, tests[0])
    document = yaml.safe_load(cassette.read_text())
    execute = next(i for i in document["interactions"] if i["request"]["command"] == "execute_program")
    execute["response"]["result"]["outputs"]["answer"] = "Lyon"
    cassette.write_text(yaml.safe_dump(document, sort_keys=False))

    out = io.StringIO()
    display = DemoDisplay(Console(file=out, width=120))
    report = DemoReport(workdir, reference)
    with display.phase("mock", 2) as phase:
        report.ways.append(mock_way(tests, 1, workdir, phase))
    show_report(report, display, keep=False)
    assert report.exit_code == 1
    assert report.differing == {"mock": ["test_capital_of_france"]}
    assert "NO: 1 differ" in out.getvalue()
    assert "DIFFERS: mock, test_capital_of_france: {'reasoning'" in out.getvalue() and "'Lyon'" in out.getvalue()


def test_the_work_dir_is_removed_unless_kept_even_when_the_demo_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), work_dir(tmp_path, keep=False) as path:
        (path / "cassettes").mkdir()
        raise RuntimeError("a way failed")
    assert list(tmp_path.iterdir()) == []
    with work_dir(tmp_path, keep=True) as path:
        pass
    assert list(tmp_path.iterdir()) == [path]


def test_a_dir_that_is_a_file_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dspy_bridge.cli import main

    not_a_dir = tmp_path / "notes.txt"
    not_a_dir.write_text("")
    assert main(["demo", "--quick", "--dir", str(not_a_dir)]) == 2
    assert f"--dir {not_a_dir} is not a directory" in capsys.readouterr().err


def test_on_a_terminal_the_demo_redraws_its_progress_instead_of_writing_lines() -> None:
    out = io.StringIO()
    display = DemoDisplay(Console(file=out, force_terminal=True, width=100))
    with display, display.phase("mock", 2) as phase:
        phase.status("starting 1 mock worker(s)")
        for test in SUITE[:2]:
            phase.test_done(test, 0.01)
    text = out.getvalue()
    assert "\x1b[" in text and "mock: done in" in text and "2/2" in text
    assert "mock: test_capital_of_france done in" not in text  # the plain line is for pipes only
