"""The canonical layout (one JSON line per request and response) and its fast reader: whatever a file holds,
the result is PyYAML's reading of it (the reference) or a clear ``CassetteCorrupt``, never something else."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from dspy_bridge import CassetteCorrupt
from dspy_bridge.cassettes import Cassette, Recorder, _cache, _layout
from dspy_bridge.cassettes._cassette import default_meta
from dspy_bridge.cassettes._yamlio import SafeLoader

META = {"created": "2026-01-01T00:00:00Z", "dspy_bridge_version": "0.1.0", "recorded_against": "fake-gemini"}


def _execute(question: str, answer: Any) -> dict[str, Any]:
    return {
        "request": {
            "command": "execute_program",
            "session": "s1",
            "program": {"signature": "question -> answer", "program_type": "predict"},
            "model": "gemini/gemini-2.5-flash",
            "args": {"inputs": {"question": question}, "program_id": "prog_0123456789abcdef"},
        },
        "response": {"ok": True, "result": {"outputs": {"answer": answer}}},
    }


def _saved(tmp_path: Path, *items: dict[str, Any]) -> Path:
    path = tmp_path / "c.yaml"
    Cassette(path, list(items), dict(META)).save()
    return path


def _loaded(path: Path) -> list[dict[str, Any]]:
    return [item.as_dict() for item in Cassette.load(path)]


def _reference(text: str) -> list[dict[str, Any]]:
    """What PyYAML (any YAML tool) reads from the text: the file's meaning."""
    interactions: list[dict[str, Any]] = yaml.load(text, Loader=SafeLoader)["interactions"]
    return interactions


def test_the_fast_reader_reads_what_the_writer_writes_and_pyyaml_agrees(tmp_path: Path) -> None:
    path = _saved(tmp_path, _execute("2+2?", "4"), _execute("multi\nline", {"nested": [1, 2.5, None, True]}))
    text = path.read_text()
    assert _layout.read(text) is not None  # the fast path, not the fallback
    assert (
        _loaded(path)
        == _reference(text)
        == [_execute("2+2?", "4"), _execute("multi\nline", {"nested": [1, 2.5, None, True]})]
    )


