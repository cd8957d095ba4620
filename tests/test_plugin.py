"""The pytest plugin, exercised through real pytest runs (pytester, in subprocesses)."""

from __future__ import annotations

import os
import re

import pytest

pytest_plugins = ["pytester"]

MOCK_STUB_TEST = """
import pytest

@pytest.mark.mock
def test_stubbed(bridge):
    bridge.configure_lm("gemini/gemini-2.5-flash")
    pid = bridge.create_program("question -> answer")
    bridge.stub(pid, {"answer": "Paris"})
    assert bridge.execute(pid, question="Capital of France?") == {"answer": "Paris"}
"""


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)


def test_marks_are_registered_for_strict_markers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        @pytest.mark.mock
        def test_a(): pass
        @pytest.mark.integration
        def test_b(): pass
        """
    )
    result = _run(pytester, "--strict-markers", "-m", "not integration")
    result.assert_outcomes(passed=1, deselected=1)


def test_a_mock_test_runs_on_the_shared_mock_pool_and_the_summary_tells_the_truth(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(MOCK_STUB_TEST)
    result = _run(pytester, "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*dspy-bridge summary*",
            "pool mock * 2 workers, ready in *",
            "mock * tests 1, requests 4, LM answers 0, cassette hits 0, stubs 1*",
            "wall time * s: waiting for workers to start * s (*%)*",
        ]
    )


def test_a_missing_cassette_fails_with_the_command_to_record(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.mock
        def test_unrecorded(bridge):
            bridge.configure_lm("gemini/gemini-2.5-flash")
            bridge.run("question -> answer", question="never recorded")
        """
    )
    result = _run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*CassetteMiss: cassette * does not exist*", "*--bridge-record=once*"])
    report = result.stdout.str()
    assert "_pool.py" not in report and "concurrent/futures" not in report  # the test's line, then the diagnosis


def test_on_missing_skip_turns_a_miss_into_a_visible_skip(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.mock
        def test_unrecorded(bridge):
            bridge.configure_lm("gemini/gemini-2.5-flash")
            bridge.run("question -> answer", question="never recorded")
        """
    )
    result = _run(pytester, "--bridge-on-missing=skip", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*SKIPPED*dspy-bridge:*"])


PLAN_PROBE = """
import pytest

@pytest.mark.mock(record="once")
def test_probe(bridge_cassette):
    print("PLAN", bridge_cassette.kind, bridge_cassette.record, bridge_cassette.bridge_cassette.name)
"""


@pytest.mark.parametrize(
    ("ini", "env", "cli", "expected"),
    [
        (None, None, None, "once"),  # the mark beats the built-in default
        ("all", None, None, "all"),  # ini beats the mark
        ("all", "new_episodes", None, "new_episodes"),  # env beats ini
        ("all", "new_episodes", "none", "none"),  # the command line beats everything
    ],
)
def test_record_mode_precedence(
    pytester: pytest.Pytester, ini: str | None, env: str | None, cli: str | None, expected: str
) -> None:
    pytester.makepyfile(PLAN_PROBE)
    if ini:
        pytester.makeini(f"[pytest]\nbridge_record = {ini}\n")
    args = ["-s"] + ([f"--bridge-record={cli}"] if cli else [])
    old = os.environ.pop("DSPY_BRIDGE_RECORD", None)
    try:
        if env:
            os.environ["DSPY_BRIDGE_RECORD"] = env
        result = _run(pytester, *args)
    finally:
        os.environ.pop("DSPY_BRIDGE_RECORD", None)
        if old is not None:
            os.environ["DSPY_BRIDGE_RECORD"] = old
    result.assert_outcomes(passed=1)
    assert re.search(rf"PLAN mock {expected} test_probe\.bridge\.yaml", result.stdout.str())


def test_forced_integration_mode_moves_mock_tests_onto_real_workers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(PLAN_PROBE)
    result = _run(pytester, "-s", "--bridge-mode=integration", "--bridge-record=none")
    result.assert_outcomes(passed=1)
    assert "PLAN integration none" in result.stdout.str()


def test_bad_option_values_are_usage_errors(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    # A file with no bridge test at all: the typo is still caught, before collection.
    pytester.makepyfile("def test_plain(): pass")
    result = _run(pytester, "--bridge-record=sometimes")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--bridge-record: invalid choice: 'sometimes' (choose from 'none', 'once'*"])
    for args, words in (
        (["--bridge-workers=0"], "*workers must be at least 1, got 0*"),
        (
            ["--bridge-upstream=ftp://example"],
            "*upstream='ftp://example' is neither gemini nor fake nor an http(s) URL*",
        ),
    ):
        result = _run(pytester, *args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR, args
        result.stderr.fnmatch_lines([words])
    monkeypatch.setenv("DSPY_BRIDGE_RECORD", "sometimes")  # env and ini are checked at configure time too
    result = _run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*DSPY_BRIDGE_RECORD: record='sometimes' is not one of none, once*"])


def test_help_lists_the_choices(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "--help")
    result.stdout.fnmatch_lines(["*--bridge-record={none,once,new_episodes,all,rewrite}*"])


def test_collect_only_starts_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        @pytest.mark.mock
        def test_a(bridge): pass
        @pytest.mark.integration
        def test_b(bridge): pass
        """
    )
    result = _run(pytester, "--collect-only", "-q")
    assert result.ret == 0
    output = result.stdout.str()
    assert "dspy-bridge" not in output and "warming" not in output  # no pool, no summary


