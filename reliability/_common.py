"""What every probe shares: its result, a planted secret, raw worker pipes, process and environment scans."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dspy_bridge.protocol._codec import get_codec
from dspy_bridge.protocol._streams import FrameReader, FrameWriter

#: A key-shaped value planted in the host's environment: no worker environment and no file may hold it.
PLANTED_KEY = "AI" + "za" + "Sy" + "R3l1ab1l1tyPr0beK3yXXXXXXXXXXXXXXX"


@dataclasses.dataclass
class ProbeResult:
    name: str
    tried: str  # what was tried, in words
    count: int  # how many attempts (frames, requests, cycles, files)
    failed: int  # how many went wrong
    notes: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failed == 0


def plant_key() -> None:
    os.environ["GEMINI_API_KEY"] = PLANTED_KEY


def worker_command(mode: str = "mock", codec: str = "msgpack") -> list[str]:
    return [
        sys.executable,
        "-S",
        "-c",
        "from dspy_bridge.worker._main import main; main()",
        "--mode",
        mode,
        "--codec",
        codec,
        "--worker-id",
        "probe",
    ]


def child_env() -> dict[str, str]:
    from dspy_bridge._secrets import child_environment

    env = dict(child_environment(os.environ))
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


class RawWorker:
    """One mock worker on raw pipes: write any bytes, read frames (blocking, with a deadline)."""

    def __init__(self, codec: str = "msgpack") -> None:
        self.codec = get_codec(codec)
        self.proc = subprocess.Popen(
            worker_command("mock", codec),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_env(),
            bufsize=0,
        )
        assert self.proc.stdin and self.proc.stdout and self.proc.stderr
        os.set_blocking(self.proc.stderr.fileno(), False)
        self.reader = FrameReader(self.proc.stdout.fileno(), self.codec)
        self.writer = FrameWriter(self.proc.stdin.fileno(), self.codec)
        self.stderr_bytes = 0
        hello = self.read()
        assert hello is not None and hello.get("type") == "hello", hello

    def read(self) -> dict[str, Any] | None:
        return self.reader.read()

    def send_raw(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)

    def drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        try:
            while chunk := self.proc.stderr.read(1 << 16):
                self.stderr_bytes += len(chunk)
        except (BlockingIOError, TypeError):
            pass

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def descendants(pid: int | None = None) -> list[int]:
    """Every live process whose parent chain leads to ``pid`` (default: this process)."""
    root = os.getpid() if pid is None else pid
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
                if fields[0] != "Z":
                    parents[int(entry)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [root]
    while frontier:
        current = frontier.pop()
        children = [child for child, parent in parents.items() if parent == current]
        found += children
        frontier += children
    return found


def environ_holds_key(pid: int) -> bool | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return PLANTED_KEY.encode() in handle.read()
    except OSError:
        return None


def files_holding_key(root: Path) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            try:
                if PLANTED_KEY.encode() in path.read_bytes():
                    found.append(path)
            except OSError:
                continue
    return found


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if _exists(pid)]
        if alive:
            time.sleep(0.05)
    return alive


def _exists(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
