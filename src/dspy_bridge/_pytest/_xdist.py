"""Who this pytest process is under pytest-xdist, read in one place and passed down.

Nothing below the plugin reads ``PYTEST_XDIST_*``: the cassette ``Recorder`` gets the run id
(shared by every xdist worker of one run, so their recordings merge as one run), the pools get a
worker-id prefix (``gw0-``) so worker ids stay unique across xdist processes, and the summary a
label. xdist's own API (``config.workerinput``) comes first; its environment variables are the
fallback (set for the test process too).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

__all__ = ["RUN_DIR_KEY", "XdistIdentity", "xdist_identity"]

RUN_DIR_KEY = "dspy_bridge_run_dir"  # workerinput key: the controller hands its run directory to every worker


@dataclass(frozen=True)
class XdistIdentity:
    """``worker_id`` (``gw0``…) and ``run_id`` (xdist's test-run uid); both ``None`` without xdist."""

    worker_id: str | None = None
    run_id: str | None = None
    run_dir: str | None = None  # the controller's private directory for run-wide resources (one zygote)

    @property
    def label(self) -> str:
        """How the summary names this process."""
        return self.worker_id or "main"

    @property
    def worker_id_prefix(self) -> str:
        """Prefix for this process's pool worker ids (``gw0-``), empty outside xdist."""
        return f"{self.worker_id}-" if self.worker_id else ""


def xdist_identity(config: pytest.Config) -> XdistIdentity:
    """This process's identity: from xdist's ``workerinput`` on a worker, else its environment."""
    workerinput = getattr(config, "workerinput", None)
    if isinstance(workerinput, dict) and workerinput.get("workerid"):
        return XdistIdentity(
            str(workerinput["workerid"]),
            workerinput.get("testrunuid") or None,
            workerinput.get(RUN_DIR_KEY) or None,
        )
    return XdistIdentity(
        os.environ.get("PYTEST_XDIST_WORKER") or None, os.environ.get("PYTEST_XDIST_TESTRUNUID") or None
    )
