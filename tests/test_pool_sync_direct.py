"""SyncPool's direct lane: blocking requests on the caller's thread keep every pool rule the loop path keeps.

Each test checks that the lane really carried the request (the worker's ``served_direct`` count or the pool's
``direct_counters``), then that the outcome is what the asyncio path gives: affinity and replay, the same
``WorkerCrashed`` for a crash mid-request, the timeout's kill and replacement, the breaker, protocol errors.
"""

from __future__ import annotations

import os
import re
import signal
import threading

import pytest

from dspy_bridge import CircuitOpen, RequestTimeout, WorkerCrashed
from dspy_bridge._exceptions import ProtocolError
from dspy_bridge.pool import PoolConfig, PoolEvent, SyncPool
from poolkit import HANG_GUARD, ProcessRecord, poolkit_command

CRASH_MESSAGE = re.compile(r"worker \S+ \(pid \d+\) exited with code 7 while request \d+ \(exit\) was in flight")


def config(**options: object) -> PoolConfig:
    return PoolConfig.model_validate(
        {"mode": "mock", "start_strategy": "spawn", "worker_command": poolkit_command(), **options}
    )


class Events:
    """Pool events seen on the loop thread; ``wait_for`` blocks the test thread until enough arrived."""

    def __init__(self, pool: SyncPool) -> None:
        self.kinds: list[str] = []
        self._changed = threading.Condition()
        pool.add_listener(self)

    def __call__(self, event: PoolEvent) -> None:
        with self._changed:
            self.kinds.append(event.kind)
            self._changed.notify_all()

    def wait_for(self, kind: str, number: int = 1) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: self.kinds.count(kind) >= number, HANG_GUARD), self.kinds


def served_direct(pool: SyncPool, pid: int) -> int:
    return next(handle.served_direct for handle in pool.pool.workers() if handle.pid == pid)


def test_a_session_stays_on_its_worker_and_its_state_is_replayed_after_a_crash() -> None:
    with SyncPool(config(size=2, request_timeout=30.0)) as pool:
        events = Events(pool)
        pool.configure_lm("gemini/gemini-2.5-flash", session_id="a")
        program = pool.create_program("question -> answer", session_id="a")
        pool.stub(program, {"answer": "4"}, session_id="a")
        pids = {pool.request("whoami", session_id="a")["pid"] for _ in range(5)}
        other = pool.request("whoami", session_id="b")["pid"]
        assert len(pids) == 1 and other not in pids  # pinned; a new session goes to the less loaded worker
        pinned = pids.pop()
        assert served_direct(pool, pinned) >= 8  # configure, create, stub, 5 × whoami: none hopped to the loop
        assert pool.execute(program, {"question": "2+2?"}, session_id="a")["outputs"] == {"answer": "4"}

        os.kill(pinned, signal.SIGKILL)
        events.wait_for("worker_replaced")
        # re-pinned through the loop with its history replayed: the program and its stub are back
        assert pool.execute(program, {"question": "2+2?"}, session_id="a")["outputs"] == {"answer": "4"}
        assert pool.request("whoami", session_id="a")["pid"] != pinned
        assert pool.stats().repins == 1
        assert pool.close_session("a") is True and pool.close_session("a") is False


def test_a_crash_mid_request_raises_what_the_async_path_raises() -> None:
    with SyncPool(config(size=1, request_timeout=30.0)) as pool:
        events = Events(pool)
        pool.request("whoami", session_id="s")
        with pytest.raises(WorkerCrashed) as direct:
            pool.request("exit", {"code": 7, "stderr": "last words"}, session_id="s")
        assert pool.pool.direct_counters.failures == 1  # it was the lane that failed it
        events.wait_for("worker_replaced")
        pool.request("whoami", session_id="t")
        with pytest.raises(WorkerCrashed) as through_loop:
            pool.submit("exit", {"code": 7, "stderr": "last words"}, session_id="t").result(HANG_GUARD)
    for caught, session in ((direct.value, "s"), (through_loop.value, "t")):
        assert CRASH_MESSAGE.search(str(caught)), caught
        assert caught.exit_code == 7 and caught.signal_name is None and "last words" in caught.stderr_tail
        assert caught.session_id == session and caught.request_id is not None and caught.worker_pid is not None


