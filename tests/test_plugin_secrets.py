"""Keys stay where they belong under the plugin, checked from the outside: whole pytest output, every file.

* An integration test's LM route is pinned to the cassette proxy: an ``api_base``/``api_key`` of its own is
  refused (never silently obeyed, never silently overridden) unless the test is marked ``live=True``.
* A failing test that holds the host's key (in a local, an input, an assertion) shows none of it in the
  report, even with ``-vv --tb=long -l``, and no file the run writes contains it.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from dspy_bridge.testing import FakeGemini

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.slow  # real DSPy workers


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--bridge-workers=1", *args)


def _files_containing(root: Path, secret: str) -> list[Path]:
    needle = secret.encode()
    return [path for path in root.rglob("*") if path.is_file() and needle in path.read_bytes()]


def test_an_integration_test_cannot_route_its_lm_around_the_proxy(pytester: pytest.Pytester) -> None:
    with FakeGemini() as outside:
        pytester.makepyfile(
            f"""
            import pytest
            from dspy_bridge import UsageError

            @pytest.mark.integration
            def test_bypass(bridge):
                with pytest.raises(UsageError) as refused:
                    bridge.configure_lm("gemini/gemini-2.5-flash", api_base="{outside.base_url}")
                assert "live=True" in str(refused.value) and "api_base=…" in str(refused.value)
                with pytest.raises(UsageError):
                    bridge.request("configure_lm", {{"model": "gemini/gemini-2.5-flash", "api_key": "mine"}})

            @pytest.mark.integration(live=True)
            def test_on_purpose(bridge):
                bridge.configure_lm("gemini/gemini-2.5-flash", api_base="{outside.base_url}", api_key="k" * 12)
                assert bridge.run("question -> answer", question="Capital of France?")["answer"]
            """
        )
        result = _run(pytester, "-v", "--bridge-record=once", "--bridge-upstream=fake")
        served = len(outside.requests)
    result.assert_outcomes(passed=2)
    assert served >= 1  # only the live test reached the outside server
    result.stdout.fnmatch_lines(["integration tests 2 (1 live: own endpoint, not replayed)*"])
    assert not list(pytester.path.rglob("*test_on_purpose*"))  # a live test is never recorded


def test_a_failing_test_holding_the_key_shows_none_of_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "k3y-" + secrets.token_hex(16)  # no known key shape: only an exact match can catch it
    other = "tok-" + secrets.token_hex(12)
    monkeypatch.setenv("GEMINI_API_KEY", key)
    monkeypatch.setenv("OPENAI_API_KEY", other)
    pytester.makepyfile(
        """
        import logging, os, sys
        import pytest

        @pytest.mark.integration
        def test_leaky(bridge):
            key = os.environ["GEMINI_API_KEY"]
            print("stdout:", key)
            print("stderr:", os.environ["OPENAI_API_KEY"], file=sys.stderr)
            logging.getLogger("app").warning("log: %s", key)
            bridge.configure_lm("gemini/gemini-2.5-flash")
            answer = bridge.run("question -> answer", question=f"is {key} my key?")
            assert answer["answer"] == key, f"expected the key {key}"
        """
    )
    # keep: a failed test's recordings are otherwise discarded, and the cassettes are what this checks
    result = _run(
        pytester, "-vv", "--tb=long", "-l", "-rA", "--bridge-record=once", "--bridge-upstream=fake",
        "--bridge-record-failed=keep",
    )  # fmt: skip
    result.assert_outcomes(failed=1)
    output = "\n".join(result.outlines + result.errlines)
    assert "<REDACTED:secret>" in output  # the report was there, and redacted
    assert key not in output and other not in output
    written = sorted(pytester.path.rglob("*.yaml"))
    assert written, "the recording run wrote no cassette"
    assert not _files_containing(pytester.path, key) and not _files_containing(pytester.path, other)
