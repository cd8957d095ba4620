"""Cassette probes: concurrent writers in every record mode, a recorder killed mid-save, hostile files."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from dspy_bridge._exceptions import CassetteCorrupt, CassetteError, UsageError
from dspy_bridge.cassettes import Cassette, verify
from dspy_bridge.protocol import get_codec
from reliability._common import PLANTED_KEY, ProbeResult, files_holding_key

_WRITER = textwrap.dedent(
    """
    import sys
    from dspy_bridge.cassettes import Recorder
    from dspy_bridge.protocol._programs import program_id_for
    path, mode, writer, count, run_id = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
    recorder = Recorder(path, mode, run_id=run_id or None)
    if not recorder.recording:
        print("not-recording"); sys.exit(0)
    definition = {"signature": "question -> answer"}
    program_id = program_id_for(definition)
    session = f"sess-{writer}"
    recorder.record({"command": "create_program", "args": definition, "session_id": session},
                    {"ok": True, "result": {"program_id": program_id}})
    for n in range(count):
        question = f"{writer}-{n}"
        recorder.record({"command": "execute_program", "session_id": session,
                         "args": {"program_id": program_id, "inputs": {"question": question}}},
                        {"ok": True, "result": {"outputs": {"answer": question + " key=" + sys.argv[6]}}})
        if n % 5 == 4:
            recorder.save()
    recorder.save()
    print("recorded")
    """
)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


def concurrent_writers(writers: int, per_writer: int, root: Path) -> ProbeResult:
    """``writers`` processes record into one file at once, in every record mode; count lost interactions."""
    lost, total, notes = 0, 0, []
    for mode in ("once", "new_episodes", "all", "rewrite"):
        path = root / f"writers-{mode}.yaml"
        run_id = "shared-run" if mode == "rewrite" else ""  # a rewrite run's workers share one run id
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _WRITER, str(path), mode, f"w{i}", str(per_writer), run_id, PLANTED_KEY],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=_env(),
            )
            for i in range(writers)
        ]
        recorded = []
        for i, proc in enumerate(procs):
            out, err = proc.communicate(timeout=300)
            if proc.returncode != 0:
                notes.append(f"{mode}: writer {i} failed: {err[-200:]}")
                lost += per_writer
            elif out.strip() == "recorded":
                recorded.append(f"w{i}")
        expected = {f"{w}-{n}" for w in recorded for n in range(per_writer)}
        total += len(expected)
        try:
            present = {
                item.request["args"]["inputs"]["question"]
                for item in Cassette.load(path)
                if item.request.get("command") == "execute_program"
            }
        except (CassetteError, OSError) as exc:
            notes.append(f"{mode}: {exc}"[:200])
            lost += len(expected)
            continue
        missing = expected - present
        if missing:
            lost += len(missing)
            notes.append(f"{mode}: {len(missing)} of {len(expected)} interactions lost")
    return ProbeResult(
        "concurrent writers",
        f"{writers} processes record {per_writer} interactions each into one cassette at once (saving every 5), "
        "in each record mode (once, new_episodes, all, rewrite with a shared run id); counted: interactions "
        "recorded by a writer that was recording",
        total,
        lost,
        notes[:3],
    )


def crash_during_record(rounds: int, root: Path, seed: int = 9) -> ProbeResult:
    """A recording process SIGKILLed at a random moment: the file is always loadable (old or new, never torn)."""
    rng = random.Random(seed)
    failed, notes = 0, []
    for index in range(rounds):
        path = root / f"crash-{index}.yaml"
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), "all", "w0", "200", "", PLANTED_KEY],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=_env(),
        )
        time.sleep(rng.uniform(0.05, 1.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        if path.exists():
            try:
                Cassette.load(path)
            except CassetteCorrupt as exc:
                failed += 1
                notes.append(str(exc)[:200])
    return ProbeResult(
        "crash during record",
        "a process recording 200 interactions (saving every 5) is SIGKILLed 50-1000 ms in; the cassette must "
        "load (the previous or the new version, never a torn one)",
        rounds,
        failed,
        notes[:3],
    )


_HOSTILE_PARTS = [
    "answer: 2024-01-01",
    "answer: 123456789012345678901234567890",
    "answer: .nan",
    "answer: -.inf",
    "answer: &x [1, *x]",
    "answer: !!python/object/apply:os.system [echo hi]",
    "answer: !custom 1",
    "answer: !!binary aGVsbG8=",
    "1: one",
    "answer: " + "[" * 150 + "]" * 150,
    "<<: {a: 1}",
    "answer: &a [x, x]\n        b: *a",
]

_HEAD = """\
version: 1
meta:
  created: '2026-01-01T00:00:00Z'
