"""Programs as DSPy users write them, on the real worker: user modules by import path, demos, saved state,
adapters, per-call LM options, and the full result (completions, usage per model, trace, tool calls).

* **Imports are opt-in.** ``create_program(module="pkg.mod:Attr")`` imports ``pkg.mod`` only when the module
  path starts with one of the prefixes in ``$DSPY_BRIDGE_ALLOWED_MODULES`` (``PoolConfig.allowed_modules``,
  plugin ini ``bridge_allowed_modules``); otherwise ``invalid_request`` names the option. ``Attr`` is a
  ``dspy.Module`` subclass or a factory returning a ``dspy.Module``; it is called with the program's ``kwargs``
  and then given ``load_state(state)``.
* **Sync or async.** A module whose class overrides ``aforward`` runs with ``await module.acall(**inputs)``
  (in a fresh event loop on the handler thread); every other module runs with ``module(**inputs)``.
* **Per call.** ``config`` (temperature, n, max_tokens, rollout_id) goes into a copy of the session's LM for
  that call only; ``adapter`` (``chat``/``json``) overrides the program's; both under ``dspy.context``.
* **Results.** ``outputs`` are the prediction's fields as plain data (a ReAct ``trajectory`` included);
  ``completions`` when n > 1; ``usage`` per model; ``lm_calls``; ``calls`` per predictor (LM calls, retries,
  adapter fallbacks, parse errors, cache hits: ``_calls.CallLog``) and ``cache_hits``; ``trace`` per predictor
  when asked; ``tool_calls`` read from a ``trajectory`` (``tool_name_i``/``tool_args_i``/``observation_i``).
"""

from __future__ import annotations

import asyncio
import importlib
import os
from typing import Any

from dspy_bridge.protocol._constants import ALLOWED_MODULES_ENV
from dspy_bridge.protocol._taxonomy import ErrorType
from dspy_bridge.worker._base import HandlerFailure, Program
from dspy_bridge.worker._dspy_types import numbers, plain

__all__ = [
    "allowed_prefixes",
    "apply_demos",
    "build_user_module",
    "describe_predictors",
    "is_allowed",
    "run_program",
]


def allowed_prefixes(environ: Any = None) -> tuple[str, ...]:
    raw = (os.environ if environ is None else environ).get(ALLOWED_MODULES_ENV, "")
    return tuple(part.strip().rstrip(".") for part in raw.split(",") if part.strip().rstrip("."))


def is_allowed(module_path: str, prefixes: tuple[str, ...]) -> bool:
    """``myapp`` allows ``myapp`` and ``myapp.rag``, never ``myapp_other``."""
    return any(module_path == prefix or module_path.startswith(prefix + ".") for prefix in prefixes)


def _invalid(message: str, argument: str, **details: Any) -> HandlerFailure:
    return HandlerFailure(ErrorType.INVALID_REQUEST, message, details={"argument": argument, **details})


def build_user_module(dspy: Any, target: str, kwargs: dict[str, Any], state: dict[str, Any] | None) -> Any:
    """Import ``pkg.mod:Attr`` (if allowed), construct it with ``kwargs``, load ``state``."""
    module_path, _, attribute = target.partition(":")
    prefixes = allowed_prefixes()
    if not is_allowed(module_path, prefixes):
        raise _invalid(
            f"module {module_path!r} is not allowed on this worker: add a prefix of it to the allowed modules "
            f"(PoolConfig.allowed_modules, pytest ini 'bridge_allowed_modules'); allowed now: "
            f"{', '.join(prefixes) or 'none'}",
            "module",
            option="allowed_modules",
            allowed=list(prefixes),
        )
    try:
        imported = importlib.import_module(module_path)
    except Exception as exc:
        raise _invalid(f"cannot import {module_path!r}: {type(exc).__name__}: {exc}", "module") from None
    factory: Any = imported
    for part in attribute.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise _invalid(f"{module_path!r} has no attribute {attribute!r}", "module")
    try:
        built = factory(**kwargs)
    except Exception as exc:
        raise _invalid(f"{target}(**kwargs) failed: {type(exc).__name__}: {exc}", "kwargs") from None
    if not isinstance(built, dspy.Module):
        raise _invalid(f"{target} built a {type(built).__name__}, not a dspy.Module", "module")
    if state is not None:
        load_state(built, state)
    return built


def load_state(module: Any, state: dict[str, Any]) -> None:
    try:
        module.load_state(state)
    except Exception as exc:
        raise _invalid(f"the saved state does not fit this program: {type(exc).__name__}: {exc}", "state") from None


def apply_demos(dspy: Any, module: Any, demos: list[dict[str, Any]], input_names: list[str]) -> None:
    """Set ``demos`` (maps of input and output field values) on every predictor of ``module``."""
    examples = [dspy.Example(**demo).with_inputs(*[n for n in input_names if n in demo]) for demo in demos]
    for _, predictor in module.named_predictors():
        predictor.demos = list(examples)


def _field(name: str, info: Any) -> dict[str, Any]:
    extra = getattr(info, "json_schema_extra", None) or {}
    annotation = getattr(info, "annotation", None)
    type_text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    return {
        "name": name,
        "type": type_text or str(annotation).replace("typing.", ""),
        "description": str(extra.get("desc") or ""),
        "prefix": extra.get("prefix"),
    }


