"""Test helper: start a real worker subprocess and talk frames to it, synchronously.

``WorkerProc`` spawns ``python -m dspy_bridge.worker`` (or the ``-S`` fast form the pool uses)
with real pipes, reads frames on a background thread with the protocol's ``FrameReader`` (so a
test never blocks forever on a silent worker: every wait has a generous hang guard, not a
timing assertion) and writes them with ``FrameWriter``. stderr is drained on another thread
so a chatty worker can never fill the pipe and stall.

    with WorkerProc("mock") as worker:
        assert worker.hello["mode"] == "mock"
        assert worker.call("ping")["status"] == "ok"
        error = worker.error("execute_program", {"program_id": "nope"})
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Self

from dspy_bridge.protocol._codec import get_codec
from dspy_bridge.protocol._streams import FrameReader, FrameWriter

__all__ = ["HANG_GUARD", "WorkerProc", "fast_worker_command", "worker_env"]

HANG_GUARD = 60.0  # seconds: only ever reached when something is broken; no test measures time
_EOF = object()


def worker_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A worker environment with no real provider keys in it and no network for pricing data."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.endswith("_API_BASE")}
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    env["DSPY_BRIDGE_PARENT_PID"] = str(os.getpid())
    env.update(extra or {})
    return env


def fast_worker_command(prelude: str = "") -> list[str]:
    """``python -S -c`` start (as the pool builds it): skips site processing, so PYTHONPATH is set."""
    code = (
        f"{prelude}\nfrom dspy_bridge.worker._main import main; main()"
        if prelude
        else ("from dspy_bridge.worker._main import main; main()")
    )
    return [sys.executable, "-S", "-c", code]


class WorkerProc:
    """One worker subprocess plus a frame reader thread and a stderr drain."""

    def __init__(
        self,
        mode: str = "mock",
        codec: str = "msgpack",
        *,
        max_concurrency: int = 1,
        worker_id: str = "test-worker",
        env: Mapping[str, str] | None = None,
        prelude: str = "",
        extra_args: Sequence[str] = (),
        fast: bool = True,
    ) -> None:
        self.codec = get_codec(codec)
        args = ["--mode", mode, "--codec", codec, "--worker-id", worker_id, "--max-concurrency", str(max_concurrency)]
        args += list(extra_args)
        full_env = worker_env(env)
        if fast:
            command = fast_worker_command(prelude) + args
            full_env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        else:
            assert not prelude, "a prelude needs the -c form (fast=True)"
            command = [sys.executable, "-m", "dspy_bridge.worker", *args]
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env, bufsize=0
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None and self.proc.stderr is not None
        self.writer = FrameWriter(self.proc.stdin.fileno(), self.codec)
        self.reader = FrameReader(self.proc.stdout.fileno(), self.codec)
        self._frames: queue.Queue[Any] = queue.Queue()
        self._stderr: list[bytes] = []
        self._stderr_done = threading.Event()
        self._stderr_grew = threading.Condition()
        self._next_id = 1
        self.outstanding: set[int] = set()  # ids sent but not yet answered
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._read_frames, name="worker-frames", daemon=True),
            threading.Thread(target=self._drain_stderr, name="worker-stderr", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        hello = self.read()
        assert hello is not None and hello.get("type") == "hello", (hello, self.stderr_text())
        self.hello: dict[str, Any] = hello

    # -- background threads -----------------------------------------------------------------
    def _read_frames(self) -> None:
        try:
            while True:
                payload = self.reader.read_payload()
                if payload is None:
                    break
                self._frames.put(self.codec.loads(payload))
        except Exception as exc:  # handed to the test: a corrupt stream must fail it loudly
            self._frames.put(exc)
        self._frames.put(_EOF)

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        while chunk := os.read(fd, 65536):
            with self._stderr_grew:
                self._stderr.append(chunk)
                self._stderr_grew.notify_all()
        self._stderr_done.set()
        with self._stderr_grew:
            self._stderr_grew.notify_all()

    # -- frames -----------------------------------------------------------------------------
    def read(self, timeout: float = HANG_GUARD) -> dict[str, Any] | None:
        """The next frame from the worker, or ``None`` once its stdout is closed."""
        try:
            item = self._frames.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"worker sent nothing for {timeout}s; stderr:\n{self.stderr_text()}") from None
        if item is _EOF:
            self._frames.put(_EOF)  # stay at EOF for later reads
            return None
        if isinstance(item, Exception):
            raise item
        assert isinstance(item, dict)
        if item.get("type") == "response":
            self.outstanding.discard(item.get("id"))
        return item

    def new_id(self) -> int:
        with self._lock:
            request_id = self._next_id
            self._next_id += 1
            return request_id

    def send(
        self,
        command: str,
        args: Mapping[str, Any] | None = None,
        *,
        session_id: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> int:
        """Write one request frame; return its id."""
        request_id = self.new_id()
        message: dict[str, Any] = {"type": "request", "id": request_id, "command": command, "args": dict(args or {})}
        if session_id is not None:
            message["session_id"] = session_id
        if context is not None:
            message["context"] = dict(context)
        self.outstanding.add(request_id)
        self.writer.write(message)
        return request_id

    def send_message(self, message: dict[str, Any]) -> None:
        self.writer.write(message)

    def send_raw(self, data: bytes) -> None:
        """Bytes straight onto the worker's stdin (for hostile-input tests)."""
        assert self.proc.stdin is not None
        os.write(self.proc.stdin.fileno(), data)

    def request(
        self,
        command: str,
        args: Mapping[str, Any] | None = None,
        *,
        session_id: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Send one request and return its response frame (requests must not be pipelined here)."""
        request_id = self.send(command, args, session_id=session_id, context=context)
        response = self.read()
        assert response is not None, f"worker closed its stdout; stderr:\n{self.stderr_text()}"
        assert response.get("type") == "response" and response.get("id") == request_id, response
        return response

    def call(self, command: str, args: Mapping[str, Any] | None = None, **kw: Any) -> Any:
        """The result of a request that must succeed."""
        response = self.request(command, args, **kw)
        assert response["ok"] is True, response
        return response["result"]

    def error(self, command: str, args: Mapping[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        """The error map of a request that must fail."""
        response = self.request(command, args, **kw)
        assert response["ok"] is False, response
        error = response["error"]
        assert isinstance(error, dict)
        return error

    # -- lifecycle --------------------------------------------------------------------------
    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        if not self.proc.stdin.closed:
            self.proc.stdin.close()

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = HANG_GUARD) -> int:
        return self.proc.wait(timeout)

    def read_until_goodbye(self) -> dict[str, Any]:
        """Skip to the Goodbye frame (responses still in flight may come first)."""
        while True:
            frame = self.read()
            assert frame is not None, f"worker exited without a goodbye; stderr:\n{self.stderr_text()}"
            if frame.get("type") == "goodbye":
                return frame

    def stderr_text(self, *, wait: bool = False) -> str:
        """What the worker wrote to stderr so far (``wait=True``: all of it, after it exited)."""
        if wait:
            self._stderr_done.wait(HANG_GUARD)
        return b"".join(self._stderr).decode("utf-8", "replace")

    def wait_for_stderr(self, text: str, timeout: float = HANG_GUARD) -> str:
        """Block until ``text`` has appeared on the worker's stderr; return all of stderr so far."""

        def seen() -> bool:
            return text in self.stderr_text() or self._stderr_done.is_set()

        with self._stderr_grew:
            self._stderr_grew.wait_for(seen, timeout)
        output = self.stderr_text()
        assert text in output, f"{text!r} never reached stderr:\n{output}"
        return output

    def close(self) -> None:
        """EOF, then reap; kill only if the worker ignores EOF."""
        if self.proc.poll() is None:
            try:
                self.close_stdin()
                self.proc.wait(HANG_GUARD)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for thread in self._threads:  # both end at EOF, which the exit guarantees
            thread.join(HANG_GUARD)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None and not stream.closed:
                try:
                    stream.close()
                except OSError:
                    pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
