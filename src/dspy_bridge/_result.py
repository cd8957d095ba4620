"""``Result``: everything one ``execute_program`` returned, typed (``Bridge.execute(..., full=True)``).

The worker always sends the whole result (docs/programs-contract.md); ``Bridge.execute`` returns only its
``outputs`` unless asked for ``full=True``. ``Result.from_response`` reads the plain map ``Pool.execute``
returns, so the three faces share one reading. A mock worker's answer is what was recorded: a field the
recording lacks (an old cassette has no ``tool_calls``) comes back empty, never invented.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Result"]


@dataclass(frozen=True)
class Result:
    """One program run: outputs, alternative completions (n > 1), usage per model, cost, calls (in total and per
    predictor, with ``assert_calls``, ``assert_no_retries``, ``assert_no_adapter_fallback``), trace, tools."""

    outputs: dict[str, Any]
    completions: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=dict)
    cost: float | None = None
    lm_calls: int | None = None
    trace: list[dict[str, Any]] | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    #: Per predictor (``named_predictors()`` name): ``{lm_calls, retries, fallbacks, parse_errors, cache_hits}``
    #: — real workers only; a recording made before these counts has none (``{}``).
    calls: dict[str, dict[str, int]] = field(default_factory=dict)
    cache_hits: int | None = None
    source: str = "lm"
    elapsed_ms: float | None = field(default=None, compare=False)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_response(cls, result: dict[str, Any]) -> Result:
        """Read an ``execute_program`` result map (unknown keys stay in ``raw``)."""
        cost = result.get("cost")
        calls = result.get("lm_calls")
        hits = result.get("cache_hits")
        return cls(
            outputs=dict(result.get("outputs") or {}),
            completions=list(result.get("completions") or []),
            usage=dict(result.get("usage") or {}),
            cost=float(cost) if isinstance(cost, int | float) and not isinstance(cost, bool) else None,
            lm_calls=calls if isinstance(calls, int) and not isinstance(calls, bool) else None,
            trace=list(result["trace"]) if isinstance(result.get("trace"), list) else None,
            tool_calls=list(result.get("tool_calls") or []),
            calls={str(k): dict(v) for k, v in (result.get("calls") or {}).items() if isinstance(v, dict)},
            cache_hits=hits if isinstance(hits, int) and not isinstance(hits, bool) else None,
            source=str(result.get("source", "lm")),
            elapsed_ms=result.get("elapsed_ms"),
            raw=dict(result),
        )

    def __getitem__(self, name: str) -> Any:
        """``result["answer"]``: an output field, as with the plain outputs map."""
        return self.outputs[name]

    # -- call assertions (docs/pytest-plugin.md, "Call assertions") ----------------------------
    def _counts(self, what: str) -> dict[str, dict[str, int]]:
        if not self.calls:
            raise AssertionError(
                f"cannot check {what}: this result has no per-predictor call counts (source {self.source!r}); "
                "they come from real workers (scripted and integration runs, and recordings made since)"
            )
        return self.calls

    def _listing(self) -> str:
        rows = [
            f"  {name}: {c.get('lm_calls', 0)} LM call(s), {c.get('retries', 0)} retries, "
            f"{c.get('fallbacks', 0)} adapter fallback(s), {c.get('parse_errors', 0)} parse error(s), "
            f"{c.get('cache_hits', 0)} cache hit(s)"
            for name, c in self.calls.items()
        ]
        return "actual calls:\n" + ("\n".join(rows) if rows else "  (no LM calls)")

    def _name(self, wanted: str) -> str:
        """A predictor's name as given, or with the final ``.predict`` ChainOfThought adds left out."""
        if wanted in self.calls or f"{wanted}.predict" not in self.calls:
            return wanted
        return f"{wanted}.predict"

    def assert_calls(self, expected: dict[str, int], *, exact: bool = False) -> None:
        """Each named predictor made exactly this many LM calls (``{"qa.predict": 1}``; a final ``.predict``
        may be left out); ``exact=True``: and no other predictor called the LM."""
        __tracebackhide__ = True
        calls = self._counts("LM calls")
        wrong = []
        for wanted, count in expected.items():
            actual = calls.get(self._name(wanted), {}).get("lm_calls", 0)
            if actual != count:
                wrong.append(f"{wanted}: expected {count} LM call(s), got {actual}")
        if exact:
            named = {self._name(wanted) for wanted in expected}
            wrong += [
                f"{name}: expected no LM calls, got {c.get('lm_calls', 0)}"
                for name, c in calls.items()
                if name not in named and c.get("lm_calls", 0)
            ]
        if wrong:
            raise AssertionError("LM calls differ: " + "; ".join(wrong) + "\n" + self._listing())

    def assert_no_retries(self) -> None:
        """DSPy retried no LM call (a 429, a 5xx, a timeout: the LM's ``num_retries``)."""
        __tracebackhide__ = True
        retried = {name: c["retries"] for name, c in self._counts("retries").items() if c.get("retries")}
        if retried:
            shown = ", ".join(f"{name} {count}" for name, count in retried.items())
            raise AssertionError(f"DSPy retried LM calls: {shown}\n{self._listing()}")

    def assert_no_adapter_fallback(self) -> None:
        """No predictor's answer failed to parse and was asked again through DSPy's JSONAdapter fallback."""
        __tracebackhide__ = True
        fell = {name: c["fallbacks"] for name, c in self._counts("adapter fallbacks").items() if c.get("fallbacks")}
        if fell:
            shown = ", ".join(f"{name} {count}" for name, count in fell.items())
            raise AssertionError(
                f"ChatAdapter → JSONAdapter fallback happened: {shown} (the first answer did not parse)\n"
                + self._listing()
            )
