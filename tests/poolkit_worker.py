"""A mock worker with a few misbehaviours on request, for the pool tests.

Run as a script (the pool appends ``--mode mock --codec C --worker-id ID``). It is the real worker
(same ``run_worker``, same loop, same ``CassetteHandlers``) plus commands a healthy worker never
needs: ``sleep``, ``exit``, ``flaky``, ``raise``, ``garbage``, ``stray`` (a Response with an unknown id), ``whoami``. Environment switches
make it fail before its hello: ``POOLKIT_FAIL_FILE``/``POOLKIT_FAIL_IDS`` (exit 3 if that file exists or
this worker's id is listed), ``POOLKIT_HANG_FILE``/``POOLKIT_HANG_IDS`` (never say hello),
``POOLKIT_PROTOCOL`` (announce that version),
``POOLKIT_IGNORE_TERM`` (ignore SIGTERM and shutdown requests, to exercise SIGKILL),
``POOLKIT_NO_STREAM`` (an older worker: no ``stream`` capability, never sends chunks).
An ``execute_program`` whose inputs hold ``drip`` streams by hand (no program needed): ``{"chunks": [texts],
"field", "notify" (FIFO written after the chunks), "sleep", "fail" (error type after the chunks), "key" +
"fail_times" (fail that often before any chunk)}``.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

from dspy_bridge.protocol._taxonomy import ErrorType
from dspy_bridge.worker import _loop
from dspy_bridge.worker._base import HandlerFailure
from dspy_bridge.worker._main import parse_args, run_worker
from dspy_bridge.worker._mock import CassetteHandlers
from dspy_bridge.worker._process import protect_stdout, watch_parent
from dspy_bridge.worker._streaming import CHUNK_SINK


class MisbehavingHandlers(CassetteHandlers):
    def __init__(self, worker_id: str, frames_fd: int) -> None:
        super().__init__(worker_id)
        self.frames_fd = frames_fd
        self.flaky: dict[str, int] = {}

    def cmd_whoami(self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]) -> dict[str, Any]:
        return {"pid": os.getpid(), "worker_id": self.worker_id, "session_id": session_id}

    def cmd_sleep(self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]) -> dict[str, Any]:
        notify = args.get("notify")
        if isinstance(notify, str):  # a FIFO the test reads: "I am in the handler now"
            with open(notify, "w") as fifo:
                fifo.write("x")
        time.sleep(float(args.get("seconds", 0)))
        return {"slept": args.get("seconds", 0), "pid": os.getpid()}

    def cmd_exit(self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]) -> dict[str, Any]:
        message = args.get("stderr")
        if message:
            print(message, file=sys.stderr, flush=True)
        os._exit(int(args.get("code", 1)))

    def cmd_signal(self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]) -> dict[str, Any]:
        os.kill(os.getpid(), int(args.get("signal", signal.SIGKILL)))
        time.sleep(60)
        return {}

    def cmd_flaky(self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]) -> dict[str, Any]:
        key = str(args.get("key", ""))
        self.flaky[key] = self.flaky.get(key, 0) + 1
        if self.flaky[key] <= int(args.get("fail_times", 0)):
            raise HandlerFailure(
                ErrorType(args.get("type", "lm_rate_limited")),
                f"attempt {self.flaky[key]} fails on purpose",
                retryable=bool(args.get("retryable", True)),
            )
        return {"attempts": self.flaky[key], "pid": os.getpid()}

    def cmd_execute_program(
        self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]
    ) -> dict[str, Any]:
        drip = (args.get("inputs") or {}).get("drip")
        if not isinstance(drip, dict):
            return super().cmd_execute_program(args, session_id, context)
        key = str(drip.get("key", ""))
        self.flaky[key] = self.flaky.get(key, 0) + 1
        if self.flaky[key] <= int(drip.get("fail_times", 0)):
            raise HandlerFailure(ErrorType.LM_RATE_LIMITED, "no chunk yet, fails on purpose", retryable=True)
        sink = context.get(CHUNK_SINK)
        field = str(drip.get("field", "answer"))
        texts = [str(text) for text in drip.get("chunks", [])]
        for text in texts:
            if sink is not None:
                sink(field, text)
        notify = drip.get("notify")
        if isinstance(notify, str):
            with open(notify, "w") as fifo:
                fifo.write("x")
        time.sleep(float(drip.get("sleep", 0)))
        if drip.get("fail"):
            raise HandlerFailure(ErrorType(drip["fail"]), "fails after its chunks, on purpose", retryable=True)
        return {"outputs": {field: "".join(texts)}, "usage": {}, "attempts": self.flaky[key], "pid": os.getpid()}

    def cmd_raise(self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("a handler bug on purpose")

    def cmd_stray(self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]) -> dict[str, Any]:
        """Answer a request id nobody sent (a protocol violation), then keep the real request waiting."""
        import msgpack

        payload = msgpack.packb({"type": "response", "id": 987_654_321, "ok": True, "result": {}}, use_bin_type=True)
        os.write(self.frames_fd, len(payload).to_bytes(4, "big") + payload)
        time.sleep(60)
        return {}

    def cmd_garbage(self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]) -> dict[str, Any]:
        os.write(self.frames_fd, b"\x00\x00\x00\x05not-a-frame")
        time.sleep(60)
        return {}


def _switched(name: str, worker_id: str) -> bool:
    """``POOLKIT_<name>_FILE`` exists, or this worker's number is in ``POOLKIT_<name>_IDS`` (e.g. "w2,w3")."""
    path = os.environ.get(f"POOLKIT_{name}_FILE")
    if path and os.path.exists(path):
        return True
    ids = os.environ.get(f"POOLKIT_{name}_IDS", "")
    return worker_id.rsplit("-", 1)[-1] in ids.split(",")


