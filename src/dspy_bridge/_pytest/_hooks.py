"""Hook specifications the plugin adds (registered through ``pytest_addhooks``)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.hookspec
def pytest_dspy_bridge_configure(config: pytest.Config, state: Any) -> None:
    """Called once per process after the plugin set up its state: adjust ``state.pool_env``,
    ``state.lm_defaults`` or ``state.workers`` before any pool starts."""
