"""``python -m dspy_bridge.worker``: parse options, harden the process, load a handler set, serve."""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
from types import FrameType, SimpleNamespace

TYPE_CHECKING = False  # typing stays off the mock worker's start-up path
if TYPE_CHECKING:
    from typing import Any

from dspy_bridge.protocol._codec import CODECS, get_codec
from dspy_bridge.protocol._frames import DEFAULT_MAX_FRAME_SIZE
from dspy_bridge.protocol._streams import FrameReader, FrameWriter
from dspy_bridge.worker._base import BaseHandlers
from dspy_bridge.worker._process import exit_now, protect_stdout, watch_parent

__all__ = ["build_handlers", "main", "run_worker"]


class _Terminate(SystemExit):
    """Raised from the SIGTERM handler to leave a blocking read or a handler promptly.

    A ``SystemExit``: when the signal lands inside an asyncio callback (DSPy's LM call runs an event loop),
    asyncio re-raises ``SystemExit``/``KeyboardInterrupt`` but logs and swallows any other exception, which
    left the worker running its call instead of saying goodbye (seen once in the tests-lowest run)."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminate


def build_handlers(mode: str, worker_id: str) -> BaseHandlers:
    """Import only what the mode needs: DSPy for real workers, nothing heavy for mock ones."""
    if mode == "real":
        from dspy_bridge.worker._real import DSPyHandlers

        return DSPyHandlers(worker_id)
    from dspy_bridge.worker._mock import CassetteHandlers

    return CassetteHandlers(worker_id)


_OPTIONS = {
    "--mode": ("mode", str),
    "--codec": ("codec", str),
    "--worker-id": ("worker_id", str),
    "--max-concurrency": ("max_concurrency", int),
    "--max-frame-size": ("max_frame_size", int),
    "--log-level": ("log_level", str),
}


def _parse_fast(argv: list[str]) -> SimpleNamespace | None:
    """Parse the pool's own command line without argparse (whose set-up costs a mock worker ~5 ms).

    Returns ``None`` for anything unusual (help, typos, bad values), so argparse reports it properly.
    """
    values: dict[str, object] = {
        "mode": "mock",
        "codec": "msgpack",
        "worker_id": None,
        "max_concurrency": 1,
        "max_frame_size": DEFAULT_MAX_FRAME_SIZE,
        "log_level": os.environ.get("DSPY_BRIDGE_WORKER_LOG", "WARNING"),
    }
    items = iter(argv)
    for item in items:
        name, _, inline = item.partition("=")
        option = _OPTIONS.get(name)
        if option is None:
            return None
        raw = inline if inline else next(items, None)
        if raw is None or (option[1] is int and not raw.isdigit()):
            return None
        values[option[0]] = option[1](raw)
    if values["mode"] not in ("real", "mock") or values["codec"] not in CODECS:
        return None
    return SimpleNamespace(**values)


def parse_args(argv: list[str] | None = None) -> Any:
    fast = _parse_fast(sys.argv[1:] if argv is None else argv)
    if fast is not None:
        return fast
    import argparse as full_argparse

    parser = full_argparse.ArgumentParser(prog="python -m dspy_bridge.worker", description=__doc__)
    parser.add_argument("--mode", choices=("real", "mock"), default="mock")
    parser.add_argument("--codec", choices=sorted(CODECS), default="msgpack")
    parser.add_argument("--worker-id", default=None)
    parser.add_argument("--max-concurrency", type=int, default=1, help="requests served at once (threads)")
    parser.add_argument("--max-frame-size", type=int, default=DEFAULT_MAX_FRAME_SIZE)
    parser.add_argument("--log-level", default=os.environ.get("DSPY_BRIDGE_WORKER_LOG", "WARNING"))
    return parser.parse_args(argv)


def run_worker(
    mode: str,
    codec: str,
    worker_id: str,
    max_concurrency: int = 1,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    *,
    in_fd: int = 0,
    out_fd: int | None = None,
    handlers: BaseHandlers | None = None,
) -> None:
    """Serve one worker on ``in_fd``/``out_fd`` and leave by ``os._exit`` (never returns)."""
    from dspy_bridge.worker._loop import serve

    faulthandler.enable(file=sys.stderr)
    frames_fd = protect_stdout() if out_fd is None else out_fd
    signal.signal(signal.SIGTERM, _on_sigterm)
    reason = "error"
    writer = FrameWriter(frames_fd, get_codec(codec), max_frame_size)
    try:
        handlers = handlers or build_handlers(mode, worker_id)
        reader = FrameReader(in_fd, get_codec(codec), max_frame_size)
        reason = serve(reader, writer, handlers, max_concurrency)
    except _Terminate:
        reason = "sigterm"
    except Exception:
        import logging

        logging.getLogger("dspy_bridge.worker").exception("worker %s failed", worker_id)
        exit_now(1)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if reason not in ("host_gone",):
        try:
            writer.write({"type": "goodbye", "worker_id": worker_id, "pid": os.getpid(), "reason": reason})
        except OSError:
            pass
    exit_now(0 if reason in ("eof", "shutdown", "sigterm", "host_gone") else 1)


def main(argv: list[str] | None = None) -> None:
    options = parse_args(argv)
    if options.mode == "real" or "DSPY_BRIDGE_WORKER_LOG" in os.environ:
        # Mock workers skip this (~10 ms): their rare warnings reach stderr through logging's last resort.
        import logging

        logging.basicConfig(
            stream=sys.stderr,
            level=options.log_level.upper(),
            format=f"%(asctime)s worker[{os.getpid()}] %(levelname)s %(name)s: %(message)s",
        )
    watch_parent()
    worker_id = options.worker_id or f"w{os.getpid()}"
    run_worker(options.mode, options.codec, worker_id, options.max_concurrency, options.max_frame_size)