def main() -> None:
    options = parse_args(sys.argv[1:])
    worker_id = options.worker_id or f"w{os.getpid()}"
    if _switched("FAIL", worker_id):
        print(f"poolkit worker {worker_id}: refusing to start on purpose", file=sys.stderr, flush=True)
        os._exit(3)
    if _switched("HANG", worker_id):
        watch_parent()
        time.sleep(3600)
    if os.environ.get("POOLKIT_PROTOCOL"):
        _loop.PROTOCOL_VERSION = os.environ["POOLKIT_PROTOCOL"]
    watch_parent()
    frames_fd = protect_stdout()
    handlers = MisbehavingHandlers(worker_id, frames_fd)
    if os.environ.get("POOLKIT_NO_STREAM"):
        handlers.extra_capabilities = ("cassettes", "stubs")
    if os.environ.get("POOLKIT_IGNORE_TERM"):
        handlers._commands.pop("shutdown", None)
        run_worker_ignoring_term(options, worker_id, frames_fd, handlers)
    run_worker(
        options.mode,
        options.codec,
        worker_id,
        options.max_concurrency,
        out_fd=frames_fd,
        handlers=handlers,
    )


def run_worker_ignoring_term(options: Any, worker_id: str, frames_fd: int, handlers: MisbehavingHandlers) -> None:
    """Serve, but ignore SIGTERM and stdin EOF (a wedged worker): only SIGKILL ends it."""
    from dspy_bridge.protocol._codec import get_codec
    from dspy_bridge.protocol._streams import FrameReader, FrameWriter

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    writer = FrameWriter(frames_fd, get_codec(options.codec))
    reader = FrameReader(0, get_codec(options.codec))
    writer.write(_loop.hello_message(handlers, options.codec))
    while True:
        message = reader.read()
        if message is None:
            time.sleep(3600)  # wedged: deaf to EOF
            continue
        if message.get("command") == "shutdown":
            continue  # deaf to shutdown
        writer.write(_loop.answer(handlers, message))


if __name__ == "__main__":
    main()