interactions:
- request:
    command: execute_program
    session: s1
    args:
      inputs:
        question: hi
  response:
    ok: true
    result:
      outputs:
        """


def hostile_cassettes(files: int, root: Path, seed: int = 11) -> ProbeResult:
    """Known-hostile cassettes plus random mutations of a valid one: ``Cassette.load`` either refuses with
    ``CassetteCorrupt`` or returns data both codecs can encode; ``verify`` always finishes."""
    rng = random.Random(seed)
    failed, notes = 0, []
    codecs = [get_codec("msgpack"), get_codec("json")]
    valid = _HEAD + "answer: hello\n"
    for index in range(files):
        if index < len(_HOSTILE_PARTS):
            text = _HEAD + _HOSTILE_PARTS[index] + "\n"
        else:
            chars = list(valid)
            for _ in range(rng.randrange(1, 6)):
                position = rng.randrange(len(chars))
                chars[position] = rng.choice("&*!<>[]{}:,-?|\n '\"0123456789.e~@`%\\")
            text = "".join(chars) + rng.choice(["", "\n" + rng.choice(_HOSTILE_PARTS)])
        path = root / f"hostile-{index}.yaml"
        path.write_text(text, errors="surrogatepass")
        try:
            cassette = Cassette.load(path)
            for item in cassette:
                for codec in codecs:
                    codec.dumps({"r": item.response, "q": item.request})
            if index < len(_HOSTILE_PARTS):
                failed += 1
                notes.append(f"accepted: {_HOSTILE_PARTS[index][:60]!r}")
        except CassetteCorrupt:
            pass
        except Exception as exc:
            failed += 1
            notes.append(f"{type(exc).__name__}: {exc}"[:200])
        began = time.monotonic()
        try:
            verify(path)
        except (CassetteError, UsageError):
            pass
        except Exception as exc:
            failed += 1
            notes.append(f"verify: {type(exc).__name__}: {exc}"[:200])
        if time.monotonic() - began > 5:
            failed += 1
            notes.append(f"verify took {time.monotonic() - began:.1f} s on {path.name}")
    return ProbeResult(
        "hostile cassettes",
        f"{len(_HOSTILE_PARTS)} known-hostile files (dates, ints above 2^64, NaN, recursive and plain aliases, "
        "python/unknown/binary tags, int keys, 150-deep nesting, merge keys) plus random mutations of a valid "
        "cassette: load must refuse (CassetteCorrupt) or return data both codecs encode; verify must finish",
        files,
        failed,
        notes[:3],
    )


def secret_scan(root: Path) -> ProbeResult:
    """Every file the probes wrote: none may hold the planted key (recordings scrub it)."""
    files = [path for path in root.rglob("*") if path.is_file()]
    leaks = files_holding_key(root)
    return ProbeResult(
        "secret scan of files",
        "every file the probes wrote (cassettes from the writer and crash probes, whose LM answers quoted the "
        "planted key) is searched for it byte by byte",
        len(files),
        len(leaks),
        [str(path) for path in leaks[:3]],
    )


def scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="dspy-bridge-reliability-"))
