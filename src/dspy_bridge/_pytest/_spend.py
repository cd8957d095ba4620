"""LM spend: what replayed answers saved, what recording spent, and the recording budget.

Every answer from a cassette stands for LM calls made when it was recorded (``lm_calls`` and ``cost`` in the
result, priced with DSPy's own table); the summary adds them up — "N LM calls replayed, $X of recorded spend
avoided". A recording run can be given a budget (``--bridge-record-budget=calls:300,usd:2``): once this pytest
process has recorded that much, every further test that would record fails at set-up, saying so, instead of
spending more. What was recorded stays; the next run records the rest (``--bridge-record=once``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

__all__ = ["BUDGET_KEYS", "budget_problem", "count_spend", "describe_spend", "parse_budget"]

BUDGET_KEYS = ("calls", "usd")


def parse_budget(text: str | None) -> dict[str, float]:
    """``"calls:300,usd:2"`` → ``{"calls": 300.0, "usd": 2.0}``; ``ValueError`` naming what is wrong."""
    if not text:
        return {}
    budget: dict[str, float] = {}
    for part in str(text).replace(" ", "").split(","):
        key, colon, value = part.partition(":")
        if not colon or key not in BUDGET_KEYS:
            raise ValueError(f"has {part!r}; write limits as calls:N and/or usd:X, e.g. calls:300,usd:2")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"has {part!r}: {value!r} is not a number") from None
        if number <= 0:
            raise ValueError(f"has {part!r}: a limit must be more than 0")
        budget[key] = number
    return budget


def count_spend(spend: Counter[Any], *, records: bool, live: bool, client: Any) -> None:
    """Add one test's LM calls and cost to the run's ``spend`` counter (live tests are neither)."""
    if live or not client.lm_calls:
        return
    side = "recorded" if records else "replayed"
    spend[f"{side}_calls"] += client.lm_calls
    spend[f"{side}_usd"] += client.cost_usd
    spend[f"{side}_unpriced"] += client.cost_unknown


def budget_problem(budget: dict[str, float], spend: Counter[Any], setting: str) -> str | None:
    """Why no further test may record (the budget is spent), or None."""
    calls, usd = spend["recorded_calls"], spend["recorded_usd"]
    spent = [
        f"{int(calls)} LM calls (limit {int(budget['calls'])})"
        if "calls" in budget and calls >= budget["calls"]
        else "",
        f"${usd:.4f} (limit ${budget['usd']:g})" if "usd" in budget and usd >= budget["usd"] else "",
    ]
    said = " and ".join(part for part in spent if part)
    if not said:
        return None
    return f"the recording budget ({setting}) is spent: this run recorded {said}"


def describe_spend(spend: Counter[Any]) -> str | None:
    """One summary line, or None when no answer stood for an LM call."""
    parts = []
    for side, verb in (("replayed", "of recorded spend avoided"), ("recorded", "spent recording")):
        calls = int(spend[f"{side}_calls"])
        if calls:
            unpriced = int(spend[f"{side}_unpriced"])
            note = f" (+{unpriced} answer(s) without a known cost)" if unpriced else ""
            parts.append(f"{calls} LM calls {side}, ${float(spend[f'{side}_usd']):.4f} {verb}{note}")
    return "LM spend: " + "; ".join(parts) if parts else None
