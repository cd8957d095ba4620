"""The sample project in examples/qa_app, run with real pytest sessions (pytester subprocesses)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from dspy_bridge.cassettes import verify
from dspy_bridge.proxy import verify_http_cassette

pytest_plugins = ["pytester"]

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "qa_app"
CASSETTES = Path("tests") / "cassettes" / "test_qa"


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "DSPY_BRIDGE_RECORD", "DSPY_BRIDGE_MODE"):
        monkeypatch.delenv(name, raising=False)
    shutil.copytree(SAMPLE, pytester.path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.lock", "__pycache__"))
    return pytester.path


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*args, timeout=600)


def test_the_fast_suite_runs_offline_from_the_shipped_cassettes(pytester: pytest.Pytester, project: Path) -> None:
    result = _run(pytester, "-m", "not integration")
    result.assert_outcomes(passed=3, deselected=2)
    output = result.stdout.str()
    assert "cassette hits 2, stubs 1" in output
    assert "pool integration" not in output  # nothing started a real worker


def test_a_newcomer_adds_a_mock_test_and_gets_a_green_run(pytester: pytest.Pytester, project: Path) -> None:
    (project / "tests" / "test_new.py").write_text(
        "import pytest\n"
        "from qa_app import answer\n\n"
        "@pytest.mark.mock\n"
        "def test_new(bridge):\n"
        "    bridge.configure_lm('gemini/gemini-2.5-flash')\n"
        "    pid = bridge.create_program('question -> answer', 'chain_of_thought')\n"
        "    bridge.stub(pid, {'reasoning': 'r', 'answer': 'forty-two'})\n"
        "    assert answer(bridge, 'meaning of life?') == 'forty-two'\n"
    )
    result = _run(pytester, "-m", "not integration", "tests/test_new.py")
    result.assert_outcomes(passed=1)


@pytest.mark.slow
def test_integration_tests_run_real_workers_offline_from_http_cassettes(
    pytester: pytest.Pytester, project: Path
) -> None:
    result = _run(pytester, "-m", "integration")
    result.assert_outcomes(passed=2, deselected=3)
    result.stdout.fnmatch_lines(
        ["pool integration*2 workers, ready in * s*", "integration tests 2, requests 6, LM answers 2*"]
    )
    # The run record knows which HTTP interactions the proxy replayed: each test played its one recording.
    record = json.loads((project / ".dspy-bridge" / "last-run.json").read_text())
    used = {Path(path).name: entry for path, entry in record["cassettes"].items()}
    assert {name: entry["played"] for name, entry in used.items()} == {
        "test_answer_on_real_workers.http.yaml": [0],
        "test_sentiment_on_real_workers.http.yaml": [0],
    }


@pytest.mark.slow
def test_recording_against_the_fake_rewrites_both_cassette_levels(pytester: pytest.Pytester, project: Path) -> None:
    cassettes = project / CASSETTES
    shutil.rmtree(cassettes)
    result = _run(pytester, "--bridge-record=all", "--bridge-upstream=fake")
    result.assert_outcomes(passed=5)
    bridge_files = sorted(p.name for p in cassettes.glob("*.yaml") if not p.name.endswith(".http.yaml"))
    http_files = sorted(p.name for p in cassettes.glob("*.http.yaml"))
    assert len(bridge_files) == 5 and len(http_files) == 4  # the stub test makes no LM call
    verify(sorted(cassettes.glob("*.yaml")))
    for path in cassettes.glob("*.http.yaml"):
        verify_http_cassette(path)
    assert all(name.endswith(".bridge.yaml") for name in bridge_files)  # a fresh recording: the new names
    meta = yaml.safe_load((cassettes / "test_answer_is_some_text.bridge.yaml").read_text())["meta"]
    assert meta["recorded_against"] == "fake-gemini"
    replay = _run(pytester)
    replay.assert_outcomes(passed=5)


def test_recording_against_gemini_without_a_key_says_what_to_do(pytester: pytest.Pytester, project: Path) -> None:
    result = _run(pytester, "-m", "integration", "--bridge-record=all", "-x")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*no key is set. Export GEMINI_API_KEY*--bridge-upstream=fake*"])


def test_an_integration_test_without_its_http_cassette_fails_with_the_command(
    pytester: pytest.Pytester, project: Path
) -> None:
    (project / CASSETTES / "test_answer_on_real_workers.http.yaml").unlink()
    result = _run(pytester, "-k", "test_answer_on_real_workers")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*would need the network*--bridge-record=once*"])


@pytest.mark.slow
def test_two_xdist_processes_record_into_one_directory_without_loss(pytester: pytest.Pytester, project: Path) -> None:
    cassettes = project / CASSETTES
    shutil.rmtree(cassettes)
    started = time.time() - 1
    result = _run(pytester, "-n", "2", "--bridge-record=all", "--bridge-upstream=fake", "-p", "xdist")
    result.assert_outcomes(passed=5)
    assert len(list(cassettes.glob("*.http.yaml"))) == 4
    assert len([p for p in cassettes.glob("*.yaml") if not p.name.endswith(".http.yaml")]) == 5
    for path in cassettes.glob("*.yaml"):
        assert yaml.safe_load(path.read_text())["interactions"], f"{path.name} is empty"
    assert os.environ.get("GEMINI_API_KEY") is None
    # Every process that started real workers forked them from the run's one zygote, and it is gone now.
    real_pools = [line for line in result.outlines if line.startswith("pool integration")]
    assert real_pools and all("strategy zygote:daemon" in line for line in real_pools), real_pools
    assert "merged from gw0, gw1" in result.stdout.str()
    leftovers = [p for p in Path(tempfile.gettempdir()).glob("dspy-bridge-run-*") if p.stat().st_mtime >= started]
    assert not leftovers


@pytest.mark.slow
def test_the_drift_check_reports_a_planted_difference(pytester: pytest.Pytester, project: Path) -> None:
    path = project / CASSETTES / "test_sentiment_is_one_of_the_labels.yaml"
    data = yaml.safe_load(path.read_text())
    for interaction in data["interactions"]:
        if interaction["request"]["command"] == "execute_program":
            recorded = interaction["response"]["result"]["outputs"]["sentiment"]
            planted = next(label for label in ("positive", "negative", "neutral") if label != recorded)
            interaction["response"]["result"]["outputs"]["sentiment"] = planted
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = _run(pytester, "-m", "not integration", "--bridge-mode=integration")
    result.assert_outcomes(passed=3, deselected=2)
    assert result.ret == 0  # report (the default) only reports
    result.stdout.fnmatch_lines(
        [
            "drift check: 2 recorded answers compared with real DSPy, 1 field(s) differ (1 regression(s), 0 benign):",
            f"*test_sentiment_is_one_of_the_labels: prog_* field 'sentiment' [[]regression: Literal value '{planted}' → '{recorded}'[]]",
            f'*recorded: "{planted}"',
            f'*real now: "{recorded}"',
        ]
    )
    failing = _run(pytester, "-m", "not integration", "--bridge-mode=integration", "--bridge-drift=fail")
    failing.assert_outcomes(passed=3, deselected=2)
    assert failing.ret == pytest.ExitCode.TESTS_FAILED  # every test passed, but real DSPy no longer agrees


FAULT_TESTS = """
import pytest
from qa_app import answer
from dspy_bridge import HandlerError
from dspy_bridge.proxy import Fault

