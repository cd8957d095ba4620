"""LM spend in the summary (replayed answers stand for recorded calls) and the recording budget."""

from __future__ import annotations

import os
import re
import shlex
from collections import Counter
from types import SimpleNamespace

import pytest

from dspy_bridge._pytest._spend import budget_problem, count_spend, describe_spend, parse_budget

pytest_plugins = ["pytester"]

TESTS = """
import pytest

@pytest.mark.mock
def test_first(bridge):
    bridge.configure_lm("gemini/gemini-2.5-flash")
    assert bridge.run("question -> answer", question="First?")["answer"]

@pytest.mark.mock
def test_second(bridge):
    bridge.configure_lm("gemini/gemini-2.5-flash")
    assert bridge.run("question -> answer", question="Second?")["answer"]
"""


def test_budget_text_is_parsed_strictly() -> None:
    assert parse_budget("calls:300,usd:2") == {"calls": 300.0, "usd": 2.0}
    assert parse_budget("usd:0.5") == {"usd": 0.5} and parse_budget(None) == {}
    for wrong, said in (("300", "calls:N and/or usd:X"), ("tokens:5", "calls:N"), ("calls:x", "not a number"),
                        ("usd:0", "more than 0")):  # fmt: skip
        with pytest.raises(ValueError, match=said):
            parse_budget(wrong)


def test_spend_is_counted_per_side_and_the_budget_trips_at_its_limit() -> None:
    spend: Counter[str] = Counter()
    client = SimpleNamespace(lm_calls=3, cost_usd=0.25, cost_unknown=0)
    count_spend(spend, records=True, live=False, client=client)
    count_spend(spend, records=False, live=False, client=SimpleNamespace(lm_calls=2, cost_usd=0.0, cost_unknown=2))
    count_spend(spend, records=False, live=True, client=client)  # live calls are neither recorded nor replayed
    assert describe_spend(spend) == (
        "LM spend: 2 LM calls replayed, $0.0000 of recorded spend avoided (+2 answer(s) without a known cost); "
        "3 LM calls recorded, $0.2500 spent recording"
    )
    assert budget_problem({"calls": 4}, spend, "B") is None
    assert (
        budget_problem({"calls": 3, "usd": 1}, spend, "B")
        == "the recording budget (B) is spent: this run recorded 3 LM calls (limit 3)"
    )
    assert "$0.2500 (limit $0.2)" in str(budget_problem({"usd": 0.2}, spend, "B"))
    assert describe_spend(Counter()) is None


def test_a_price_comes_from_dspys_table_and_an_unknown_model_has_none() -> None:
    from dspy_bridge.worker._cost import estimate_cost

    flash = {"gemini/gemini-2.5-flash": {"prompt_tokens": 148, "completion_tokens": 14}}
    assert estimate_cost(flash) == pytest.approx(7.94e-05)  # what DSPy's own history says for this call
    assert estimate_cost({**flash, "gemini/no-such-model": {"prompt_tokens": 1}}) is None


@pytest.mark.slow
def test_a_spent_budget_stops_recording_and_the_printed_command_records_the_rest(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSPY_BRIDGE_UPSTREAM", "fake")
    pytester.makepyfile(test_qa=TESTS)
    run = ("-p", "no:cacheprovider", "--bridge-workers=1")
    first = pytester.runpytest_subprocess(*run, "--bridge-record=once", "--bridge-record-budget=calls:1")
    first.assert_outcomes(passed=1, errors=1)
    first.stdout.fnmatch_lines(
        [
            "*test_second was not recorded: the recording budget (--bridge-record-budget) is spent: this run "
            "recorded 1 LM calls (limit 1). What was recorded is kept; record the rest in another run*",
            "LM spend: 1 LM calls recorded, $0.0* spent recording",
        ]
    )
    [command] = set(re.findall(r"(pytest \S+ --bridge-record=once)", first.stdout.str()))
    pytester.runpytest_subprocess(*run, *shlex.split(command)[1:]).assert_outcomes(passed=1)
    replay = pytester.runpytest_subprocess(*run)
    replay.assert_outcomes(passed=2)
    replay.stdout.fnmatch_lines(["LM spend: 2 LM calls replayed, $0.0* of recorded spend avoided"])
    assert "without a known cost" not in replay.stdout.str()
    assert not os.environ.get("GEMINI_API_KEY")  # the fake needed none
