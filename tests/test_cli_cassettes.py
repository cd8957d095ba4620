"""``dspy-bridge cassettes list|show|stats`` over the shipped example cassettes (copied), a corrupt file and an empty dir."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dspy_bridge.cassettes import _inventory as inventory
from dspy_bridge.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
QA = EXAMPLES / "qa_app" / "tests" / "cassettes"
APP = EXAMPLES / "dspy_app" / "tests" / "cassettes"
QA_BRIDGE = "test_qa/test_answer_is_some_text.yaml"
QA_HTTP = "test_qa/test_answer_is_some_text.http.yaml"
AGENT_HTTP = "test_agent/test_the_agent_searches_then_converts-mock.http.yaml"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "cassettes"
    shutil.copytree(QA, root / "qa")
    for folder in ("test_agent", "test_extract", "test_optimized", "test_rag"):  # a fixed set: the sample grows
        shutil.copytree(APP / folder, root / "app" / folder)
    (root / "qa" / "settings.yaml").write_text("not_a_cassette: true\n")  # a plain YAML file: skipped
    (root / "qa" / "test_x.yaml.lock").write_text("")  # lock files: skipped
    (root / "qa" / ".test_x.bridge.yaml").write_text("junk")  # hidden (temp) files: skipped
    return root


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["cassettes", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_finds_both_levels_and_skips_what_is_not_a_cassette(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "list", str(tree))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert len(lines) == 25  # 5 legacy + 8 .bridge.yaml + 12 .http.yaml
    assert sum(line.startswith("bridge") for line in lines) == 13
    assert sum(line.startswith("http") for line in lines) == 12
    assert "settings.yaml" not in out and ".lock" not in out and ".test_x" not in out
    line = next(line for line in lines if line.endswith(QA_BRIDGE))
    assert "3 interaction(s)" in line and "fake-gemini" in line and "DSPy 3.4.1" in line
    assert "gemini/gemini-2.5-flash" in line and "STALE" not in line
    line = next(line for line in lines if line.endswith(AGENT_HTTP))
    assert "4 interaction(s)" in line and "against 127.0.0.1 " in line and "gemini-2.5-flash" in line


def test_list_json_parses_and_carries_every_field(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list", str(tree / "qa"), str(tree / "app" / AGENT_HTTP), "--json")
    assert code == 0
    entries = json.loads(out)
    assert len(entries) == 10
    by_name = {Path(e["path"]).name: e for e in entries}
    bridge = by_name[Path(QA_BRIDGE).name]
    assert bridge["level"] == "bridge" and bridge["interactions"] == 3 and bridge["error"] is None
    assert bridge["recorded"] == "2026-11-27T22:31:57Z" and bridge["dspy_version"] == "3.4.1"
    assert bridge["dspy_bridge_version"] == "0.1.0" and bridge["models"] == ["gemini/gemini-2.5-flash"]
    assert bridge["size"] == (QA / QA_BRIDGE).stat().st_size and bridge["age_days"] > 0
    http = by_name[Path(QA_HTTP).name]
    assert http["level"] == "http" and http["recorded"] == "2026-11-27T22:31:57Z"  # the response Date header
    assert http["models"] == ["gemini-2.5-flash"] and http["dspy_version"] is None
    assert by_name[Path(AGENT_HTTP).name]["interactions"] == 4


def test_stale_days_flags_old_files_and_another_dspy_version(
    tree: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inventory, "installed_dspy_version", lambda: "3.4.1")
    code, out, _ = run(capsys, "list", str(tree), "--stale-days", "100000", "--json")
    assert code == 0 and all(entry["stale"] == [] for entry in json.loads(out))
    code, out, _ = run(capsys, "list", str(tree / "qa"), "--stale-days", "0.5")
    assert code == 0 and all("STALE: older than 0.5 days" in line for line in out.splitlines())
    monkeypatch.setattr(inventory, "installed_dspy_version", lambda: "3.9.0")
    code, out, _ = run(capsys, "list", str(tree / "qa" / QA_BRIDGE), str(tree / "qa" / QA_HTTP), "--stale-days", "1e6")
    bridge_line, http_line = out.splitlines()
    assert "STALE: recorded with DSPy 3.4.1, 3.9.0 installed" in bridge_line
    assert "STALE" not in http_line  # an HTTP cassette records no DSPy version
    monkeypatch.setattr(inventory, "installed_dspy_version", lambda: None)  # DSPy not installed: age only
    code, out, _ = run(capsys, "list", str(tree / "qa" / QA_BRIDGE), "--stale-days", "1e6", "--json")
    assert json.loads(out)[0]["stale"] == []


def test_list_defaults_to_the_current_directory(
    tree: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tree / "qa")
    code, out, _ = run(capsys, "list")
    assert code == 0 and len(out.splitlines()) == 9


def test_a_corrupt_file_is_named_the_others_still_listed_and_the_exit_code_is_1(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tree / "qa" / "test_broken.bridge.yaml").write_text("version: 1\ninteractions: [\n")
    (tree / "qa" / "test_broken.http.yaml").write_text("interactions: {oops: 1}\n")
    code, out, err = run(capsys, "list", str(tree / "qa"))
    assert code == 1
    assert len(out.splitlines()) == 11 and out.count("CORRUPT") == 2
    assert "could not read" in err and "test_broken.bridge.yaml" in err and "test_broken.http.yaml" in err
    assert "record again" in err and "Traceback" not in err
    code, out, err = run(capsys, "list", str(tree / "qa"), "--json")
    broken = [entry for entry in json.loads(out) if entry["error"]]
    assert code == 1 and sorted(Path(entry["path"]).name for entry in broken) == [
        "test_broken.bridge.yaml",
        "test_broken.http.yaml",
    ]
    code, out, err = run(capsys, "stats", str(tree / "qa"), "--json")
    assert code == 1 and len(json.loads(out)["corrupt"]) == 2
    code, out, err = run(capsys, "show", str(tree / "qa" / "test_broken.bridge.yaml"))
    assert code == 1 and out == "" and "could not read" in err and "test_broken.bridge.yaml" in err


@pytest.mark.parametrize("action", ["list", "stats"])
def test_usage_errors_exit_2_with_advice(action: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, action, str(tmp_path / "missing"))
    assert (code, out) == (2, "") and "does not exist" in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    code, out, err = run(capsys, action, str(tmp_path / "empty"))
    assert (code, out) == (2, "") and "no cassettes" in err and "--bridge-record=once" in err


def test_show_a_bridge_cassette(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "show", str(tree / "qa" / QA_BRIDGE))
    assert (code, err) == (0, "")
    assert "bridge cassette, 3 interaction(s)" in out and "recorded_against: fake-gemini" in out
    assert "[0]\n  configure_lm" in out and "[2]\n  execute_program  (session s1)" in out
    assert "    question: What does DSPy optimise?" in out
    assert "  → outputs:" in out and "    answer: amber river maple amber" in out
    code, out, _ = run(capsys, "show", str(tree / "qa" / QA_BRIDGE), "--index", "2")
    assert code == 0 and "[2]" in out and "[0]" not in out


def test_show_a_bridge_error_response(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (QA / QA_BRIDGE).read_text()
    head, _, _ = text.partition("  response:\n    ok: true\n    result:\n      outputs:")
    failed = head + "  response:\n    ok: false\n    error:\n      type: lm_rate_limited\n"
    failed += "      message: slow down\n      retryable: true\n      details: {}\n"
    (tmp_path / "failed.bridge.yaml").write_text(failed)
    code, out, err = run(capsys, "show", str(tmp_path / "failed.bridge.yaml"), "--index", "2")
    assert (code, err) == (0, "") and "→ error lm_rate_limited: slow down" in out


def test_show_an_http_cassette(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "show", str(tree / "app" / AGENT_HTTP), "--index", "3")
    assert (code, err) == (0, "")
    assert "POST /v1beta/models/gemini-2.5-flash:generateContent  (host 127.0.0.1)" in out
    assert "prompt: [[ ## question ## ]]" in out and "How long is a marathon in kilometres?" in out
    assert "Your input fields are" not in out  # the system instruction is left out of the prompt excerpt
    assert "→ status 200 OK" in out and "About 42.2 km" in out
    assert "[0]" not in out


def test_show_json_parses(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "show", str(tree / "qa" / QA_BRIDGE), "--json")
    shown = json.loads(out)
    assert code == 0 and shown["level"] == "bridge" and shown["meta"]["dspy_version"] == "3.4.1"
    assert [item["index"] for item in shown["interactions"]] == [0, 1, 2]
    assert shown["interactions"][2]["response"]["result"]["outputs"]["answer"] == "amber river maple amber"
    code, out, _ = run(capsys, "show", str(tree / "app" / AGENT_HTTP), "--index", "1", "--json")
    shown = json.loads(out)
    assert code == 0 and shown["level"] == "http" and shown["meta"] == {}
    assert [item["index"] for item in shown["interactions"]] == [1]
    assert shown["interactions"][0]["response"]["status"]["code"] == 200


def test_show_usage_errors_exit_2(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "show", str(tree / "qa" / QA_BRIDGE), "--index", "3")
    assert (code, out) == (2, "") and "--index 3 is out of range" in err and "3 interaction(s)" in err
    code, out, err = run(capsys, "show", str(tree / "nope.yaml"))
    assert (code, out) == (2, "") and "is not a file" in err
    code, out, err = run(capsys, "show", str(tree))
    assert code == 2 and "is not a file" in err


def test_stats_sums_over_a_directory(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "stats", str(tree), "--json")
    assert (code, err) == (0, "")
    summary = json.loads(out)
    assert summary["files"] == 25 and summary["files_by_level"] == {"bridge": 13, "http": 12}
    assert summary["corrupt"] == []
    expected_bytes = sum(
        p.stat().st_size
        for p in tree.rglob("*.yaml")
        if p.name != "settings.yaml" and not p.name.startswith(".") and not p.name.endswith(".prompts.yaml")
    )  # prompt locks are no cassettes
    assert summary["bytes"] == expected_bytes
    assert summary["interactions"] == sum(summary["interactions_by_level"].values())
    assert summary["interactions_by_level"]["http"] == 4 * 1 + 2 * 4 + 6 * 1
    assert summary["oldest"]["recorded"] == "2026-11-27T22:31:57Z"
    assert summary["newest"]["recorded"] >= summary["oldest"]["recorded"]
    assert summary["recorded_against"]["fake-gemini"] == 13
    assert summary["dspy_versions"] == {"3.4.1": 13}
    code, out, _ = run(capsys, "stats", str(tree))
    assert code == 0 and "files:            25 (13 bridge, 12 http; 0 corrupt)" in out
    assert "oldest:" in out and "newest:" in out and "fake-gemini × 13" in out and "DSPy versions:    3.4.1 × 13" in out


def test_subcommand_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["cassettes"])
    assert exited.value.code == 2
    capsys.readouterr()


def test_a_plain_yaml_in_vcrpy_shape_counts_as_http(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(QA / QA_HTTP, tmp_path / "test_from_pytest_recording.yaml")
    code, out, err = run(capsys, "list", str(tmp_path), "--json")
    (entry,) = json.loads(out)
    assert (code, err) == (0, "") and entry["level"] == "http" and entry["interactions"] == 1


def test_show_json_handles_a_binary_http_body(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (QA / QA_HTTP).read_text().replace("    body: '{", "    body: !!binary aGVsbG8=\n    old_body: '{", 1)
    (tmp_path / "binary.http.yaml").write_text(text)
    code, out, err = run(capsys, "show", str(tmp_path / "binary.http.yaml"), "--json")
    assert (code, err) == (0, "") and json.loads(out)["interactions"][0]["request"]["body"] == "hello"
    code, out, err = run(capsys, "show", str(tmp_path / "binary.http.yaml"))
    assert code == 0 and "prompt: hello" in out
