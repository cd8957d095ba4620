"""What a run's LM calls cost, from the tokens DSPy counted and the prices DSPy itself uses.

DSPy prices each call in its history (``dspy.clients.costs``), but the worker runs with history off, so the
estimate is made here from ``track_usage`` totals and the same price table (``dspy.clients.model_metadata``,
litellm's model map, read offline). Input, output and reasoning tokens only; a model without a known price
gives ``None`` — never a made-up zero. Recorded in results (``cost``), so cassettes keep what a recording spent.
"""

from __future__ import annotations

from typing import Any

__all__ = ["estimate_cost"]


def _price(info: dict[str, Any], key: str) -> float | None:
    value = info.get(key)
    return float(value) if isinstance(value, int | float) else None


def _model_cost(model: str, usage: dict[str, Any]) -> float | None:
    from dspy.clients.model_metadata import model_info

    provider, _, name = model.partition("/")
    info = model_info(provider, name) if name else None
    if not info:
        return None
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    details = usage.get("completion_tokens_details") or {}
    reasoning = int(details.get("reasoning_tokens") or 0) if isinstance(details, dict) else 0
    input_rate, output_rate = _price(info, "input_cost_per_token"), _price(info, "output_cost_per_token")
    if input_rate is None or output_rate is None:
        return None
    reasoning_rate = _price(info, "output_cost_per_reasoning_token") or output_rate
    return prompt * input_rate + completion * output_rate + reasoning * reasoning_rate


def estimate_cost(usage_by_model: dict[str, dict[str, Any]]) -> float | None:
    """USD for ``{model: {prompt_tokens, completion_tokens, ...}}``; None if any model's price is unknown."""
    total = 0.0
    for model, usage in usage_by_model.items():
        try:
            cost = _model_cost(str(model), usage if isinstance(usage, dict) else {})
        except Exception:  # advisory: a price table problem never fails a run
            return None
        if cost is None:
            return None
        total += cost
    return round(total, 10)
