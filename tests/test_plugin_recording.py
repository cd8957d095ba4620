"""The recording workflow with real pytest runs (pytester subprocesses, real DSPy workers, the fake Gemini):
integration tests without LM calls, what is never recorded, cassette names, HTTP cassette config, near
matches, and pytest-recording next to us."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from dspy_bridge.testing import Fail, FakeGemini

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.slow  # real DSPy workers record

ANSWER = """
import pytest

@pytest.mark.{mark}
def test_{name}(bridge):
    bridge.configure_lm("gemini/gemini-2.5-flash", num_retries=0)
    assert bridge.run("question -> answer", question="{question}")["answer"]
"""


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--bridge-workers=1", *args, timeout=600)


def _files(pytester: pytest.Pytester) -> list[str]:
    root = pytester.path / "cassettes"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_an_integration_test_without_lm_calls_records_an_empty_http_cassette_and_a_failed_tests_is_discarded(
    pytester: pytest.Pytester,
) -> None:
    """Failed and interrupted (Ctrl-C) tests write nothing new unless --bridge-record-failed=keep."""
    pytester.makepyfile(
        test_quiet="""
import pytest

@pytest.mark.integration
def test_stubbed(bridge):
    bridge.configure_lm("gemini/gemini-2.5-flash")
    pid = bridge.create_program("question -> answer")
    bridge.stub(pid, {"answer": "x"})
    assert bridge.execute(pid, question="q") == {"answer": "x"}

@pytest.mark.integration
def test_broken(bridge):
    bridge.configure_lm("gemini/gemini-2.5-flash", num_retries=0)
    assert bridge.run("question -> answer", question="Capital of Italy?")["answer"] == "not what the LM says"

@pytest.mark.integration
def test_interrupted(bridge):
    bridge.configure_lm("gemini/gemini-2.5-flash", num_retries=0)
    bridge.run("question -> answer", question="Capital of Peru?")
    raise KeyboardInterrupt  # as Ctrl-C does: the run stops here
