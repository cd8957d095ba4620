"""The plugin's progress lines in the pytest terminal: written past output capture, silenced by ``-q``.

One mock-only project run twice in process (mock pools start in milliseconds); the real-pool and recording
lines go through the same ``PluginProgress.line`` (the recording watch is tested in ``test_proxy.py``)."""

from __future__ import annotations

import re

import pytest

pytest_plugins = ["pytester"]

PROGRESS_LINE = re.compile(r"^dspy-bridge: ", re.MULTILINE)


def test_pool_lines_reach_the_terminal_not_the_tests_output_and_q_silences_them(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.mock
        def test_fails(bridge):
            assert False, "so that its captured output is shown"
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["dspy-bridge: 2 mock workers ready in *s (warmed in the background*)"])
    assert "Captured stdout setup" not in result.stdout.str()  # written past capture, not into the test's output
    quiet = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-q")
    assert quiet.ret == pytest.ExitCode.TESTS_FAILED
    assert PROGRESS_LINE.findall(quiet.stdout.str()) == []
