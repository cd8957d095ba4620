"""Process-level hygiene for a worker: a private frames fd, die-with-parent, fast exit.

Kept apart from the loop because a zygote child applies the same steps after ``fork``.
"""

from __future__ import annotations

import os
import signal
import sys

__all__ = ["exit_now", "protect_stdout", "watch_parent"]

_PR_SET_PDEATHSIG = 1
PARENT_PID_ENV = "DSPY_BRIDGE_PARENT_PID"


def protect_stdout() -> int:
    """Keep the real stdout for frames; send fd 1 and ``sys.stdout`` to stderr.

    DSPy, litellm or user code printing (even from C, to fd 1) then lands in stderr instead of
    corrupting a frame. Returns the private descriptor that frames are written to.
    """
    sys.stdout.flush()
    frames_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return frames_fd


def watch_parent(expected_parent: int | None = None) -> None:
    """Die with the host even if it is SIGKILLed: PR_SET_PDEATHSIG on Linux, plus a ppid check.

    The check closes the race where the host died before the signal was armed.
    """
    if sys.platform.startswith("linux"):
        import ctypes  # the running interpreter already links libc: no find_library scan needed

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if expected_parent is None:
        env = os.environ.get(PARENT_PID_ENV, "")
        expected_parent = int(env) if env.isdigit() else None
    if expected_parent is not None and os.getppid() != expected_parent:
        exit_now(1)


def exit_now(code: int = 0) -> None:
    """Flush and leave without interpreter teardown (saves ~0.8 s of CPU for a DSPy worker)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