"""
    )
    result = _run(pytester, "--bridge-record=once", "--bridge-upstream=fake")
    result.assert_outcomes(passed=1, failed=1)
    assert _files(pytester) == ["test_quiet/test_stubbed.bridge.yaml", "test_quiet/test_stubbed.http.yaml"]
    assert (
        yaml.safe_load((pytester.path / "cassettes/test_quiet/test_stubbed.http.yaml").read_text())["interactions"]
        == []
    )
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [
            "not recorded: 2",
            "*test_broken: the test failed, so its new recordings (1 LM call(s) for test_broken.http.yaml, * "
            "answer(s) for test_broken.bridge.yaml) were discarded; cassettes saved before are untouched. To keep "
            "a failed test's recordings: pytest test_quiet.py::test_broken --bridge-record=once "
            "--bridge-record-failed=keep",
            "*test_interrupted: the test did not finish, so its new recordings (1 LM call(s) for "
            "test_interrupted.http.yaml, * answer(s) for test_interrupted.bridge.yaml) were discarded*",
        ]
    )
    # What the summary says to run (against the fake): the failed test's recordings are kept; test_stubbed, run
    # too, replays its empty HTTP cassette (once: the files exist, nothing is recorded).
    result = _run(pytester, "--bridge-record=once", "--bridge-record-failed=keep", "--bridge-upstream=fake")
    result.assert_outcomes(passed=1, failed=1)
    assert "not recorded" not in result.stdout.str()
    assert _files(pytester) == [
        "test_quiet/test_broken.bridge.yaml",
        "test_quiet/test_broken.http.yaml",
        "test_quiet/test_interrupted.bridge.yaml",
        "test_quiet/test_interrupted.http.yaml",
        "test_quiet/test_stubbed.bridge.yaml",
        "test_quiet/test_stubbed.http.yaml",
    ]


def test_an_unreachable_upstream_fails_the_test_clearly_and_writes_nothing(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "not-a-real-key-but-long-enough")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    pytester.makepyfile(test_down=ANSWER.format(mark="integration", name="down", question="Capital of France?"))
    result = _run(pytester, "--bridge-record=once", f"--bridge-upstream=http://127.0.0.1:{port}", "-rA")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*upstream unreachable: ConnectionRefusedError*", "*Nothing was recorded*"])
    result.stdout.fnmatch_lines(["*not recorded: 1*", "*test_down*Nothing was recorded*"])
    assert _files(pytester) == []


def test_an_upstream_error_is_recorded_only_when_the_mark_asks_and_a_spent_quota_stops_recording(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "not-a-real-key-but-long-enough")  # any URL upstream needs a key
    pytester.makepyfile(
        test_flaky=ANSWER.format(mark="integration", name="default", question="Capital of France?")
        + ANSWER.format(mark="integration(record_errors=True)", name="asked", question="Capital of Spain?").replace(
            "import pytest", ""
        )
        + ANSWER.format(mark="integration", name="quota", question="Capital of Peru?").replace("import pytest", "")
    )
    daily = "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
    with FakeGemini() as fake:
        spent = Fail(429, retry_after=0.2, quota_id=daily)
        fake.script(Fail(503), {"answer": "Paris"}, Fail(503), {"answer": "Madrid"}, spent)
        result = _run(pytester, "--bridge-record=once", f"--bridge-upstream={fake.base_url}")
        assert fake.request_count == 5  # the spent quota's one 429; the pool's retry never reached the upstream
    result.assert_outcomes(passed=2, failed=1)  # the pool retried the 503 both times; not the spent quota
    result.stdout.fnmatch_lines(
        ["not recorded: 3", "*test_default: POST *the upstream answered 503*record_errors=True*"]
    )  # and test_quota's 429 and its unwritten bridge cassette
    result.stdout.fnmatch_lines(
        [f"recording stopped: upstream quota {daily} (metric *) is spent (a per-day quota)*",
         "  1 test(s) got the proxy's 429 instead: test_flaky.py::test_quota"]
    )  # fmt: skip
    folder = pytester.path / "cassettes" / "test_flaky"
    codes = {
        name: [i["response"]["status"]["code"] for i in yaml.safe_load((folder / f"{name}.http.yaml").read_text())[
            "interactions"]]
        for name in ("test_default", "test_asked")
    }  # fmt: skip
    assert codes == {"test_default": [200], "test_asked": [503, 200]}
    assert not list(folder.glob("test_quota*"))
    _run(pytester, "-k", "not quota").assert_outcomes(passed=2)  # offline; the recorded 503 is replayed too


def test_bridge_cassettes_have_their_own_suffix_and_old_names_keep_working(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_names=ANSWER.format(mark="mock", name="capital", question="Capital of France?"))
    _run(pytester, "--bridge-record=once", "--bridge-upstream=fake").assert_outcomes(passed=1)
    assert _files(pytester) == ["test_names/test_capital.bridge.yaml", "test_names/test_capital.http.yaml"]
    folder = pytester.path / "cassettes" / "test_names"
    (folder / "test_capital.bridge.yaml").rename(folder / "test_capital.yaml")  # as recorded before the suffix
    _run(pytester).assert_outcomes(passed=1)
    _run(pytester, "--bridge-record=rewrite", "--bridge-upstream=fake").assert_outcomes(passed=1)
    # read and written under the old name: no churn
    assert _files(pytester) == ["test_names/test_capital.http.yaml", "test_names/test_capital.yaml"]


def test_http_cassette_config_and_mark_keywords_merge_and_near_matches_are_reported(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_drift=ANSWER.format(mark="integration", name="q", question="What is the capital of France?")
    )
    _run(pytester, "--bridge-record=once", "--bridge-upstream=fake").assert_outcomes(passed=1)
    drifted = ANSWER.format(mark="{mark}", name="q", question="What is  the capital of France ?")
    pytester.makepyfile(test_drift=drifted.format(mark="integration"))
    _run(pytester).assert_outcomes(failed=1)  # exact by default
    pytester.makeconftest(
        "import pytest\n\n@pytest.fixture\ndef http_cassette_config():\n    return {'near_match': 1.0}\n"
    )
    _run(pytester).assert_outcomes(failed=1)  # the conftest's threshold is too strict for this drift
    pytester.makepyfile(test_drift=drifted.format(mark="integration(http_near_match=0.9)"))  # the mark wins
    result = _run(pytester)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "HTTP near matches (a drifted prompt answered by a similar recording, not an exact one): 1",
            "*test_drift.py::test_q: POST /v1beta/models/gemini-2.5-flash:generateContent*prompt similarity 0.9*",
        ]
    )
    pytester.makeconftest(
        "import pytest\n\n@pytest.fixture\ndef http_cassette_config():\n    return {'near_mach': 0.9}\n"
    )
    _run(pytester).stdout.fnmatch_lines(["*http_cassette_config has unknown keys*near_mach*"])


BOTH_PLUGINS = """
import pytest

@pytest.mark.vcr
@pytest.mark.mock
def test_both(bridge):
    bridge.configure_lm("gemini/gemini-2.5-flash", num_retries=0)
    assert bridge.run("question -> answer", question="Capital of France?")["answer"]


@pytest.mark.integration
def test_real(bridge):
    bridge.configure_lm("gemini/gemini-2.5-flash", num_retries=0)
    assert bridge.run("question -> answer", question="Capital of Italy?")["answer"]
"""


def test_next_to_pytest_recording_and_its_block_network(pytester: pytest.Pytester) -> None:
    pytest.importorskip("pytest_recording")
    pytester.makepyfile(test_both=BOTH_PLUGINS)
    _run(pytester, "--bridge-record=once", "--bridge-upstream=fake").assert_outcomes(passed=2)
    result = _run(pytester, "--block-network", "-p", "recording")
    result.assert_outcomes(passed=2)
    assert Path(pytester.path / "cassettes/test_both/test_both.bridge.yaml").exists()
    assert not Path(pytester.path / "cassettes/test_both/test_both.yaml").exists()  # pytest-recording's name is free
