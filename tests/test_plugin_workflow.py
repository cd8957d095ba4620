"""The loop a team lives in, walked with real pytest runs: record, change a test, follow the printed hint.

Every command a miss suggests is run here as printed (the only addition: ``DSPY_BRIDGE_UPSTREAM=fake`` in the
environment, the bundled fake standing in for real Gemini), and the next plain run must pass.
"""

from __future__ import annotations

import json
import re
import shlex

import pytest

from dspy_bridge.cli import main

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.slow  # real DSPy workers record

TEST_TEMPLATE = """
import pytest

@pytest.mark.{mark}
def test_capital(bridge):
    bridge.configure_lm("gemini/gemini-2.5-flash")
    assert bridge.run("question -> answer", question="{question}")["answer"]
"""


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--bridge-workers=1", *args)


def _hint(result: pytest.RunResult) -> list[str]:
    """The pytest arguments of the one command the failure report suggests."""
    found = re.findall(r"(pytest \S+ --bridge-record=\w+)", result.stdout.str())
    assert found, result.stdout.str()
    assert len(set(found)) == 1, found  # one suggestion, not two competing ones
    return shlex.split(found[0])[1:]


@pytest.mark.parametrize("mark", ["mock", "integration"])
def test_the_printed_hint_records_what_is_missing_and_the_next_run_passes(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, mark: str
) -> None:
    monkeypatch.setenv("DSPY_BRIDGE_UPSTREAM", "fake")
    pytester.makepyfile(test_qa=TEST_TEMPLATE.format(mark=mark, question="Capital of France?"))

    first = _run(pytester)  # nothing recorded yet
    first.assert_outcomes(**({"failed": 1} if mark == "mock" else {"errors": 1}))
    args = _hint(first)
    assert args[-1] == "--bridge-record=once"  # the file is missing: once creates it
    _run(pytester, *args).assert_outcomes(passed=1)
    _run(pytester).assert_outcomes(passed=1)

    # The test changes: its cassette exists now, so `once` would change nothing (it never touches an existing file).
    pytester.makepyfile(test_qa=TEST_TEMPLATE.format(mark=mark, question="Capital of Italy?"))
    changed = _run(pytester)
    changed.assert_outcomes(failed=1)  # one report: the failure, with the diagnosis (no second teardown error)
    args = _hint(changed)
    assert args[-1] == "--bridge-record=new_episodes"
    _run(pytester, *args).assert_outcomes(passed=1)
    _run(pytester).assert_outcomes(passed=1)


def test_a_changed_program_suggests_rewrite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSPY_BRIDGE_UPSTREAM", "fake")
    pytester.makepyfile(test_qa=TEST_TEMPLATE.format(mark="mock", question="Capital of France?"))
    _run(pytester, "--bridge-record=once").assert_outcomes(passed=1)
    pytester.makepyfile(
        test_qa=TEST_TEMPLATE.format(mark="mock", question="Capital of France?").replace(
            '"question -> answer"', '"question -> answer, confidence: float"'
        )
    )
    changed = _run(pytester)
    changed.assert_outcomes(failed=1)
    args = _hint(changed)
    assert args[-1] == "--bridge-record=rewrite"  # the program itself changed: its old recordings are dead weight
    _run(pytester, *args).assert_outcomes(passed=1)
    _run(pytester).assert_outcomes(passed=1)

    # docs/recording.md, "Is a cassette still what a fresh recording gives?": record into a scratch folder, diff.
    fresh = pytester.path / "fresh"
    _run(pytester, "test_qa.py::test_capital", "--bridge-record=all", f"--bridge-cassette-dir={fresh}").assert_outcomes(
        passed=1
    )
    for suffix in (".bridge.yaml", ".http.yaml"):
        kept, new = f"cassettes/test_qa/test_capital{suffix}", str(fresh / f"test_qa/test_capital{suffix}")
        assert main(["cassettes", "diff", kept, new]) == 0  # the fake answers alike: the same, but for ids and times


XDIST_TESTS = """
import pytest

@pytest.mark.mock
@pytest.mark.parametrize("n", range(4))
def test_stubbed(bridge, n):
    bridge.configure_lm("gemini/gemini-2.5-flash")
    pid = bridge.create_program("question -> answer")
    bridge.stub(pid, {"answer": str(n)})
    assert bridge.execute(pid, question="q") == {"answer": str(n)}
"""


def test_xdist_prints_one_merged_summary(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(XDIST_TESTS)
    result = _run(pytester, "-n", "2", "-p", "xdist")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        [
            "*dspy-bridge summary (main, merged from gw0, gw1)*",
            "pool mock*gw?? 1 workers, ready in *",
            "mock * tests 4, requests 16, *stubs 4*",
        ]
    )
    assert result.stdout.str().count("dspy-bridge summary") == 1
    # One run record, merged from both workers (each ran some tests; both collected all four).
    result.stdout.fnmatch_lines(["run record: .dspy-bridge/last-run.json (4 bridge test(s) ran, 0 cassette(s) used)*"])
    record = json.loads((pytester.path / ".dspy-bridge" / "last-run.json").read_text())
    assert (record["ran"], record["collected"], record["selected"]) == (4, 4, 4)
    assert len(record["claimed"]) == 4 and set(record["claimed"].values()) == {"ran"}
