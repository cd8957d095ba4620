"""The plugin writes a run record; ``dspy-bridge cassettes unused|prune`` read it (one mock-only pytest run)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dspy_bridge.cassettes import Cassette
from dspy_bridge.cli import main

pytest_plugins = ["pytester"]

QA = Path(__file__).resolve().parents[1] / "examples" / "qa_app"
ANSWER = "test_answer_is_some_text"

TESTS = """
import pytest
from qa_app import answer

@pytest.mark.mock
def test_answer_is_some_text(bridge):
    bridge.configure_lm("gemini/gemini-2.5-flash")
    assert answer(bridge, "What does DSPy optimise?").strip()

@pytest.mark.mock
def test_stubbed(bridge):
    bridge.configure_lm("gemini/gemini-2.5-flash")
    pid = bridge.create_program("question -> answer")
    bridge.stub(pid, {"answer": "Paris"})
    assert bridge.execute(pid, question="Capital of France?") == {"answer": "Paris"}

@pytest.mark.integration
def test_answer_on_real_workers(bridge):
    raise AssertionError("deselected by -m mock: never runs")
"""


def test_a_mock_run_writes_the_record_that_unused_and_prune_read(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(QA / "qa_app.py", pytester.path / "qa_app.py")
    pytester.makepyfile(test_qa=TESTS)
    folder = pytester.path / "cassettes" / "test_qa"
    folder.mkdir(parents=True)
    source = QA / "tests" / "cassettes" / "test_qa"
    for name in (f"{ANSWER}.yaml", f"{ANSWER}.http.yaml", "test_answer_on_real_workers.yaml"):
        shutil.copy(source / name, folder / name)
    answer = Cassette.load(folder / f"{ANSWER}.yaml")
    extra = json.loads(json.dumps(answer[2].as_dict()))  # a copy: as_dict shares the recorded dicts
    extra["request"]["args"]["inputs"] = {"question": "a question no test asks any more"}
    Cassette(answer.path, [*(item.as_dict() for item in answer), extra], answer.meta).save()
    shutil.copy(folder / f"{ANSWER}.yaml", folder / "test_renamed_long_ago.bridge.yaml")

    assert main(["cassettes", "unused"]) == 2  # no run yet: the error says what to run …
    assert "pytest -m mock" in capsys.readouterr().err
    monkeypatch.setenv("DSPY_BRIDGE_STALE_DAYS", "1")  # the shipped cassette is days old: stale …
    monkeypatch.setenv("DSPY_BRIDGE_STALE", "fail")  # … and asked to, the run fails on it (tests still pass)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", "-m", "mock")  # … run it
    result.assert_outcomes(passed=2, deselected=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "stale cassettes: 1 (fail the run (--bridge-stale=fail); re-record them with --bridge-record=all):",
            f"  cassettes/test_qa/{ANSWER}.yaml: older than 1 days",
        ]
    )
    result.stdout.fnmatch_lines(["run record: .dspy-bridge/last-run.json (2 bridge test(s) ran, 1 cassette(s) used)*"])
    assert (pytester.path / ".dspy-bridge" / ".gitignore").read_text().endswith("*\n")
    capsys.readouterr()  # pytester's own "running: …" lines

    assert main(["cassettes", "unused", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    found = {Path(item["path"]).name: item for item in report["unused"]}
    assert set(found) == {f"{ANSWER}.yaml", "test_renamed_long_ago.bridge.yaml"}
    assert found[f"{ANSWER}.yaml"]["indexes"] == [3]  # the extra recording; [2] was played
    assert found["test_renamed_long_ago.bridge.yaml"]["whole_file"] is True
    assert [Path(p).name for p in report["not_covered"]] == ["test_answer_on_real_workers.yaml"]  # deselected
    assert report["invocation"].endswith("-m mock") and report["ran"] == 2 and report["collected"] == 3

    assert main(["cassettes", "prune", "--yes"]) == 0
    out = capsys.readouterr().out
    assert "removed: bridge file cassettes/test_qa/test_renamed_long_ago.bridge.yaml" in out
    assert not (folder / "test_renamed_long_ago.bridge.yaml").exists()
    assert len(Cassette.load(folder / f"{ANSWER}.yaml")) == 3
    assert (folder / "test_answer_on_real_workers.yaml").exists() and (folder / f"{ANSWER}.http.yaml").exists()