def test_a_request_past_its_timeout_kills_and_replaces_the_worker() -> None:
    with SyncPool(config(size=1, request_timeout=30.0)) as pool:
        events = Events(pool)
        stuck = pool.request("whoami", session_id="s")["pid"]
        with pytest.raises(RequestTimeout, match=r"got no answer within 0\.3 s") as caught:
            pool.request("sleep", {"seconds": 60}, session_id="s", timeout=0.3)
        assert caught.value.session_id == "s" and caught.value.request_id is not None
        events.wait_for("worker_replaced")
        assert "request_timeout" in events.kinds and not ProcessRecord(stuck).exists()
        assert pool.stats().timeouts == 1
        assert pool.request("whoami", session_id="s")["pid"] != stuck


def test_crashes_on_the_direct_lane_open_the_breaker() -> None:
    with SyncPool(config(size=1, breaker_threshold=2, breaker_window=60, breaker_reset=60)) as pool:
        events = Events(pool)
        for crash in (1, 2):  # back to back: an answered request in between would end the failure streak
            if crash == 2:
                events.wait_for("worker_replaced")
            with pytest.raises(WorkerCrashed):
                pool.request("exit", {"code": 7}, session_id=f"s{crash}")  # a new session, pinned on the lane
        events.wait_for("breaker_opened")
        with pytest.raises(CircuitOpen):
            pool.request("whoami", session_id="s3")
        assert pool.stats().breaker_state == "open" and pool.pool.direct_counters.failures == 2


@pytest.mark.parametrize(("command", "why"), [("garbage", "invalid frame"), ("stray", "not in flight")])
def test_a_broken_frame_read_on_the_lane_kills_the_worker(command: str, why: str) -> None:
    with SyncPool(config(size=1, request_timeout=30.0)) as pool:
        events = Events(pool)
        liar = pool.request("whoami", session_id="s")["pid"]
        with pytest.raises(WorkerCrashed, match=why) as caught:
            pool.request(command, session_id="s")
        assert isinstance(caught.value.__cause__, ProtocolError)
        events.wait_for("worker_replaced")
        assert pool.request("whoami", session_id="s")["pid"] != liar


def test_the_lane_hands_the_loops_answers_over(tmp_path: os.PathLike[str]) -> None:
    """An async request in flight on the same worker: the lane reads its answer and gives it to the loop."""
    with SyncPool(config(size=1, request_timeout=30.0)) as pool:
        pid = pool.request("whoami", session_id="s")["pid"]
        fifo = os.path.join(tmp_path, "in-handler")
        os.mkfifo(fifo)
        slow = pool.submit("sleep", {"seconds": 0.2, "notify": fifo}, session_id="s")
        wait_written(fifo)  # the loop sent it and the worker runs it: its answer comes while the lane reads
        before = served_direct(pool, pid)
        assert pool.request("whoami", session_id="s")["pid"] == pid
        assert served_direct(pool, pid) == before + 1
        assert slow.result(HANG_GUARD)["slept"] == 0.2


def wait_written(path: str) -> None:
    """Block until a process wrote to the FIFO at ``path`` (select with the hang guard, no sleeping)."""
    import select

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while True:
            assert poller.poll(HANG_GUARD * 1000), "nobody wrote to the FIFO"
            if os.read(fd, 64):
                return
    finally:
        os.close(fd)


class Interrupted(Exception):
    """Raised by the test's SIGALRM handler, as KeyboardInterrupt would be by Ctrl-C."""


def test_a_caller_interrupted_mid_wait_leaves_the_worker_healthy() -> None:
    """The abandoned request's late answer is read by the next one and dropped, not taken for a protocol error."""

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted

    with SyncPool(config(size=1, request_timeout=30.0)) as pool:
        pid = pool.request("whoami", session_id="s")["pid"]
        previous = signal.signal(signal.SIGALRM, interrupt)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.1)
            with pytest.raises(Interrupted):
                pool.request("sleep", {"seconds": 0.3}, session_id="s")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        assert pool.request("whoami", session_id="s")["pid"] == pid  # read past the late answer
        # the loop has been handed that answer by now; the next request through it finds the worker trusted
        assert pool.submit("whoami", session_id="s").result(HANG_GUARD)["pid"] == pid
        assert pool.stats().crashes == 0 and ProcessRecord(pid).alive()
