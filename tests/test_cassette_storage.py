"""Cassette files under stress: several recorder processes at once, and recorders killed mid-write.

Everything here uses real processes, a real ``filelock`` and real ``SIGKILL``s. Children wait on
their stdin (a barrier), never on a clock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dspy_bridge.cassettes import Cassette, Recorder
from dspy_bridge.protocol._programs import program_id_for
from workerproc import HANG_GUARD

SIGNATURE = {"signature": "question -> answer"}

RECORDER_CHILD = """
import sys
from dspy_bridge.cassettes import Recorder
from dspy_bridge.protocol._programs import program_id_for

path, name, count, mode, run_id, construct_early = sys.argv[1:7]
count = int(count)
recorder = Recorder(path, mode, run_id=run_id) if construct_early == "1" else None
print("ready", flush=True)
sys.stdin.readline()  # barrier: the parent releases every child at once
recorder = recorder or Recorder(path, mode, run_id=run_id)
signature = {"signature": "question -> answer"}
program_id = program_id_for(signature)
recorder.record({"command": "create_program", "args": signature, "session_id": name},
                {"ok": True, "result": {"program_id": program_id}})
for i in range(count):
    recorder.record(
        {"command": "execute_program", "args": {"program_id": program_id, "inputs": {"question": f"{name}-{i}"}},
         "session_id": name},
        {"ok": True, "result": {"outputs": {"answer": f"{name} answer {i}"}}},
    )
    if i % 5 == 4:
        recorder.save()
recorder.save()
print("done", flush=True)
"""


def _child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


def _run_recorders(path: Path, mode: str, names: list[str], count: int, *, run_id: str, early: bool = False) -> None:
    children = [
        subprocess.Popen(
            [sys.executable, "-c", RECORDER_CHILD, str(path), name, str(count), mode, run_id, "1" if early else "0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_child_env(),
        )
        for name in names
    ]
    for child in children:
        assert child.stdout is not None and child.stdout.readline() == "ready\n", child.communicate()
    for child in children:  # release them together
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    for child in children:
        out, err = child.communicate(timeout=HANG_GUARD)
        assert child.returncode == 0, err
        assert out == "done\n"


def _questions(path: Path) -> list[str]:
    return [item.request["args"]["inputs"]["question"] for item in Cassette.load(path) if item.replayable]


def _seed(path: Path, *questions: str, run_id: str = "seed") -> None:
    with Recorder(path, "rewrite", run_id=run_id) as recorder:
        program_id = program_id_for(SIGNATURE)
        recorder.record(
            {"command": "create_program", "args": SIGNATURE, "session_id": "x"},
            {"ok": True, "result": {"program_id": program_id}},
        )
        for question in questions:
            recorder.record(
                {
                    "command": "execute_program",
                    "args": {"program_id": program_id, "inputs": {"question": question}},
                    "session_id": "x",
                },
                {"ok": True, "result": {"outputs": {"answer": "old"}}},
            )


NAMES = ["p1", "p2", "p3", "p4"]
COUNT = 30


def _expected(names: list[str]) -> set[str]:
    return {f"{name}-{i}" for name in names for i in range(COUNT)}


def test_concurrent_new_episodes_recorders_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "shared.yaml"
    _seed(path, "old-1", "old-2")
    _run_recorders(path, "new_episodes", NAMES, COUNT, run_id="run-a")
    questions = _questions(path)
    assert questions[:2] == ["old-1", "old-2"]
    assert set(questions[2:]) == _expected(NAMES)
    assert len(questions) == 2 + len(NAMES) * COUNT  # nothing lost, nothing doubled
    for name in NAMES:  # each recorder's interactions keep their own order
        mine = [q for q in questions if q.startswith(f"{name}-")]
        assert mine == [f"{name}-{i}" for i in range(COUNT)]
    assert [item.command for item in Cassette.load(path)].count("create_program") == 1  # same setup: merged


def test_concurrent_once_recorders_of_a_new_cassette_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "new.yaml"
    _run_recorders(path, "once", NAMES, COUNT, run_id="run-b", early=True)  # all decided to record: no file yet
    assert set(_questions(path)) == _expected(NAMES)
    assert len(_questions(path)) == len(NAMES) * COUNT


def test_concurrent_rewrite_recorders_of_one_run_share_the_fresh_cassette(tmp_path: Path) -> None:
    path = tmp_path / "rewritten.yaml"
    _seed(path, "old-1", "old-2")
    _run_recorders(path, "rewrite", NAMES, COUNT, run_id="run-c")
    questions = _questions(path)
    assert "old-1" not in questions
    assert set(questions) == _expected(NAMES) and len(questions) == len(NAMES) * COUNT


KILLED_CHILD = """
import os, sys
from dspy_bridge.cassettes import Recorder
from dspy_bridge.protocol._programs import program_id_for

path, point = sys.argv[1:3]
real = getattr(os, point)

def pause_forever(*args):
    print("paused", flush=True)
    sys.stdin.readline()  # never answered: the parent SIGKILLs us here
    return real(*args)

setattr(os, point, pause_forever)  # the stdlib call the writer is about to make, not our code
recorder = Recorder(path, "new_episodes")
program_id = program_id_for({"signature": "question -> answer"})
for i in range(2000):
    recorder.record(
        {"command": "execute_program", "args": {"program_id": program_id, "inputs": {"question": f"new-{i}"}},
         "session_id": "k"},
        {"ok": True, "result": {"outputs": {"answer": "x" * 200}}},
    )
recorder.save()
"""


@pytest.mark.parametrize("point", ["fsync", "replace"], ids=["before-fsync", "before-rename"])
def test_a_recorder_killed_mid_write_leaves_the_old_cassette_intact(tmp_path: Path, point: str) -> None:
    path = tmp_path / "precious.yaml"
    _seed(path, "old-1", "old-2", "old-3")
    before = path.read_bytes()
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_CHILD, str(path), point],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_child_env(),
    )
    assert child.stdout is not None
    assert child.stdout.readline() == b"paused\n", child.communicate()
    leftovers = list(tmp_path.glob(".precious.yaml.*.tmp"))
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 400_000  # the new version, being written
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=HANG_GUARD)
    assert child.returncode == -signal.SIGKILL

    assert path.read_bytes() == before
    assert _questions(path) == ["old-1", "old-2", "old-3"]
    # The dead writer's lock was released by the kernel, and the next writer clears its leftovers.
    _seed(path, "after", run_id="a-later-run")
    assert _questions(path) == ["after"]
    assert list(tmp_path.glob(".precious.yaml.*.tmp")) == []


def test_cassettes_are_written_readable_by_everyone(tmp_path: Path) -> None:
    path = tmp_path / "mode.yaml"
    _seed(path, "q")
    assert path.stat().st_mode & 0o777 == 0o644
