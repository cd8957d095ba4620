"""``BridgeSetup``: what a ``pytest_dspy_bridge_configure`` hook may see and change.

The plugin's per-process state holds pools, plans, counters and the proxy route; a hook
implementer (a conftest.py or another plugin) should touch none of that. This view exposes the
three settings that shape the pools — worker count, extra worker environment, default LM
arguments — plus the process's xdist label, and nothing else. It is handed out before any pool
starts, which is the only time changing them has an effect.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dspy_bridge._pytest._state import BridgeState

__all__ = ["BridgeSetup"]


class BridgeSetup:
    """The settings a ``pytest_dspy_bridge_configure`` implementation may adjust.

    Example (in ``conftest.py``)::

        def pytest_dspy_bridge_configure(config, state):
            state.workers = 4
            state.pool_env["MY_FEATURE_FLAG"] = "1"
            state.lm_defaults["temperature"] = 0.0
    """

    __slots__ = ("_state",)

    def __init__(self, state: BridgeState) -> None:
        self._state = state

    @property
    def workers(self) -> int:
        """Workers per pool (from ``--bridge-workers`` and friends); set it to change both pools."""
        return self._state.workers

    @workers.setter
    def workers(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"workers must be a positive int, not {value!r}")
        self._state.workers = value

    @property
    def pool_env(self) -> dict[str, str]:
        """Extra environment variables for every worker process (mutate it in place)."""
        return self._state.pool_env

    @property
    def lm_defaults(self) -> dict[str, Any]:
        """``configure_lm`` arguments every test's client applies by default (mutate it in place)."""
        return self._state.lm_defaults

    @property
    def worker_label(self) -> str:
        """This pytest process: ``main``, or the xdist worker id (``gw0``, ``gw1``…)."""
        return self._state.worker_label

    def __repr__(self) -> str:
        return f"<BridgeSetup {self.worker_label} workers={self.workers} pool_env={sorted(self.pool_env)}>"
