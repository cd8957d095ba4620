"""Hermetic runs on the real worker: a DSPy memory cache per session, none on disk, clean settings per session.

* **Cache.** ``SessionCaches`` is installed once as ``dspy.cache`` (as ``dspy.configure_cache`` installs its
  own). DSPy consults it only for LMs with ``cache=True``; every lookup and store goes to the memory-only
  ``Cache`` of the run's session, found on the run's ``CallLog`` (which DSPy propagates to ``dspy.Parallel``
  threads with its settings). Outside a run nothing is cached. So a test — one session — never sees another
  test's answers, a stale answer can never bypass a cassette, and no cache directory is ever created or read
  (``DSPY_CACHEDIR`` and ``~/.dspy_cache`` stay untouched). A hit is counted on the log (``cache_hits``).
* **Settings.** ``SettingsBaseline.restore`` puts DSPy's global configuration back to what it was before the
  first session (DSPy's defaults plus whatever the worker's start-up code configured) and forgets which
  thread configured it; the worker calls it for every new session, so a ``dspy.configure(...)`` in one test's
  code never leaks into the next test (the worker itself only ever uses ``dspy.context``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from dspy_bridge.worker._calls import active_log

__all__ = ["SessionCaches", "SettingsBaseline", "session_cache"]

MEMORY_ENTRIES = 10_000  # per session: a test's whole run, bounded so a long-lived session cannot grow forever


def session_cache() -> Any:
    """A new memory-only DSPy cache (what one session's runs read and write)."""
    from dspy.clients.cache import Cache

    return Cache(
        enable_disk_cache=False, enable_memory_cache=True, disk_cache_dir=None, memory_max_entries=MEMORY_ENTRIES
    )


class SessionCaches:
    """``dspy.cache`` for the whole worker: dispatches to the running session's cache (see module docstring).

    ``refuse(value)`` says an answer must never be cached (it holds a key); such answers are dropped on ``put``.
    """

    def __init__(self, refuse: Callable[[Any], bool]) -> None:
        from dspy.clients.cache import Cache

        self._refuse = refuse
        self._off = Cache(enable_disk_cache=False, enable_memory_cache=False, disk_cache_dir=None)
        self.enable_disk_cache = False
        self.disk_cache_dir = None

    @staticmethod
    def install(refuse: Callable[[Any], bool]) -> SessionCaches:
        import dspy

        caches = SessionCaches(refuse)
        with dspy._cache_lock:  # what dspy.configure_cache holds while it swaps the cache
            dspy.cache = caches
        return caches

    def _target(self) -> Any:
        log = active_log()
        cache = getattr(log, "cache", None) if log is not None else None
        return cache if cache is not None else self._off

    def get(self, request: dict[str, Any], ignored_args_for_cache_key: list[str] | None = None) -> Any:
        found = self._target().get(request, ignored_args_for_cache_key)
        if found is not None:
            log = active_log()
            if log is not None:
                log.cache_hit()
        return found

    def put(
        self, request: dict[str, Any], value: Any, ignored_args_for_cache_key: list[str] | None = None, **kwargs: Any
    ) -> None:
        if self._refuse(value):
            return
        self._target().put(request, value, ignored_args_for_cache_key, **kwargs)

    def __getattr__(self, name: str) -> Any:
        """Everything else (``cache_key``, ``reset_memory_cache``, ...) on the session's cache."""
        return getattr(self._target(), name)

    def __contains__(self, key: str) -> bool:
        return key in self._target()


class SettingsBaseline:
    """DSPy's global settings as they were before the first session (what a worker's preload or start-up code
    configured); ``restore`` puts them back, and forgets which thread configured them, so the next
    ``dspy.configure`` may come from any handler thread."""

    def __init__(self) -> None:
        self._saved: dict[str, Any] | None = None

    @staticmethod
    def _module() -> Any:
        import importlib

        return importlib.import_module("dspy.dsp.utils.settings")  # the module (``dspy.dsp.utils.settings`` is
        # also the name of its Settings instance)

    def restore(self) -> None:
        module = self._module()
        with module.global_lock:
            config = module.main_thread_config
            if self._saved is None:  # the first session: what is configured now is the baseline
                self._saved = {key: _copied(value) for key, value in config.items()}
            config.clear()
            config.update({key: _copied(value) for key, value in self._saved.items()})
            module.config_owner_thread_id = None
            module.config_owner_async_task = None


def _copied(value: Any) -> Any:
    """Containers copied (a later ``callbacks.append`` must not reach the baseline); objects kept as they are."""
    if isinstance(value, list | dict | set):
        return copy.copy(value)
    return value