CASSETTE = "test_qa/test_answer_on_real_workers"


@pytest.mark.integration(cassette=CASSETTE)
def test_one_rate_limit_is_absorbed_by_the_pool_retry(bridge, bridge_proxy):
    bridge.configure_lm("gemini/gemini-2.5-flash", num_retries=0)
    bridge_proxy.inject_faults(Fault(status=429, times=1, retry_after=0))
    assert answer(bridge, "What does DSPy optimise?").strip()
    assert bridge_proxy.stats().faults == 1


@pytest.mark.integration(cassette=CASSETTE)
def test_an_outage_reaches_the_program_as_a_typed_error(bridge, bridge_proxy):
    bridge.configure_lm("gemini/gemini-2.5-flash", num_retries=0)
    bridge_proxy.inject_faults(Fault(status=503, times=10))
    with pytest.raises(HandlerError) as caught:
        answer(bridge, "What does DSPy optimise?")
    assert caught.value.type == "lm_error" and caught.value.retryable
"""


@pytest.mark.slow
def test_fault_injection_reaches_the_worker_as_the_right_error(pytester: pytest.Pytester, project: Path) -> None:
    (project / "tests" / "test_faults.py").write_text(FAULT_TESTS)
    result = _run(pytester, "tests/test_faults.py", "-v")
    result.assert_outcomes(passed=2)
