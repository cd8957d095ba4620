"""Limits on what a cassette may be, checked at load and by ``dspy-bridge verify``.

Regression tests for hostile cassettes that used to pass ``Cassette.load`` and do damage later (a YAML
date, an int above 2^64, NaN or a recursive alias crashed the mock worker; a 1 KB billion-laughs file
grew to gigabytes; ``verify`` looped forever on recursive aliases and passed unsafe tags).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dspy_bridge import CassetteCorrupt
from dspy_bridge.cassettes import Cassette, verify
from dspy_bridge.cli import main

HEAD = """\
version: 1
meta:
  created: '2026-01-01T00:00:00Z'
  dspy_bridge_version: 0.1.0
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

LAUGHS = "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9)
)

HOSTILE = {
    "date": (HEAD + "        answer: 2024-01-01\n", 16, "YAML date"),
    "big-int": (HEAD + "        answer: 123456789012345678901234567890\n", 16, "int64/uint64"),
    "nan": (HEAD + "        answer: .nan\n", 16, "finite"),
    "infinity": (HEAD + "        answer: -.inf\n", 16, "finite"),
    "recursive-alias": (HEAD + "        answer: &x [1, *x]\n", 16, "recursive alias"),
    "alias": (HEAD + "        answer: &x [1]\n        again: *x\n", 16, "aliases"),
    "python-tag": (HEAD + "        answer: !!python/object/apply:os.system [echo hi]\n", 16, "tag"),
    "unknown-tag": (HEAD + "        answer: !custom 1\n", 16, "tag"),
    "binary": (HEAD + "        answer: !!binary aGVsbG8=\n", 16, "tag"),
    "int-key": (HEAD + "        1: one\n", 16, "keys must be strings"),
    "deep": (HEAD + "        answer: " + "[" * 150 + "]" * 150 + "\n", 16, "deeper"),
    "billion-laughs": ("version: 1\nmeta: {}\n" + LAUGHS.replace("\n", "\n", 1), None, "alias"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_load_refuses_what_a_mock_worker_could_not_encode(tmp_path: Path, name: str) -> None:
    text, line, words = HOSTILE[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    with pytest.raises(CassetteCorrupt) as info:
        Cassette.load(path)
    message = str(info.value)
    assert words in message, message
    if line is not None:
        assert f"{path}:{line}:" in message, message


def test_billion_laughs_is_refused_by_load_and_verify_finishes(tmp_path: Path) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text("version: 1\nmeta:\n" + "".join("  " + line + "\n" for line in LAUGHS.splitlines()))
    assert path.stat().st_size < 2000
    with pytest.raises(CassetteCorrupt, match="alias"):
        Cassette.load(path)
    assert verify(path) == [path]  # verify accepts shared nodes (other tools write them) but visits each once


@pytest.mark.parametrize("name", ["recursive-alias", "python-tag", "unknown-tag", "date", "big-int", "nan"])
def test_verify_fails_on_hostile_files_and_finishes(tmp_path: Path, name: str, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / f"{name}.yml"  # *.yml is read too
    path.write_text(HOSTILE[name][0])
    code = subprocess.run(
        [sys.executable, "-m", "dspy_bridge.cli", "verify", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert code.returncode == 1, code.stdout + code.stderr
    assert str(path) in code.stderr


def test_verify_fails_on_non_yaml_missing_paths_and_empty_folders(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("key: [unclosed\n  - : :\n")
    assert main(["verify", str(bad)]) == 1
    assert "not YAML" in capsys.readouterr().err
    assert main(["verify", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["verify", str(tmp_path / "empty")]) == 2
    assert "holds no cassette" in capsys.readouterr().err
    good = tmp_path / "ok"
    good.mkdir()
    (good / "a.yml").write_text("version: 1\nmeta: {note: fine}\n")
    assert main(["verify", str(good)]) == 0
    assert "1 cassette file(s)" in capsys.readouterr().out


def test_the_parse_cache_is_bounded_by_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dspy_bridge.cassettes import _cache

    monkeypatch.setenv("DSPY_BRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DSPY_BRIDGE_CASSETTE_CACHE_MAX_BYTES", str(1_000_000))
    blob = "x" * 300_000
    for number in range(6):
        _cache.write(f"{number:064x}", {"n": number}, [{"blob": blob}])
    entries = list((tmp_path / "cache" / "cassettes").glob("*.msgpack"))
    assert 0 < len(entries) <= 3
    assert sum(entry.stat().st_size for entry in entries) <= 1_000_000
    _cache.write("f" * 64, {}, [{"blob": "y" * 2_000_000}])  # above the whole budget: never written
    assert not list((tmp_path / "cache" / "cassettes").glob("ffff*"))