def test_an_empty_cassette_is_written_as_an_empty_list(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    assert path.read_text().endswith("interactions: []\n")
    assert _layout.read(path.read_text()) is not None and Cassette.load(path).interactions == []


def test_new_recordings_are_appended_keeping_the_old_text_byte_for_byte(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    Cassette(path, [_execute("q1", "a1")], default_meta(recorded_against="fake-gemini")).save()
    before = path.read_bytes()
    with Recorder(path, "new_episodes", meta={"recorded_against": "fake-gemini"}) as recorder:
        recorder.record(
            {"command": "execute_program", "args": _execute("q2", "a2")["request"]["args"], "session_id": "x"},
            {"ok": True, "result": {"outputs": {"answer": "a2"}}},
        )
    after = path.read_bytes()
    assert after.startswith(before) and after.count(b"\n") == before.count(b"\n") + 2  # one request, one response
    assert [item.request["args"]["inputs"]["question"] for item in Cassette.load(path)] == ["q1", "q2"]
    assert not list(tmp_path.glob(".c.yaml.*.tmp"))  # still written to a temporary file and renamed


# --- files the fast reader leaves to PyYAML: the result is PyYAML's reading ------------------------

OLD_BLOCK_FILE = """\
version: 1
meta:
  created: '2026-01-01T00:00:00Z'
  dspy_bridge_version: 0.1.0
  recorded_against: fake-gemini
interactions:
- request:
    command: execute_program
    session: s1
    program:
      signature: question -> answer
      program_type: predict
    model: gemini/gemini-2.5-flash
    args:
      inputs:
        question: What is 2+2?
      program_id: prog_0123456789abcdef
  response:
    ok: true
    result:
      outputs:
        answer: |-
          four
          (a block scalar, as the old writer wrote multi-line text)
"""


def test_a_block_style_file_from_an_earlier_version_loads_and_a_save_rewrites_it_canonically(tmp_path: Path) -> None:
    path = tmp_path / "old.yaml"
    path.write_text(OLD_BLOCK_FILE)
    expected = [_execute("What is 2+2?", "four\n(a block scalar, as the old writer wrote multi-line text)")]
    assert _layout.read(OLD_BLOCK_FILE) is None and _loaded(path) == expected
    with Recorder(path, "new_episodes", meta={"recorded_against": "fake-gemini"}) as recorder:
        recorder.record(
            {"command": "execute_program", "args": {"program_id": "prog_0123456789abcdef", "inputs": {}}},
            {"ok": True, "result": {}},
        )
    assert path.read_text().startswith(_layout.HEADER) and _loaded(path)[0] == expected[0]


def test_a_hand_edit_in_block_style_comments_and_blank_lines_still_load_as_written(tmp_path: Path) -> None:
    path = _saved(tmp_path, _execute("q1", "a1"), _execute("q2", "a2"))
    lines = path.read_text().splitlines()
    # a person rewrites the second response in block style and leaves a comment: PyYAML reads that
    lines[-1] = (
        "  response:\n    ok: true\n    result:\n      outputs:\n        answer: |\n          edited\n          by hand"
    )
    lines.insert(4, "# recorded against the fake server\n")
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    assert _layout.read(text) is None
    assert (
        _loaded(path) == _reference(text)
        and _loaded(path)[1]["response"]["result"]["outputs"]["answer"] == "edited\nby hand\n"
    )
    comment_only = _saved(tmp_path, _execute("q1", "a1"))
    text = comment_only.read_text().replace("interactions:\n", "interactions:\n\n# a note\n")
    comment_only.write_text(text)
    assert _layout.read(text) is not None and _loaded(comment_only) == _reference(text)  # still the fast path


@pytest.mark.parametrize(
    ("old", "new", "why"),
    [
        ('"answer": "a1"', "'answer': 'a1'", "single quotes: YAML, not JSON"),
        ('"answer": "a1"', '"answer": a1', "a plain YAML scalar"),
        ('"answer": "a1"', '"answer": 1e5', "1e5 is a string in YAML 1.1, a float in JSON"),
        ('"answer": "a1"', '"answer": 1.5e5', "an exponent without a sign: a string in YAML 1.1"),
        ('"answer": "a1"', '"answer": NaN', "NaN: a string in YAML, a float in Python's json"),
        ('"answer": "a1"', '"answer": "a\u2028b"', "a raw U+2028 is a line break inside a YAML string"),
        ('"a1"}}}\n', '"a1"}}}  # checked\n', "a comment after the value"),
        ("\n  response: ", "\n  response:  ", "two spaces before the value"),
    ],
)
def test_where_json_and_yaml_could_disagree_the_file_reads_as_yaml_says(
    tmp_path: Path, old: str, new: str, why: str
) -> None:
    path = _saved(tmp_path, _execute("q1", "a1"))
    text = path.read_text().replace(old, new, 1)
    assert text != path.read_text(), why
    path.write_text(text)
    assert _layout.read(text) is None, why
    assert _loaded(path) == _reference(text), why


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('"answer": "a1"', '"answer": 123456789012345678901234', "outside the int64/uint64 range"),
        ('"answer": "a1"', '"answer": ' + "[" * 120 + "]" * 120, "nested deeper than 100 levels"),
        ('"answer": "a1"', '"answer": "a1\x07"', "unacceptable character"),
        ("interactions:\n", "interactions:\n# a comment with a bell \x07\n", "unacceptable character"),
        ('"answer": "a1"', '"answer": "a1"}}, "oops"', "did not find expected"),
        ('"answer": "a1"', '"answer": "\\ud83d\\ude00"', "invalid Unicode character escape"),  # JSON would join it
    ],
)
def test_bad_values_in_a_canonical_file_are_clear_errors_naming_the_file(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    path = _saved(tmp_path, _execute("q1", "a1"))
    path.write_text(path.read_text().replace(old, new, 1))
    with pytest.raises(CassetteCorrupt) as info:
        Cassette.load(path)
    assert str(path) in str(info.value) and expected in str(info.value)
    assert "rewrite" in str(info.value)  # what to do


def test_a_truncated_last_line_is_an_error_naming_the_line_and_the_likely_cause(tmp_path: Path) -> None:
    path = _saved(tmp_path, _execute("q1", "a1"), _execute("q2", "a2"))
    text = path.read_text()
    path.write_text(text[: len(text) - 20])  # a write that stopped in the middle of the last response
    with pytest.raises(CassetteCorrupt) as info:
        Cassette.load(path)
    assert f"{path}:{len(text.splitlines())}:1: the file ends in the middle of this line" in str(info.value)
    assert "rewrite" in str(info.value)
    path.write_text(text[: text.rindex("  response: ")])  # cut after a request line: no response for it
    with pytest.raises(CassetteCorrupt, match=r"interactions\.1\.response: Field required"):
        Cassette.load(path)


# --- the shared parse cache ---------------------------------------------------------------------


def _big(tmp_path: Path, answer: str = "y") -> Path:
    return _saved(tmp_path, *[_execute(f"q{i}", answer * 2000) for i in range(150)])


def _entry(directory: Path) -> Path:
    [entry] = (directory / "cassettes").glob("*.msgpack")
    return entry


def test_a_damaged_cache_entry_is_ignored_and_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSPY_BRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    path = _big(tmp_path)
    expected = _loaded(path)  # parsed, then cached
    entry = _entry(tmp_path / "cache")
    blob = bytearray(entry.read_bytes())
    blob[-100] ^= 0x01  # one flipped bit inside a string: still valid msgpack, different data
    entry.write_bytes(bytes(blob))
    assert _loaded(path) == expected  # the checksum caught it: parsed again
    rebuilt = entry.read_bytes()
    assert rebuilt != bytes(blob)
    assert _cache.read(entry.name.split("-")[0]) is not None  # a sound entry again
    entry.write_bytes(rebuilt[: len(rebuilt) // 2])  # torn
    assert _loaded(path) == expected


def test_an_entry_for_other_content_is_never_served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSPY_BRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = _big(tmp_path / "a", "y")
    Cassette.load(first)
    entry = _entry(tmp_path / "cache")
    second = _big(tmp_path / "b", "z")

    foreign = entry.with_name(
        entry.name.replace(entry.name.split("-")[0], hashlib.sha256(second.read_bytes()).hexdigest())
    )
    foreign.write_bytes(entry.read_bytes())  # first's entry, under second's key (a bad copy, a bug, a prank)
    assert _loaded(second)[0]["response"]["result"]["outputs"]["answer"].startswith("zzz")


SHARE = """
import hashlib, json, sys
from dspy_bridge.cassettes import Cassette
for _ in range(3):
    data = [item.as_dict() for item in Cassette.load(sys.argv[1])]
print(hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest())
"""


def test_processes_sharing_the_cache_all_get_the_file_s_data(tmp_path: Path) -> None:
    path = _big(tmp_path)
    expected = _loaded(path)
    digest = hashlib.sha256(json.dumps(expected, sort_keys=True).encode()).hexdigest()
    env = {"DSPY_BRIDGE_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)}
    workers = [
        subprocess.Popen([sys.executable, "-c", SHARE, str(path)], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [worker.communicate(timeout=120)[0].strip() for worker in workers]
    assert outputs == [digest] * 3
    assert len(list((tmp_path / "cache" / "cassettes").glob("*.msgpack"))) == 1
    assert not list((tmp_path / "cache" / "cassettes").glob(".*.tmp"))  # every write was renamed into place
