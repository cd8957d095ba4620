"""The plugin's progress lines in the pytest terminal: written past output capture, silenced by ``-q``.

One mock-only project run twice in process (mock pools start in milliseconds); the real-pool and recording
lines go through the same ``PluginProgress.line`` (the recording watch is tested in ``test_proxy.py``)."""

from __future__ import annotations

import io
import re

import pytest

pytest_plugins = ["pytester"]

# Inner runs without the cache, and without the unraisable-exception plugin's gc.collect() rounds at exit
# (a second per inner config, and nothing here is about unraisable exceptions).
CHEAP = ("-p", "no:cacheprovider", "-p", "no:unraisableexception")
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
    result = pytester.runpytest_inprocess(*CHEAP)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["dspy-bridge: 2 mock workers ready in *s (warmed in the background*)"])
    assert "Captured stdout setup" not in result.stdout.str()  # written past capture, not into the test's output
    quiet = pytester.runpytest_inprocess(*CHEAP, "-q")
    assert quiet.ret == pytest.ExitCode.TESTS_FAILED
    assert PROGRESS_LINE.findall(quiet.stdout.str()) == []


class _Terminal(io.StringIO):
    """A terminal as pytest's reporter sees one (``isatty``), kept in memory."""

    def isatty(self) -> bool:
        return True


def test_a_wait_is_redrawn_in_place_on_a_terminal_and_plain_lines_elsewhere(pytester: pytest.Pytester) -> None:
    from _pytest.terminal import TerminalReporter

    from dspy_bridge._pytest._progress import PluginProgress

    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    config = pytester.parseconfigure(*CHEAP)
    terminal, pipe = _Terminal(), io.StringIO()

    progress = PluginProgress(config, TerminalReporter(config, terminal))
    redraw = progress.waiting("waiting for 2 real DSPy workers to finish warming…")
    assert redraw is not None
    redraw(0.2)
    redraw(0.4)
    progress.end_wait("2 real DSPy workers ready in 1.00 s")
    drawn = [part.rstrip() for part in terminal.getvalue().split("\r")]  # each redraw starts the line anew
    assert drawn[1:] == [
        "dspy-bridge: waiting for 2 real DSPy workers to finish warming… (0.2 s)",
        "dspy-bridge: waiting for 2 real DSPy workers to finish warming… (0.4 s)",
        "dspy-bridge: 2 real DSPy workers ready in 1.00 s",
    ]
    assert terminal.getvalue().endswith("\n")

    progress = PluginProgress(config, TerminalReporter(config, pipe))
    assert progress.waiting("waiting for 2 real DSPy workers to finish warming…") is None  # no redraw off a terminal
    progress.line("waiting for 2 real DSPy workers to finish warming…")
    progress.end_wait("2 real DSPy workers ready in 1.00 s")
    assert pipe.getvalue().splitlines() == [
        "dspy-bridge: waiting for 2 real DSPy workers to finish warming…",
        "dspy-bridge: 2 real DSPy workers ready in 1.00 s",
    ]
