"""The zygote: import DSPy once, then fork ready-to-serve workers in milliseconds.

Run as ``python -m dspy_bridge.worker.zygote``. Modelled on CPython's ``multiprocessing.forkserver``
(descriptors travel over a Unix socket with SCM_RIGHTS), reduced to what a worker pool needs::

    host (ZygoteLauncher)                 zygote (one thread)                  worker (forked child)
    ─────────────────────                 ───────────────────                  ─────────────────────
    hello{fingerprint?}   ──control──▶    ready{pid, preloaded} | refused{why}
    3 × pipe();
    spawn{req, worker_id, mode, codec, env, cwd}
      + SCM_RIGHTS[stdin_r, stdout_w, stderr_w] ──▶ fork() ─────────────────▶ dup2 → fds 0/1/2, close the rest,
                          ◀── spawned{req, pid} + SCM_RIGHTS[pidfd]           reseed random, reset logging and
    frames on the pipes  ◀───────────────────────────────────────────────────▶ DSPy state, PDEATHSIG, run_worker()
                          ◀── exit{pid, returncode}   (SIGCHLD → waitpid)

The wire format is ``dspy_bridge.protocol._zygote`` (spoken by this side and by the host's
``dspy_bridge.pool._zygote``). The control channel is either one end of a socketpair (``--fd N``: a zygote
owned by one host) or a listening socket (``--listen PATH`` or ``--listen-fd N``: the warm daemon, one
connection per host run; the host side controls it through ``dspy_bridge.pool._daemon``, and where it listens
and whom it serves are ``dspy_bridge.protocol._rendezvous`` and ``_fingerprint``).

This module is the entry point; the duties live beside it: ``_fork_server`` (the ``select`` loop, clients,
lifetimes), ``_fork_child`` (what a child does after ``fork()``), ``_preload`` (imports and fork-safety checks).

Lifetimes. Owned: the zygote exits when its socket reaches EOF (the host closed it or died) and has the
parent-death signal armed; before exiting it SIGKILLs its children. Daemon: when a client disconnects, that
client's children are SIGKILLed (nobody is left to read their answers); the daemon exits on ``stop``,
SIGTERM, or after ``--idle-timeout`` seconds with neither clients nor children. Children: the parent-death
signal kills them with the zygote; EOF on stdin ends an idle worker.

Keys: the zygote's environment holds none (the host builds it with ``pool._spawn.worker_environment``; a
zygote started by hand with a key variable re-executes itself without it first), and every child's
``os.environ`` becomes exactly the environment its client sent (``_fork_child``), which holds none either.

Fork hygiene: the zygote starts no threads (checked before every fork: ``threading.active_count()`` and
``/proc/self/task``, which also sees native pools such as OpenBLAS's — so the zygote pins
``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` to 1 unless they are set), never touches
``dspy.cache`` (DSPy builds it, with its SQLite files, lazily), runs with the collector disabled and calls
``gc.freeze()`` before forking so that children keep sharing its pages.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import socket
import sys

from dspy_bridge._secrets import child_environment, is_secret_env_name
from dspy_bridge.protocol._fingerprint import environment_fingerprint
from dspy_bridge.protocol._rendezvous import listen
from dspy_bridge.protocol._zygote import DEFAULT_PRELOAD
from dspy_bridge.worker._fork_server import Zygote
from dspy_bridge.worker._preload import THREAD_POOL_ENV, thread_report, warm_dspy

__all__ = ["Zygote", "main", "thread_report", "warm_dspy"]  # warm_dspy: named by DEFAULT_PRELOAD

log = logging.getLogger("dspy_bridge.zygote")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dspy_bridge.worker.zygote", description=__doc__.split("\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--fd", type=int, help="inherited socketpair end: a zygote owned by one host")
    where.add_argument("--listen", help="daemon: path of the Unix socket to create (mode 0600)")
    where.add_argument("--listen-fd", type=int, help="daemon: an already listening SOCK_SEQPACKET socket")
    parser.add_argument(
        "--preload",
        default=",".join(DEFAULT_PRELOAD),
        help="comma-separated modules to import once (default: %(default)s; add litellm if the LM needs it)",
    )
    parser.add_argument("--parent-pid", type=int, help="owned zygote: exit if this process is not our parent")
    parser.add_argument("--idle-timeout", type=float, default=None, help="daemon: exit after this many idle seconds")
    parser.add_argument("--ready-fd", type=int, help="daemon: write one line to this descriptor once serving")
    parser.add_argument("--daemonize", action="store_true", help="daemon: fork, let the parent exit, new session")
    parser.add_argument("--log-level", default=os.environ.get("DSPY_BRIDGE_ZYGOTE_LOG", "INFO"))
    return parser.parse_args(argv)


def _exec_without_keys() -> None:
    """If we were started with a key variable in our environment, start again without it.

    A forked child inherits our memory, including the environment block the kernel gave us at exec
    (``/proc/<child>/environ`` shows it), so unsetting a variable is not enough: the pool and
    ``daemon_start`` never give us a key, but someone starting a zygote by hand from a shell that holds
    one would leak it into every worker. ``execve`` (same pid, same inherited descriptors) replaces that
    block before anything is imported.
    """
    if any(is_secret_env_name(name) for name in os.environ):
        sys.stderr.flush()
        os.execve(sys.executable, sys.orig_argv, child_environment(os.environ))


def main(argv: list[str] | None = None) -> None:
    if argv is None:
        _exec_without_keys()
    options = _parse_args(argv)
    if options.daemonize:
        if os.fork():
            os._exit(0)  # the starter reaps this parent at once; the daemon is adopted by init (or a subreaper)
        os.setsid()
    gc.disable()  # from here on: no collection frees holes in pages the children will share
    logging.basicConfig(
        stream=sys.stderr,
        level=options.log_level.upper(),
        format=f"%(asctime)s zygote[{os.getpid()}] %(levelname)s %(message)s",
    )
    import faulthandler

    faulthandler.enable()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    for name in THREAD_POOL_ENV:  # numpy's OpenBLAS would start a thread pool at import (explicit values win)
        os.environ.setdefault(name, "1")
    preload = tuple(name.strip() for name in options.preload.split(",") if name.strip())
    if options.fd is not None:
        from dspy_bridge.worker._process import watch_parent

        watch_parent(expected_parent=options.parent_pid)
        zygote = Zygote(owned=socket.socket(fileno=options.fd), preload=preload)
    else:
        listener = socket.socket(fileno=options.listen_fd) if options.listen_fd is not None else listen(options.listen)
        zygote = Zygote(
            listener=listener,
            idle_timeout=options.idle_timeout,
            fingerprint=environment_fingerprint(),
            preload=preload,
        )
    zygote.install_signals()
    zygote.import_preload()
    python_threads, tasks = thread_report()
    if python_threads != 1 or tasks != 1:
        log.error("preload started threads (%d Python, %d kernel tasks): forks will be refused", python_threads, tasks)
    log.info("ready: preloaded %s in %.2f s", ",".join(zygote.preloaded) or "nothing", zygote.import_seconds)
    if options.ready_fd is not None:
        with contextlib.suppress(OSError):
            os.write(options.ready_fd, f"ready {os.getpid()}\n".encode())
        os.close(options.ready_fd)
    zygote.check_fds()
    sys.exit(zygote.serve())


if __name__ == "__main__":
    main()
