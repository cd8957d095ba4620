"""Per-predictor LM call accounting on the real worker: calls, transport retries, adapter fallbacks, cache hits.

One ``CallLog`` per ``execute_program`` run, installed as a DSPy callback (``dspy.context(callbacks=[...])``,
after any the user configured), so DSPy's own hooks say what happened — nothing reads prompts to guess:

* **Which predictor.** ``Module.__call__`` pushes the module onto ``dspy.settings.caller_modules``; inside an
  adapter or LM call its last entry is the calling ``Predict``, named by the program's ``named_predictors()``
  (``agent.react``, ``agent.extract.predict``). A call outside any predictor is ``(no predictor)``.
* **What the adapter asked.** ``on_adapter_format_start`` sees the adapter and the signature it renders (after
  its own rewrites: native tool calls remove the ``ToolCalls`` field). The latest one per thread/task is the
  ``Step`` the scripted LM answers (``_scripted``).
* **Calls** are ``on_lm_start`` events. **Fallbacks**: a ChatAdapter parse failure followed, within the same
  predictor call, by a JSONAdapter format (DSPy's ``use_json_adapter_fallback``). **Parse errors**: every
  ``AdapterParseError`` a parse raised. **Retries**: DSPy's transport retries (429, 5xx, timeouts; the LM's
  ``num_retries``), counted where DSPy decides to retry (``count_retries``). **Cache hits**: answers DSPy's
  cache served (``_dspy_cache``), which cost no tokens and never reached the cassette.
"""

from __future__ import annotations

import contextvars
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from dspy.utils.callback import BaseCallback

__all__ = ["NO_PREDICTOR", "CallLog", "Step", "active_log", "count_retries", "current_step"]

NO_PREDICTOR = "(no predictor)"
COUNTERS = ("lm_calls", "retries", "fallbacks", "parse_errors", "cache_hits")


@dataclass
class Step:
    """What the adapter of the running predictor call rendered last (in this thread or task)."""

    predictor: str
    module: Any  # the calling Predict (None outside any predictor)
    adapter: Any
    signature: Any
    caller_modules: Any  # the caller list object: one per predictor call, so a fallback is told from a new call
    parse_failed: bool = False


_STEP: contextvars.ContextVar[Step | None] = contextvars.ContextVar("dspy_bridge_step", default=None)


def current_step() -> Step | None:
    return _STEP.get()


@dataclass
class CallLog(BaseCallback):  # type: ignore[misc]  # dspy ships no type information
    """Counters per predictor name for one run (``as_dict`` is what the result carries)."""

    names: dict[int, str]  # id(predictor) -> named_predictors() name
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # predictors in the order they first called the LM
    cache: Any = None  # the session's DSPy cache (``_hermetic.SessionCaches`` reads and writes it)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def for_module(cls, module: Any, cache: Any = None) -> CallLog:
        named = module.named_predictors() if hasattr(module, "named_predictors") else []
        return cls({id(predictor): name for name, predictor in named}, cache=cache)

    def name_of(self, module: Any) -> str:
        if module is None:
            return NO_PREDICTOR
        return self.names.get(id(module), f"(unnamed {type(module).__name__})")

    def add(self, predictor: str, counter: str, amount: int = 1) -> None:
        with self._lock:
            if predictor not in self.counts:
                self.counts[predictor] = Counter()
                self.order.append(predictor)
            self.counts[predictor][counter] += amount

    def caller(self) -> tuple[str, Any]:
        """The calling predictor now: its name and the module itself."""
        import dspy

        callers = dspy.settings.caller_modules or []
        module = callers[-1] if callers else None
        return self.name_of(module), module

    # -- DSPy callbacks ---------------------------------------------------------------------
    def on_adapter_format_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        import dspy

        name, module = self.caller()
        callers = dspy.settings.caller_modules
        previous = _STEP.get()
        if (
            previous is not None
            and previous.parse_failed
            and previous.caller_modules is callers
            and isinstance(instance, dspy.JSONAdapter)
            and not isinstance(previous.adapter, dspy.JSONAdapter)
        ):
            self.add(name, "fallbacks")
        _STEP.set(Step(name, module, instance, inputs.get("signature"), callers))

    def on_adapter_parse_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        from dspy.utils.exceptions import AdapterParseError

        step = _STEP.get()
        if isinstance(exception, AdapterParseError) and step is not None and not step.parse_failed:
            step.parse_failed = True
            self.add(step.predictor, "parse_errors")

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.add(self.caller()[0], "lm_calls")

    # -- counted elsewhere ------------------------------------------------------------------
    def cache_hit(self) -> None:
        self.add(self.caller()[0], "cache_hits")

    def retry(self) -> None:
        self.add(self.caller()[0], "retries")

    def as_dict(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {name: {key: int(self.counts[name][key]) for key in COUNTERS} for name in self.order}


def active_log() -> CallLog | None:
    """The run's log, found where DSPy propagates it (its settings, copied into ``dspy.Parallel`` threads)."""
    import dspy

    for callback in dspy.settings.get("callbacks") or ():
        if isinstance(callback, CallLog):
            return callback
    return None


def count_retries() -> None:
    """Count each transport retry DSPy decides to make: it asks ``execution.is_retryable_lm_error`` only when
    an attempt failed and retries remain, and retries exactly when it answers yes. Wrapped once per process
    (composes with the connect guard's wrapper, whichever comes first); a DSPy that moves it loses the count."""
    try:
        from dspy.clients import execution
    except ImportError:
        return
    original = getattr(execution, "is_retryable_lm_error", None)
    if original is None or getattr(original, "_bridge_counted", False):
        return

    def is_retryable_lm_error(error: Exception) -> bool:
        retry = bool(original(error))
        log = active_log() if retry else None
        if log is not None:
            log.retry()
        return retry

    is_retryable_lm_error._bridge_counted = True  # type: ignore[attr-defined]
    is_retryable_lm_error._bridge_guarded = getattr(original, "_bridge_guarded", False)  # type: ignore[attr-defined]
    execution.is_retryable_lm_error = is_retryable_lm_error
