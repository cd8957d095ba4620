"""The forked child's side of a spawn: validate the request, shed the zygote, become an ordinary worker.

After ``fork()`` the child holds everything the zygote had — its sockets, signal handlers, random state,
logging handlers, DSPy and litellm globals. ``become_worker`` gives the child the three pipes as fds 0/1/2,
closes everything else, arms the parent-death check, takes the environment its client sent (exactly that:
the zygote's own variables go), the client's working directory and import path, resets what a worker must
own, and runs the worker loop; it never returns (``os._exit``).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from dspy_bridge.protocol._zygote import SPAWN_FDS

__all__ = ["SpawnSpec", "become_worker"]

_KEEPALIVE: list[Any] = []  # inherited objects the child must neither use nor let the GC close


@dataclass(frozen=True)
class SpawnSpec:
    """A validated spawn request: what the child needs after the fork."""

    worker_id: str
    mode: str
    codec: str
    env: dict[str, str]
    cwd: str | None
    max_concurrency: int
    max_frame_size: int
    fds: tuple[int, int, int]

    @classmethod
    def parse(cls, message: dict[str, Any], fds: list[int]) -> SpawnSpec:
        if len(fds) != SPAWN_FDS:
            raise ValueError(f"spawn needs exactly {SPAWN_FDS} descriptors (stdin, stdout, stderr), got {len(fds)}")
        from dspy_bridge.protocol._frames import DEFAULT_MAX_FRAME_SIZE

        worker_id, mode, codec = message.get("worker_id"), message.get("mode"), message.get("codec")
        env, cwd = message.get("env"), message.get("cwd")
        max_concurrency = message.get("max_concurrency", 1)
        max_frame_size = message.get("max_frame_size", DEFAULT_MAX_FRAME_SIZE)
        if not isinstance(worker_id, str) or not worker_id:
            raise ValueError("spawn needs a non-empty string 'worker_id'")
        if mode not in ("real", "mock"):
            raise ValueError(f"spawn 'mode' must be 'real' or 'mock', got {mode!r}")
        if codec not in ("msgpack", "json"):
            raise ValueError(f"spawn 'codec' must be 'msgpack' or 'json', got {codec!r}")
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise ValueError("spawn 'env' must map strings to strings (the child's whole environment)")
        if cwd is not None and not isinstance(cwd, str):
            raise ValueError("spawn 'cwd' must be a string or null")
        if type(max_concurrency) is not int or max_concurrency < 1:
            raise ValueError("spawn 'max_concurrency' must be a positive integer")
        if type(max_frame_size) is not int or max_frame_size < 1:
            raise ValueError("spawn 'max_frame_size' must be a positive integer")
        return cls(worker_id, mode, codec, env, cwd, max_concurrency, max_frame_size, (fds[0], fds[1], fds[2]))


def become_worker(spec: SpawnSpec, shed_zygote: Callable[[], None]) -> NoReturn:
    """In the child: shed the zygote (``shed_zygote`` closes its sockets and restores its signals), take
    the three pipes as 0/1/2, become a normal worker; exit with the worker, or 70 if becoming one failed."""
    code = 70
    try:
        zygote_pid = os.getppid()
        shed_zygote()
        for fd, target in zip(spec.fds, (0, 1, 2), strict=True):
            os.dup2(fd, target)
        os.closerange(3, _max_fd())  # our pipes' originals, the wake pipe, anything a preload left open
        gc.enable()
        from dspy_bridge.worker._process import PARENT_PID_ENV, watch_parent

        watch_parent(expected_parent=zygote_pid)
        os.setsid()  # own process group, as a spawned worker has: the pool may signal the group
        _replace_environ({**spec.env, PARENT_PID_ENV: str(zygote_pid)})
        _extend_sys_path(spec.env.get("PYTHONPATH", ""))
        if spec.cwd:
            os.chdir(spec.cwd)
        _set_process_name(f"dspyb-{spec.worker_id}")
        sys.argv = ["dspy_bridge.worker", "--mode", spec.mode, "--codec", spec.codec, "--worker-id", spec.worker_id]
        _reset_inherited_state(spec)
        from dspy_bridge.worker._main import run_worker

        run_worker(
            spec.mode,
            spec.codec,
            spec.worker_id,
            spec.max_concurrency,
            spec.max_frame_size,
        )
    except BaseException:
        with contextlib.suppress(Exception):
            traceback.print_exc()
            sys.stderr.flush()
    finally:
        os._exit(code)


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (ValueError, OSError):
        return 1024


def _replace_environ(env: dict[str, str]) -> None:
    """Make ``os.environ`` (and the C ``environ``) exactly ``env``, touching only what differs (each putenv costs).

    Whatever the zygote had and the client did not send goes, keys included. ``os.environb`` shares
    ``os.environ``'s data on POSIX; it is swept too in case an interpreter ever keeps them apart.
    """
    for name in [name for name in os.environ if name not in env]:
        del os.environ[name]
    for name, value in env.items():
        if os.environ.get(name) != value:
            os.environ[name] = value
    wanted = {os.fsencode(name) for name in env}
    for raw in [raw for raw in getattr(os, "environb", {}) if raw not in wanted]:
        del os.environb[raw]


def _extend_sys_path(pythonpath: str) -> None:
    """Give the child the host's import path, as a spawned worker gets through PYTHONPATH."""
    for entry in reversed([p for p in pythonpath.split(os.pathsep) if p]):
        if entry not in sys.path:
            sys.path.insert(0, entry)


def _set_process_name(name: str) -> None:
    """``ps -o comm`` shows which worker this is (PR_SET_NAME, at most 15 bytes)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(15, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def _reset_inherited_state(spec: SpawnSpec) -> None:
    """What a fork copies but a worker must own: random state, logging handlers, DSPy/litellm globals."""
    import random

    random.seed()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        with contextlib.suppress(Exception):
            numpy.random.seed()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    level = spec.env.get("DSPY_BRIDGE_WORKER_LOG", "WARNING").upper()
    logging.basicConfig(
        stream=sys.stderr,
        level=level if level in logging.getLevelNamesMapping() else "WARNING",
        format=f"%(asctime)s worker[{os.getpid()}] %(levelname)s %(name)s: %(message)s",
    )
    dspy = sys.modules.get("dspy")
    if dspy is not None and "cache" in vars(dspy):
        # The zygote should never build it (its SQLite connections must not cross a fork); if something
        # did, keep the inherited one alive and untouched and let DSPy lazily build a fresh one.
        _KEEPALIVE.append(vars(dspy).pop("cache"))
    settings = sys.modules.get("dspy.dsp.utils.settings")
    if settings is not None:
        for name in ("config_owner_thread_id", "config_owner_async_task"):
            if hasattr(settings, name):
                setattr(settings, name, None)
    litellm = sys.modules.get("litellm")
    clients = getattr(litellm, "in_memory_llm_clients_cache", None) if litellm is not None else None
    if clients is not None and hasattr(clients, "flush_cache"):
        with contextlib.suppress(Exception):
            clients.flush_cache()