def describe_predictors(module: Any) -> list[dict[str, Any]]:
    """``[{name, signature: {inputs, outputs, instructions}, demos}]`` from ``named_predictors()``."""
    described = []
    for name, predictor in module.named_predictors():
        signature = predictor.signature
        described.append(
            {
                "name": name,
                "signature": {
                    "inputs": [_field(n, f) for n, f in signature.input_fields.items()],
                    "outputs": [_field(n, f) for n, f in signature.output_fields.items()],
                    "instructions": str(signature.instructions or ""),
                },
                "demos": len(getattr(predictor, "demos", None) or ()),
            }
        )
    return described


def _adapter(dspy: Any, name: str | None) -> Any:
    if name == "json":
        return dspy.JSONAdapter()
    return dspy.ChatAdapter()


def _is_async(module: Any, dspy: Any) -> bool:
    aforward = getattr(type(module), "aforward", None)
    return aforward is not None and aforward is not getattr(dspy.Module, "aforward", None)


def run_program(
    dspy: Any,
    program: Program,
    lm: Any,
    inputs: dict[str, Any],
    options: dict[str, Any],
    sink: Any = None,
    cache: Any = None,
) -> Any:
    """Run ``program`` once under ``dspy.context``; returns ``(prediction, tracker, trace)``.

    ``sink``: a ``stream: true`` request's chunk sink — the run goes through ``dspy.streamify`` (``_streaming``).
    ``cache``: the session's DSPy cache (``_hermetic``), reached through the run's ``CallLog``.
    """
    from dspy_bridge.worker._calls import CallLog

    config = options.get("config") or {}
    call_lm = lm.copy(**config) if config else lm
    adapter = _adapter(dspy, options.get("adapter") or program.args.get("adapter"))
    trace: list[Any] | None = [] if options.get("trace") else None
    module = program.module
    log = CallLog.for_module(module, cache)
    callbacks = [*(dspy.settings.get("callbacks") or ()), log]  # the user's own callbacks still run
    settings: dict[str, Any] = {"lm": call_lm, "adapter": adapter, "disable_history": True, "callbacks": callbacks}
    if trace is not None:
        settings["trace"] = trace
    with dspy.context(**settings), dspy.track_usage() as tracker:
        if sink is not None:
            from dspy_bridge.worker._streaming import run_streamed

            prediction = run_streamed(dspy, module, inputs, sink)
        elif _is_async(module, dspy):
            prediction = asyncio.run(_acall(module, inputs))
        else:
            prediction = module(**inputs)
    tracker.calls = log.as_dict()  # per-predictor counts travel with the usage (``full_result``)
    return prediction, tracker, trace


async def _acall(module: Any, inputs: dict[str, Any]) -> Any:
    return await module.acall(**inputs)


def full_result(module: Any, prediction: Any, tracker: Any, trace: list[Any] | None, n: int) -> dict[str, Any]:
    """The contract's execute_program result (without timing, which the base adds)."""
    from dspy_bridge.worker._cost import estimate_cost

    outputs = {str(key): plain(value) for key, value in prediction.toDict().items()}
    usage = {str(model): numbers(per_model) for model, per_model in tracker.get_total_tokens().items()}
    result: dict[str, Any] = {
        "outputs": outputs,
        "usage": usage,
        "cost": estimate_cost(usage) if usage else None,
        "lm_calls": sum(len(entries) for entries in tracker.usage_data.values()),
        "tool_calls": tool_calls(outputs.get("trajectory")),
    }
    calls = getattr(tracker, "calls", None)
    if calls is not None:
        result["calls"] = calls
        result["cache_hits"] = sum(counts["cache_hits"] for counts in calls.values())
        # calls that reached the model (a scripted answer counts; an answer from DSPy's cache does not)
        result["lm_calls"] = sum(counts["lm_calls"] for counts in calls.values()) - result["cache_hits"]
    completions = getattr(prediction, "completions", None)
    if n > 1 and completions is not None:
        result["completions"] = [
            {str(key): plain(value) for key, value in completions[index].toDict().items()}
            for index in range(len(completions))
        ]
    if trace is not None:
        names = {id(predictor): name for name, predictor in module.named_predictors()}
        result["trace"] = [
            {
                "predictor": names.get(id(predictor), type(predictor).__name__),
                "inputs": plain(dict(step_inputs)),
                "outputs": plain(step_outputs.toDict() if hasattr(step_outputs, "toDict") else step_outputs),
            }
            for predictor, step_inputs, step_outputs in trace
        ]
    return result


def tool_calls(trajectory: Any) -> list[dict[str, Any]]:
    """``[{tool, args, observation}]`` from a ReAct-style trajectory (``tool_name_0``, ``tool_args_0``, ...)."""
    if not isinstance(trajectory, dict):
        return []
    calls = []
    index = 0
    while f"tool_name_{index}" in trajectory:
        calls.append(
            {
                "tool": trajectory[f"tool_name_{index}"],
                "args": trajectory.get(f"tool_args_{index}"),
                "observation": trajectory.get(f"observation_{index}"),
            }
        )
        index += 1
    return calls
