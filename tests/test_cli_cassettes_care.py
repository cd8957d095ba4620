"""``dspy-bridge cassettes diff|unused|prune|verify`` and staleness, in-process over copies of shipped cassettes.

The run records here are written by hand in the plugin's format (``_pytest/_usage``); the pytester test in
test_plugin_run_record.py has the plugin write a real one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from dspy_bridge._pytest._summary import RunReport
from dspy_bridge._pytest._usage import RunUsage
from dspy_bridge.cassettes import Cassette
from dspy_bridge.cassettes import _inventory as inventory
from dspy_bridge.cassettes._unused import digest
from dspy_bridge.cli import main

QA = Path(__file__).resolve().parents[1] / "examples" / "qa_app" / "tests" / "cassettes" / "test_qa"
ANSWER = "test_answer_is_some_text"
AGENT_HTTP = (
    QA.parents[3]
    / "dspy_app"
    / "tests"
    / "cassettes"
    / "test_agent"
    / "test_the_agent_searches_then_converts-mock.http.yaml"
)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["cassettes", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def qa(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project: tests/test_qa.py (two tests) and its cassettes folder, the current directory."""
    tests = tmp_path / "tests"
    shutil.copytree(QA, tests / "cassettes" / "test_qa")
    (tests / "test_qa.py").write_text("def test_answer_is_some_text(): pass\n")
    monkeypatch.chdir(tmp_path)
    return tests / "cassettes" / "test_qa"


