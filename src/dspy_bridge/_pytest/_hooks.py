"""Hook specifications the plugin adds (registered through ``pytest_addhooks``)."""

from __future__ import annotations

import pytest

from dspy_bridge._pytest._setup import BridgeSetup


@pytest.hookspec
def pytest_dspy_bridge_configure(config: pytest.Config, state: BridgeSetup) -> None:
    """Called once per pytest process after the plugin read its settings, before any pool starts.

    ``state`` is a ``BridgeSetup`` (``dspy_bridge.pytest_plugin.BridgeSetup``): adjust
    ``state.workers``, ``state.pool_env`` or ``state.lm_defaults``; ``state.worker_label`` names
    the process under pytest-xdist. See docs/pytest-plugin.md, "Configuring from a conftest".
    """
