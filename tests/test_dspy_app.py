"""The plain-DSPy sample project in examples/dspy_app, run with real pytest sessions (pytester subprocesses).

Its app code is DSPy only (RAG over a local corpus, a pydantic extraction, a ReAct agent with two tools, a
BootstrapFewShot-optimized state, an optimizer run, a threaded evaluation, a stream consumer); only its tests use
the plugin — mock, integration and scripted — and every test has a committed prompt lock.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dspy_bridge._secrets import is_secret_env_name
from dspy_bridge.cassettes import verify
from dspy_bridge.cli import main
from dspy_bridge.proxy import verify_http_cassette

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "dspy_app"
SRC = ROOT / "src"
CASSETTES = Path("tests") / "cassettes"
AGENT = CASSETTES / "test_agent" / "test_the_agent_searches_then_converts-mock"
OPTIMIZED = "test_the_optimized_program_is_a_different_program_and_answers"


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "DSPY_BRIDGE_RECORD", "DSPY_BRIDGE_MODE", "DSPY_BRIDGE_UPSTREAM"):
        monkeypatch.delenv(name, raising=False)
    shutil.copytree(SAMPLE, pytester.path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.lock", "__pycache__"))
    return pytester.path


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*args, timeout=600)


def test_the_app_code_is_plain_dspy() -> None:
    for path in sorted((SAMPLE / "dspy_app").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top_level = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
        names = [alias.name for node in top_level if isinstance(node, ast.Import) for alias in node.names]
        names += [node.module or "" for node in top_level if isinstance(node, ast.ImportFrom)]
        assert not [name for name in names if name.startswith("dspy_bridge")], path.name
    # Only the optimizer's offline switch (--lm fake) reaches for the bundled fake, inside a function.
    assert "dspy_bridge" not in "".join(
        p.read_text(encoding="utf-8") for p in (SAMPLE / "dspy_app").glob("*.py") if p.name != "optimize.py"
    )


def test_the_mock_suite_runs_offline_from_the_shipped_cassettes(pytester: pytest.Pytester, project: Path) -> None:
    result = _run(pytester, "-m", "not integration and not scripted")
    result.assert_outcomes(passed=6, deselected=8)
    output = result.stdout.str()
    # cassette hits 7: the stream consumer's test streams once and executes once
    assert "mock        tests 6, requests 21, LM answers 0, cassette hits 7, stubs 0, synthetic 0, misses 0" in output
    assert "new recordings 0" in output
    assert "pool integration" not in output  # nothing started a real worker


@pytest.mark.slow
def test_the_whole_suite_on_real_dspy_offline_with_drift_verdicts_and_prompt_locks(
    pytester: pytest.Pytester, project: Path
) -> None:
    # The README's after-an-upgrade run, one real pool for all of it: integration tests replay their HTTP cassettes,
    # scripted tests their scripts, mock tests run on real DSPy as the drift check, and every prompt lock is checked.
    result = _run(pytester, "--bridge-mode=integration", "--bridge-drift=fail", "--bridge-prompts=check")
    result.assert_outcomes(passed=14)
    result.stdout.fnmatch_lines(
        [
            "pool integration*2 workers, ready in * s*",
            "integration tests 12, requests *, LM answers 13, cassette hits 0, * misses 0, new recordings 0; "
            "HTTP cassettes: hits 48, misses 0, new recordings 0",
            # HTTP hits 48 = integration 27 (rag 1, extraction 1, agent 4, optimized 1, the optimizer run 12 —
            # flash 11, pro 1 — and the threaded evaluation 8) + drift 21 (the same five, and the stream consumer 2)
            "scripted    tests 2, requests *, runs answered by scripts 2",  # no LM, no cassette: the tests' scripts
            "drift check: 7 recorded answers compared with real DSPy, 0 field(s) differ (0 regression(s), 0 benign)",
            "LM spend: 48 LM calls replayed, $* of recorded spend avoided*",
            "prompt locks: checked 14 (changed 0), written 0, unchanged 0",
        ]
    )


@pytest.mark.slow
def test_one_test_re_recorded_against_the_fake_then_replays(pytester: pytest.Pytester, project: Path) -> None:
    bridge_file = project / AGENT.with_name(AGENT.name + ".bridge.yaml")
    http_file = project / AGENT.with_name(AGENT.name + ".http.yaml")
    shipped = yaml.safe_load(bridge_file.read_text())["interactions"]
    bridge_file.unlink()
    http_file.unlink()

    recorded = _run(pytester, "-k", "agent and mock", "--bridge-record=once", "--bridge-upstream=fake")
    recorded.assert_outcomes(passed=1, deselected=13)
    recorded.stdout.fnmatch_lines(["mock        tests 1, requests 3, LM answers 1, * new recordings 3"])
    verify([bridge_file])
    verify_http_cassette(http_file)
    data = yaml.safe_load(bridge_file.read_text())
    assert data["meta"]["recorded_against"] == "fake-gemini"
    assert data["interactions"] == shipped  # the scripted fake gives the same trajectory the shipped file holds

    replay = _run(pytester, "-k", "agent")
    replay.assert_outcomes(passed=2, deselected=12)
    replay.stdout.fnmatch_lines(["mock        tests 1, requests 3, LM answers 0, cassette hits 1, *new recordings 0"])


def test_a_shipped_prompt_lock_shows_the_optimized_programs_demos(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(SAMPLE)  # the README's command, from the sample project
    assert main(["prompts", "show", f"tests/test_optimized.py::{OPTIMIZED}[mock]"]) == 0
    shown = capsys.readouterr().out
    header = "=== dspy_app.rag:RAG / generate_answer.predict (adapter chat, {} demos): "
    header += "context: list[str], question: str -> reasoning: str, answer: str"
    assert header.format(0) in shown and header.format(3) in shown  # the plain program, then the optimized one
    assert "--- [system]" in shown and "Answer the question from the context, in a few words." in shown


def test_the_shipped_state_is_what_the_optimizer_writes_against_the_fake(tmp_path: Path) -> None:
    output = tmp_path / "qa.json"
    without_keys = {name: value for name, value in os.environ.items() if not is_secret_env_name(name)}
    subprocess.run(
        [sys.executable, "-m", "dspy_app.optimize", "--lm", "fake", "--output", str(output)],
        cwd=SAMPLE,
        env={**without_keys, "PYTHONPATH": os.pathsep.join([str(SAMPLE), str(SRC)])},
        check=True,
        capture_output=True,
        timeout=300,
    )
    written, shipped = (json.loads(p.read_text()) for p in (output, SAMPLE / "dspy_app" / "optimized" / "qa.json"))
    written.pop("metadata"), shipped.pop("metadata")  # DSPy/Python versions of whoever ran it
    assert written == shipped
    assert [demo["answer"] for demo in shipped["generate_answer.predict"]["demos"]] == [
        "1889",
        "Leonardo da Vinci",
        "8,849 metres",
    ]