# -- diff -------------------------------------------------------------------------------------------------
def test_diff_of_a_copy_is_the_same_and_exits_0(qa: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy = qa.parent / "copy.bridge.yaml"
    shutil.copy(qa / f"{ANSWER}.yaml", copy)
    code, out, _ = run(capsys, "diff", str(qa / f"{ANSWER}.yaml"), str(copy))
    assert code == 0
    assert out.splitlines()[-1] == "same: 3 interaction(s) the same, 0 differ, 0 only in A, 0 only in B"


def test_diff_shows_a_changed_answer_and_an_added_interaction_unified_style(
    qa: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = qa / f"{ANSWER}.yaml"
    cassette = Cassette.load(original)
    changed = Cassette(qa / "changed.bridge.yaml", [i.as_dict() for i in cassette], dict(cassette.meta))
    answer = changed[2].response["result"]["outputs"]
    answer["answer"] = "a different answer"
    extra = json.loads(json.dumps(changed[2].as_dict()))
    extra["request"]["args"]["inputs"]["question"] = "one more question"
    changed = Cassette(changed.path, [*(i.as_dict() for i in changed), extra], {**cassette.meta, "dspy_version": "9"})
    changed.save()
    code, out, _ = run(capsys, "diff", str(original), str(changed.path))
    assert code == 1
    assert "meta dspy_version: 3.4.1 → 9  (not counted)" in out
    assert "@@ [2] → [2] execute_program prog_718514f24686e491: the response differs" in out
    assert "-      answer: amber river maple amber" in out and "+      answer: a different answer" in out
    assert "@@ only in B: [3] execute_program prog_718514f24686e491" in out
    assert "+      question: one more question" in out
    assert out.splitlines()[-1] == "different: 2 interaction(s) the same, 1 differ, 0 only in A, 1 only in B"
    code, out, _ = run(capsys, "diff", str(original), str(changed.path), "--json")
    data = json.loads(out)
    assert code == 1 and data["same"] is False
    assert data["counts"] == {"same": 2, "differ": 1, "only_a": 0, "only_b": 1}
    assert [c["kind"] for c in data["changes"]] == ["differ", "only_b"]


def test_diff_of_http_cassettes_ignores_the_loopback_port_and_per_call_ids(
    qa: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = qa / f"{ANSWER}.http.yaml"
    text = original.read_text()
    data = yaml.safe_load(text)
    for item in data["interactions"]:
        item["request"]["uri"] = (
            item["request"]["uri"].replace("127.0.0.1:", "127.0.0.1:1").replace("localhost:", "localhost:1")
        )
    body = json.loads(data["interactions"][0]["response"]["body"]["string"])
    body["responseId"] = "another-id"
    data["interactions"][0]["response"]["body"]["string"] = json.dumps(body)
    again = qa / "again.http.yaml"
    again.write_text(yaml.safe_dump(data))
    code, out, _ = run(capsys, "diff", str(original), str(again))
    assert code == 0, out
    body["candidates"][0]["content"]["parts"][0]["text"] = "[[ ## answer ## ]]\nsomething else"
    data["interactions"][0]["response"]["body"]["string"] = json.dumps(body)
    again.write_text(yaml.safe_dump(data))
    code, out, _ = run(capsys, "diff", str(original), str(again))
    assert code == 1 and "POST /v1beta/models/gemini-2.5-flash:generateContent: the response differs" in out
    assert "+            something else" in out


def test_diff_usage_errors_exit_2(qa: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "diff", str(qa / f"{ANSWER}.yaml"), str(qa / f"{ANSWER}.http.yaml"))
    assert code == 2 and "is a bridge cassette and" in err and "a http one" in err
    code, _, err = run(capsys, "diff", str(qa / f"{ANSWER}.yaml"), str(qa / "missing.yaml"))
    assert code == 2 and "missing.yaml is not a file" in err
    broken = qa / "broken.bridge.yaml"
    broken.write_text("version: 1\nmeta: [\n")
    code, _, err = run(capsys, "diff", str(qa / f"{ANSWER}.yaml"), str(broken))
    assert code == 2 and "could not read a cassette" in err


# -- unused and prune over a hand-written run record ----------------------------------------------------
def _record(qa: Path, **cassettes: dict[str, Any]) -> dict[str, Any]:
    root = qa.parent
    stems = {
        str(qa / ANSWER): "ran",
        str(qa / "test_sentiment_is_one_of_the_labels"): "not run",
        str(qa / "test_a_stub_overrides_the_model"): "other",
        str(qa / "test_answer_on_real_workers"): "not run",
        str(qa / "test_sentiment_on_real_workers"): "not run",
    }
    return {
        "format": 1,
        "finished": "2026-11-30T12:00:00Z",
        "invocation": "pytest -m mock",
        "ran": 1,
        "selected": 2,
        "collected": 3,
        "claimed": stems,
        "tests": {stem: f"tests/test_qa.py::{Path(stem).name}" for stem in stems},
        "owned": [str(qa)],
        "complete": [str(root)],
        "cassettes": {str(qa / name): entry for name, entry in cassettes.items()},
    }


def _write(path: Path, record: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def test_unused_sorts_every_file_and_prune_removes_only_what_it_reports(
    qa: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bridge = qa / f"{ANSWER}.yaml"
    (qa.parent / "test_gone").mkdir()
    gone = qa.parent / "test_gone" / "test_x.bridge.yaml"
    shutil.copy(bridge, gone)
    orphan = qa / "test_renamed.bridge.yaml"
    shutil.copy(bridge, orphan)
    pytest_recording_own = qa / "test_plain.yaml"  # vcrpy-shaped, no .http suffix: never ours
    shutil.copy(qa / f"{ANSWER}.http.yaml", pytest_recording_own)
    record = _record(
        qa,
        **{
            f"{ANSWER}.yaml": {"level": "bridge", "tests": ["t"], "played": [], "digest": digest(bridge)},
            "test_answer_on_real_workers.http.yaml": {"level": "http", "tests": ["t2"], "played": None},
        },
    )
    _write(qa.parents[2] / ".dspy-bridge" / "last-run.json", record)
    code, out, _ = run(capsys, "unused", "--json")
    assert code == 1
    data = json.loads(out)
    unused = {Path(f["path"]).name: f for f in data["unused"]}
    assert set(unused) == {
        f"{ANSWER}.yaml",  # used, but its one replayable interaction was never played
        "test_a_stub_overrides_the_model.yaml",  # its test no longer uses the bridge fixtures
        "test_renamed.bridge.yaml",  # in a collected module's folder, claimed by no test
        "test_x.bridge.yaml",  # its module is gone (every module of tests/ was collected)
    }
    assert unused[f"{ANSWER}.yaml"]["indexes"] == [2] and unused[f"{ANSWER}.yaml"]["whole_file"] is False
    assert "no longer uses the bridge fixtures" in unused["test_a_stub_overrides_the_model.yaml"]["reason"]
    assert "its test module is gone" in unused["test_x.bridge.yaml"]["reason"]
    not_covered = {Path(p).name for p in data["not_covered"]}
    assert "test_sentiment_is_one_of_the_labels.yaml" in not_covered  # its test did not run
    assert [Path(item["path"]).name for item in data["unknown"]] == ["test_answer_on_real_workers.http.yaml"]
    assert [Path(p).name for p in data["skipped"]] == ["test_plain.yaml"]

    before = {path: path.read_bytes() for path in qa.parent.rglob("*.yaml")}
    code, out, _ = run(capsys, "prune")
    assert code == 0 and "dry run: nothing was changed; run again with --yes" in out
    assert out.count("would remove: ") == 4
    assert {path: path.read_bytes() for path in qa.parent.rglob("*.yaml")} == before
    code, out, _ = run(capsys, "prune", "--yes")
    assert code == 0, out
    assert not gone.exists() and not orphan.exists() and not (qa / "test_a_stub_overrides_the_model.yaml").exists()
    assert "removed 1 interaction(s) from: bridge interactions [2] of" in out
    assert [i.command for i in Cassette.load(bridge)] == ["configure_lm", "create_program"]
    assert pytest_recording_own.exists() and (qa / "test_sentiment_is_one_of_the_labels.yaml").exists()
    code, out, _ = run(capsys, "unused")  # the record is now older than the files: nothing judged twice
    assert code == 0 and f"not judged: tests/cassettes/test_qa/{ANSWER}.yaml: changed since that run" in out


def test_prune_drops_unplayed_http_interactions_and_vcrpy_still_reads_the_file(
    qa: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vcr.serializers import yamlserializer

    http = qa / "test_agent.http.yaml"
    shutil.copy(AGENT_HTTP, http)
    count = len(yaml.safe_load(http.read_text())["interactions"])
    assert count == 4
    entry = {"level": "http", "tests": ["t"], "played": [0], "digest": digest(http)}
    record = _write(qa / "rec.json", _record(qa, **{http.name: entry}))
    code, out, _ = run(capsys, "prune", str(http), "--run-record", str(record), "--apply", "--json")
    data = json.loads(out)
    assert code == 0 and data["applied"] is True
    assert data["unused"][0]["indexes"] == list(range(1, count))
    assert data["unused"][0]["outcome"] == f"removed {count - 1} interaction(s) from"
    assert len(yamlserializer.deserialize(http.read_text())["interactions"]) == 1


def test_prune_refuses_a_file_changed_since_the_run(qa: Path, capsys: pytest.CaptureFixture[str]) -> None:
    orphan = qa / "test_renamed.bridge.yaml"
    shutil.copy(qa / f"{ANSWER}.yaml", orphan)
    record = _write(qa / "rec.json", _record(qa))
    code, out, _ = run(capsys, "unused", str(orphan), "--run-record", str(record), "--json")
    finding = json.loads(out)["unused"][0]
    assert code == 1 and finding["digest"] == digest(orphan)
    from dspy_bridge._cli_cassettes import _prune_one
    from dspy_bridge.cassettes._unused import Finding

    orphan.write_text(orphan.read_text() + "\n")  # edited after unused looked at it
    outcome = _prune_one(Finding(**{k: v for k, v in finding.items() if k != "whole_file"}))
    assert outcome.startswith("failed: changed since the run record was written") and orphan.exists()


def test_unused_without_a_run_record_says_what_to_run(qa: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "unused")
    assert code == 2
    assert "no run record (.dspy-bridge/last-run.json) here or in any parent folder" in err
    assert "pytest -m mock" in err  # test_plugin_run_record.py runs exactly that, then unused
    bad = qa / "bad.json"
    bad.write_text("{")
    code, _, err = run(capsys, "prune", "--run-record", str(bad))
    assert code == 2 and "is not readable JSON" in err
    code, _, err = run(capsys, "unused", "--run-record", str(qa / "nope.json"))
    assert code == 2 and "nope.json does not exist" in err


# -- verify, list staleness ---------------------------------------------------------------------------------
def test_cassettes_verify_and_the_old_verify_alias(qa: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "verify", str(qa), "--json")
    assert code == 0 and len(json.loads(out)["files"]) == 9
    assert main(["verify", str(qa)]) == 0
    assert "9 cassette file(s) are plain data" in capsys.readouterr().out
    leaky = qa / "leak.bridge.yaml"
    leaky.write_text((qa / f"{ANSWER}.yaml").read_text().replace("cache: false", "api_key: AIzaSy" + "A" * 33))
    code, out, err = run(capsys, "verify", str(leaky), "--json")
    assert code == 1 and json.loads(out)["error"] == "SecretLeak" and "key-shaped" in err
    code, _, err = run(capsys, "verify", str(qa / "missing"))
    assert code == 2


def test_list_flags_another_dspy_version_and_another_model(
    qa: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inventory, "installed_dspy_version", lambda: "3.9.0")
    code, out, _ = run(capsys, "list", str(qa / f"{ANSWER}.yaml"))
    assert code == 0 and "STALE: recorded with DSPy 3.4.1, 3.9.0 installed" in out
    monkeypatch.setattr(inventory, "installed_dspy_version", lambda: "3.4.1")
    code, out, _ = run(capsys, "list", str(qa), "--model", "gemini/gemini-3-pro", "--json")
    reasons = {Path(e["path"]).name: e["stale"] for e in json.loads(out)}
    assert reasons[f"{ANSWER}.yaml"] == ["recorded against gemini/gemini-2.5-flash, not gemini/gemini-3-pro"]
    assert reasons[f"{ANSWER}.http.yaml"] == ["recorded against gemini-2.5-flash, not gemini/gemini-3-pro"]
    code, out, _ = run(capsys, "list", str(qa), "--model", "gemini-2.5-flash")
    assert "STALE" not in out


# -- the plugin's side, without pytest runs -----------------------------------------------------------------
def test_run_usage_merges_xdist_workers_and_unknown_plays_win() -> None:
    gw0, gw1 = RunUsage(), RunUsage()
    gw0.claimed = {"/c/test_m/a": "ran", "/c/test_m/b": "not run"}
    gw1.claimed = {"/c/test_m/a": "not run", "/c/test_m/b": "ran", "/c/test_m/c": "other"}
    gw0.cassettes = {"/c/x.bridge.yaml": {"level": "bridge", "tests": ["t1"], "played": [2]}}
    gw1.cassettes = {"/c/x.bridge.yaml": {"level": "bridge", "tests": ["t2"], "played": [4]}}
    gw0.ran, gw1.ran, gw0.collected, gw1.collected = 1, 2, 5, 5
    report = RunReport("main")
    for worker in (gw0, gw1):
        exported = RunReport(worker_label := f"gw{worker.ran}")
        exported.usage = worker
        report.merge(exported.export())
        assert worker_label in report.processes
    merged = report.usage
    assert merged.claimed == {"/c/test_m/a": "ran", "/c/test_m/b": "ran", "/c/test_m/c": "other"}
    assert merged.cassettes["/c/x.bridge.yaml"] == {"level": "bridge", "tests": ["t1", "t2"], "played": [2, 4]}
    assert (merged.ran, merged.collected) == (3, 5)
    late = RunReport("gw9")
    late.usage.cassettes = {"/c/x.bridge.yaml": {"level": "bridge", "tests": ["t3"], "played": None}}
    report.merge(late.export())
    assert merged.cassettes["/c/x.bridge.yaml"]["played"] is None


class _Reporter:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def write_sep(self, sep: str, title: str) -> None:
        self.lines.append(title)

    def write_line(self, line: str) -> None:
        self.lines.append(line)


def test_the_summary_lists_stale_cassettes_and_says_whether_they_fail_the_run() -> None:
    report = RunReport("main")
    report.counts["mock"]["tests"] = 1
    report.stale = [{"path": "tests/cassettes/a.bridge.yaml", "reasons": ["older than 30 days"]}]
    reporter = _Reporter()
    report.write(reporter)
    assert "stale cassettes: 1 (a warning; re-record them with --bridge-record=all):" in reporter.lines
    assert "  tests/cassettes/a.bridge.yaml: older than 30 days" in reporter.lines
    report.stale_mode, reporter = "fail", _Reporter()
    report.write(reporter)
    assert any(line.startswith("stale cassettes: 1 (fail the run (--bridge-stale=fail)") for line in reporter.lines)


@pytest.mark.parametrize("action", ["list", "show", "stats", "diff", "unused", "prune", "verify"])
def test_help_texts_carry_exit_codes_and_no_rst_markup(action: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["cassettes", action, "--help"])
    out = capsys.readouterr().out
    assert "Exit codes: 0 " in out and "``" not in out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "``" not in capsys.readouterr().out


def test_the_run_record_goes_where_it_is_told_and_off_writes_none(tmp_path: Path) -> None:
    from types import SimpleNamespace

    config: Any = SimpleNamespace(rootpath=tmp_path, invocation_params=SimpleNamespace(args=("-m", "mock")))
    usage = RunUsage()
    assert usage.write(config, 0, ".dspy-bridge/last-run.json") is None  # no bridge test ran: nothing written
    usage.ran = 1
    assert usage.write(config, 0, "off") is None and not (tmp_path / ".dspy-bridge").exists()
    written = usage.write(config, 0, "records/run.json")
    assert written == tmp_path / "records" / "run.json" and not (tmp_path / "records" / ".gitignore").exists()
    record = json.loads(written.read_text())
    assert record["format"] == 1 and record["invocation"] == "pytest -m mock" and record["ran"] == 1
    assert usage.write(config, 0, ".dspy-bridge/last-run.json") == tmp_path / ".dspy-bridge" / "last-run.json"
    assert (tmp_path / ".dspy-bridge" / ".gitignore").read_text().endswith("*\n")


def test_diff_verdict_passes_a_reworded_answer_and_fails_a_regression(
    qa: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = qa / f"{ANSWER}.yaml"
    cassette = Cassette.load(original)

    def variant(name: str, answer: Any) -> Path:
        copy = Cassette(qa / name, [i.as_dict() for i in cassette], dict(cassette.meta))
        copy[2].response["result"]["outputs"]["answer"] = answer
        copy.save()
        return copy.path

    code, out, _ = run(capsys, "diff", str(original), str(variant("reworded.bridge.yaml", "other words")), "--verdict")
    assert code == 0, out  # different, but only reworded
    assert "verdict answer: benign (same type (string), different value)" in out
    assert out.splitlines()[-1].endswith("1 differ, 0 only in A, 0 only in B; 0 with a regression")
    code, out, _ = run(capsys, "diff", str(original), str(variant("typed.bridge.yaml", 42)), "--verdict", "--json")
    data = json.loads(out)
    assert code == 1 and data["regressions"] == 1
    assert data["changes"][0]["verdicts"] == [
        {"field": "answer", "verdict": "regression", "reason": "type string → number"}
    ]

    http = qa / f"{ANSWER}.http.yaml"
    data = yaml.safe_load(http.read_text())
    body = json.loads(data["interactions"][0]["response"]["body"]["string"])
    body["candidates"][0]["finishReason"] = "MAX_TOKENS"
    data["interactions"][0]["response"]["body"]["string"] = json.dumps(body)
    cut = qa / "cut.http.yaml"
    cut.write_text(yaml.safe_dump(data))
    code, out, _ = run(capsys, "diff", str(http), str(cut), "--verdict")
    assert code == 1 and "verdict finish_reason: regression (finish reason STOP → MAX_TOKENS)" in out
