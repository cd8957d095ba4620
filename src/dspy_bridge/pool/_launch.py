"""Which launcher a pool gets: ``make_launcher`` reads ``start_strategy`` and picks spawn or zygote.

Kept apart from both launchers so that neither imports the other's chooser: ``_spawn`` (the protocols and
``SpawnLauncher``) ← ``_zygote`` (``ZygoteLauncher``, which falls back to spawning) ← this module.
"""

from __future__ import annotations

from dspy_bridge.pool._config import PoolConfig
from dspy_bridge.pool._spawn import Launcher, SpawnLauncher
from dspy_bridge.pool._zygote import ZygoteLauncher

__all__ = ["make_launcher"]


def make_launcher(config: PoolConfig) -> Launcher:
    """Pick the launcher for ``start_strategy``.

    ``spawn``: a fresh interpreter per worker. ``zygote``: forks from a pre-imported zygote.
    ``auto``: the zygote for real workers (it falls back to spawning where forking is unsupported), else
    spawn (mock workers start in tens of ms anyway). A custom ``worker_command`` always spawns.
    """
    if config.start_strategy == "spawn" or config.worker_command is not None:
        return SpawnLauncher(config)
    if config.start_strategy == "zygote" or config.mode == "real":
        return ZygoteLauncher(config)
    return SpawnLauncher(config)
