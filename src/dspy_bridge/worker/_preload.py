"""What a zygote loads before it forks, and the checks that make forking it safe.

Everything imported here is imported once and shared (copy-on-write) by every forked worker: the worker
modules themselves, the user's preload list (``module`` or ``module:warm_up_function`` entries, names the
user configures, hence ``importlib``), and ``warm_dspy``'s lazily loaded DSPy pieces. A fork is only safe
from a single-threaded process, so ``thread_report`` counts Python threads and kernel tasks; descriptors the
preload leaves open are reported (every child closes them anyway).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field

__all__ = ["THREAD_POOL_ENV", "WORKER_MODULES", "Preloaded", "import_preload", "open_fds", "thread_report", "warm_dspy"]

# What every child runs, whatever the preload: imported once here so no child pays for (or un-shares) it.
WORKER_MODULES = (
    "dspy_bridge.worker._main",
    "dspy_bridge.worker._loop",
    "dspy_bridge.worker._mock",
    # what a mock child needs to replay a cassette (``_mock.REPLAY_MODULES``): no child imports it on its own
    "dspy_bridge.cassettes._config",
    "dspy_bridge.cassettes._library",
    "dspy_bridge.cassettes._replay",
    "dspy_bridge.protocol._schema",
)
# numpy's OpenBLAS (and friends) would start a thread pool at import; the zygote pins them to 1 thread.
THREAD_POOL_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

log = logging.getLogger("dspy_bridge.zygote")


@dataclass
class Preloaded:
    """What ``import_preload`` managed: module names, failures (name → error) and the time it took."""

    names: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def import_preload(preload: tuple[str, ...]) -> Preloaded:
    """Import the heavy modules once; a failure is reported to clients, not fatal.

    An entry ``module:function`` imports ``module`` and calls ``function()`` (a warm-up hook, like
    ``warm_dspy``); it must start no thread and open no descriptor. Ends with ``gc.freeze()`` so that the
    children keep sharing what was loaded.
    """
    result = Preloaded()
    started = time.perf_counter()
    for name in WORKER_MODULES:
        importlib.import_module(name)
    for name in preload:
        try:
            module_name, _, function = name.partition(":")
            module = importlib.import_module(module_name)
            if function:
                getattr(module, function)()
            result.names.append(name)
        except Exception as exc:
            result.failed[name] = f"{type(exc).__name__}: {exc}"
            log.warning("preload of %s failed: %s", name, exc)
    result.seconds = time.perf_counter() - started
    gc.collect()
    gc.freeze()
    return result


def warm_dspy() -> None:
    """Load, once in the zygote, what every DSPy worker would load on its first LM call.

    Those lazy imports and DSPy's model-metadata map (~80 ms and ~15 MiB per process, read from the
    packaged snapshot) then stay shared by all children. The map is loaded only when it comes from the
    local snapshot (``LITELLM_LOCAL_MODEL_COST_MAP``, which the zygote defaults to true): a zygote must
    not wait on the network.
    """
    for name in ("dspy.clients.execution", "dspy.clients.costs", "dspy.clients.call_result"):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    if os.environ.get("LITELLM_LOCAL_MODEL_COST_MAP", "").lower() == "true":
        with contextlib.suppress(Exception):  # advisory data: a DSPy without it simply loads lazily
            importlib.import_module("dspy.clients.model_metadata").model_info("gemini", "gemini-2.5-flash")


def thread_report() -> tuple[int, int]:
    """(Python threads, kernel tasks) of this process; both must be 1 before a fork is safe."""
    try:
        tasks = len(os.listdir("/proc/self/task"))
    except OSError:  # no procfs: trust Python's count
        tasks = threading.active_count()
    return threading.active_count(), tasks


def open_fds(own: set[int]) -> list[str]:
    """Descriptors open in this process besides ``own``, as ``fd→target`` (empty without procfs)."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return []
    stray = []
    for name in names:
        fd = int(name)
        if fd in own:
            continue
        try:
            stray.append(f"{fd}→{os.readlink(f'/proc/self/fd/{fd}')}")
        except OSError:  # the descriptor listdir itself used, already closed
            continue
    return stray