def test_a_misspelled_mark_warns(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        @pytest.mark.integraton
        def test_x(): pass
        """
    )
    result = _run(pytester, "-W", "error::dspy_bridge.pytest_plugin.BridgeMarkWarning")
    assert result.ret != 0
    assert "looks like dspy-bridge's @pytest.mark.integration" in result.stdout.str() + result.stderr.str()
    result = _run(pytester)  # by default: a warning in the summary, the run goes on
    result.assert_outcomes(passed=1, warnings=2)  # pytest's unknown mark, and ours naming the right one
    result.stdout.fnmatch_lines(["*looks like dspy-bridge's @pytest.mark.integration*"])


def test_bad_mark_keywords_are_usage_errors(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        @pytest.mark.mock(casette="typo")
        def test_x(bridge_cassette): pass
        """
    )
    result = _run(pytester)
    assert result.ret != 0
    assert "unknown keywords ['casette']" in result.stdout.str() + result.stderr.str()


def test_cassette_names_follow_module_class_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_names="""
        import pytest
        class TestGroup:
            @pytest.mark.mock
            @pytest.mark.parametrize("q", ["a/b c"])
            def test_param(self, bridge_cassette, q):
                print("PATH", bridge_cassette.bridge_cassette.relative_to(bridge_cassette.bridge_cassette.parents[2]))
        """
    )
    result = _run(pytester, "-s")
    result.assert_outcomes(passed=1)
    assert "PATH cassettes/test_names/TestGroup.test_param-a-b-c.bridge.yaml" in result.stdout.str()


def test_a_failing_test_leaves_no_worker_behind(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import os, pytest

        @pytest.mark.mock
        def test_fails(bridge_pool):
            with open(os.environ["PIDS_FILE"], "w") as f:
                f.write(" ".join(str(p) for p in bridge_pool.worker_pids()))
            assert False, "on purpose"
        """
    )
    pids_file = pytester.path / "pids.txt"
    os.environ["PIDS_FILE"] = str(pids_file)
    try:
        result = _run(pytester)
    finally:
        del os.environ["PIDS_FILE"]
    result.assert_outcomes(failed=1)
    pids = [int(p) for p in pids_file.read_text().split()]
    assert len(pids) == 2
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}"), f"worker {pid} outlived the pytest run"


def test_the_configure_hook_gets_a_typed_setup_and_its_changes_reach_the_pool(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        from dspy_bridge.pytest_plugin import BridgeSetup

        def pytest_dspy_bridge_configure(config, state):
            assert isinstance(state, BridgeSetup) and state.worker_label == "main"
            assert not hasattr(state, "plans")  # the plugin's internals stay internal
            state.workers = 3
            state.pool_env["PROBE_FLAG"] = "on"
        """
    )
    pytester.makepyfile(MOCK_STUB_TEST)
    result = _run(pytester)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["pool mock * 3 workers, ready in *"])


SCRIPTED = """
import pytest

@pytest.mark.scripted
def test_scripted(bridge):
    pass

@pytest.mark.scripted(auto=True)
def test_bad(bridge):
    pass
"""


def test_a_scripted_test_runs_on_real_workers_with_no_cassette_whatever_the_mode(pytester: pytest.Pytester) -> None:
    from dspy_bridge._pytest._plan import plan_for

    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(SCRIPTED.split("@pytest.mark.scripted(auto=True)")[0])
    for mode in ("auto", "mock", "integration"):
        items, _ = pytester.inline_genitems(f"--bridge-mode={mode}", "--bridge-record=all")
        plan = plan_for(items[0])
        assert (plan.kind, plan.pool_kind, plan.real, plan.records) == ("scripted", "integration", True, False)


def test_scripted_marks_take_no_arguments(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(SCRIPTED)
    result = pytester.runpytest_inprocess("--collect-only", "-p", "no:cacheprovider")
    assert result.ret != 0
    assert "@pytest.mark.scripted takes no arguments; give the answers in the test with bridge.script(" in (
        result.stdout.str() + result.stderr.str()
    )


def test_the_summary_names_answers_dspys_cache_gave_instead_of_the_cassette() -> None:
    from collections import Counter

    from dspy_bridge._pytest._summary import describe_counts

    clean = describe_counts("integration", Counter(tests=1, lm=1))
    assert "DSPy cache" not in clean  # the line stays as it was when nothing came from DSPy's cache
    cached = describe_counts("integration", Counter(tests=2, lm=1, dspy_cache=1))
    assert cached.endswith("; DSPy cache hits 1 (answered by DSPy's cache, not the cassette)")
    assert describe_counts("scripted", Counter(tests=2, requests=9, script=3)) == (
        "scripted    tests 2, requests 9, runs answered by scripts 3"
    )
