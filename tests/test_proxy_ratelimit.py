"""Rate limits while recording: the proxy honours a 429's RetryInfo (real Gemini sends no Retry-After),
and a spent quota ends upstream calls with one message naming it. The fake Gemini sends real-shaped
429s with a small ``retryDelay`` so the waits stay short."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dspy_bridge._gemini import gemini_error_body, quota_details
from dspy_bridge._pytest._summary import RunReport
from dspy_bridge.proxy import ERROR_HEADER, ProxyProcess
from dspy_bridge.proxy._ratelimit import RateLimiter, RateLimitPolicy
from dspy_bridge.proxy._session import Exchange
from dspy_bridge.testing import Fail, FakeGemini
from test_proxy import GENERATE, KEY, error_of, gemini_body, post

DAILY = "GenerateRequestsPerDayPerProjectPerModel-FreeTier"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeGemini]:
    with FakeGemini(expected_key=KEY) as server:
        yield server


@pytest.fixture(scope="module")
def proxy(fake: FakeGemini) -> Iterator[ProxyProcess]:
    with ProxyProcess(upstream=fake.base_url, api_key=KEY, rate_limit_max_wait=5, rate_limit_retries=1) as running:
        yield running


@pytest.fixture(autouse=True)
def _clean(fake: FakeGemini) -> None:
    fake.reset()


def _codes(path: Path) -> list[int]:
    return [i["response"]["status"]["code"] for i in yaml.safe_load(path.read_text())["interactions"]]


def test_a_short_retry_delay_is_waited_out_and_only_the_answer_is_recorded(
    fake: FakeGemini, proxy: ProxyProcess, tmp_path: Path
) -> None:
    fake.script(Fail(429, retry_after=0.2), {"answer": "4"})
    proxy.use_cassette(tmp_path / "c.yaml", record_mode="once")
    status, _, _ = post(proxy.port, GENERATE, gemini_body())
    report = proxy.eject()
    assert status == 200 and fake.request_count == 2  # the worker never saw the 429
    assert _codes(tmp_path / "c.yaml") == [200]
    assert len(report.rate_limits) == 1 and "waited 0.2 s" in report.rate_limits[0]
    assert "GenerateRequestsPerMinutePerProjectPerModel-FreeTier" in report.rate_limits[0]
    assert report.quota_spent == ""


def test_when_the_waits_run_out_the_worker_gets_the_429_with_a_retry_after(
    fake: FakeGemini, proxy: ProxyProcess, tmp_path: Path
) -> None:
    fake.script(Fail(429, retry_after=0.2), Fail(429, retry_after=0.2))
    proxy.use_cassette(tmp_path / "c.yaml", record_mode="once")
    status, headers, body = post(proxy.port, GENERATE, gemini_body())
    report = proxy.eject()
    assert (status, headers["retry-after"], fake.request_count) == (429, "1", 2)  # 0.2 s rounded up
    assert ERROR_HEADER not in headers and error_of(body)["details"][-1]["retryDelay"] == "0.2s"  # the live answer
    assert not (tmp_path / "c.yaml").exists() and "answered 429" in report.not_recorded[0]


def test_a_spent_quota_stops_upstream_calls_with_one_message_naming_it(fake: FakeGemini, tmp_path: Path) -> None:
    replayable = tmp_path / "old.yaml"
    with ProxyProcess(upstream=fake.base_url, api_key=KEY) as proxy:
        proxy.use_cassette(replayable, record_mode="once")
        post(proxy.port, GENERATE, gemini_body("recorded before"))
        proxy.eject()
        fake.reset()
        fake.enqueue(Fail(429, retry_after=0.2, quota_id=DAILY))
        proxy.use_cassette(tmp_path / "new.yaml", record_mode="new_episodes")
        answers = [post(proxy.port, GENERATE, gemini_body(f"question {n}")) for n in range(3)]
        first = proxy.eject()
        proxy.use_cassette(replayable, record_mode="new_episodes")
        replayed = post(proxy.port, GENERATE, gemini_body("recorded before"))
        refused = post(proxy.port, GENERATE, gemini_body("not recorded yet"))
        second = proxy.eject()
    assert fake.request_count == 1  # one upstream 429, then nothing more went upstream
    for status, headers, body in answers:
        assert (status, headers[ERROR_HEADER], headers["retry-after"]) == (429, "quota-spent", "0")
        assert DAILY in error_of(body)["message"] and "dspy-bridge cassette proxy" in error_of(body)["message"]
    assert DAILY in first.quota_spent and "per-day quota" in first.quota_spent and first.quota_refused == 3
    assert not (tmp_path / "new.yaml").exists()
    assert replayed[0] == 200 and refused[1][ERROR_HEADER] == "quota-spent"  # replays still work
    assert second.quota_spent == first.quota_spent and second.quota_refused == 1


# ─── The policy, without processes ──────────────────────────────────────────


def _limited(delay: float | None, quota_id: str = "GenerateRequestsPerMinutePerProjectPerModel-FreeTier") -> Exchange:
    body = gemini_error_body(429, details=quota_details("m", quota_id=quota_id), retry_after=delay)
    return Exchange(
        "forwarded", 429, "Too Many Requests", [("Content-Type", "application/json")], json.dumps(body).encode()
    )


def _run(limiter: RateLimiter, answers: list[Exchange], **kw: Any) -> tuple[Exchange, int]:
    calls = iter(answers)
    seen = []

    def call() -> Exchange:
        seen.append(1)
        return next(calls)

    return limiter.run("POST /x", call, **kw), len(seen)


def test_a_delay_beyond_max_wait_spends_the_quota_and_others_pass_through() -> None:
    logged: list[str] = []
    limiter = RateLimiter(RateLimitPolicy(max_wait=1, retries=3), threading.Event(), logged.append)
    assert _run(limiter, [_limited(None)]) == (_limited(None), 1)  # no RetryInfo: nothing to go by
    assert _run(limiter, [_limited(0)], record_errors=True)[1] == 1  # the test wants the 429 recorded
    exchange, calls = _run(limiter, [_limited(36)])
    assert (exchange.kind, calls) == ("quota-spent", 1)
    assert "retry in 36 s, more than the proxy waits (rate_limit_max_wait=1 s)" in (limiter.spent or "")
    assert len(logged) == 1 and limiter.report()["quota_refused"] == 1


def test_closing_the_proxy_cuts_a_wait_short() -> None:
    closing = threading.Event()
    closing.set()
    limiter = RateLimiter(RateLimitPolicy(max_wait=60), closing, lambda _: None)
    exchange, calls = _run(limiter, [_limited(30), _limited(30)])
    assert (exchange.status, calls, limiter.waited) == (429, 1, 0.0)


def test_bad_policies_are_refused_where_they_are_given() -> None:
    with pytest.raises(ValueError, match="rate_limit_max_wait"):
        ProxyProcess(rate_limit_max_wait=-1)
    with pytest.raises(ValueError, match="rate_limit_retries"):
        ProxyProcess(rate_limit_retries=-1)


class _Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def write_sep(self, sep: str, title: str) -> None:
        self.lines.append(title)

    def write_line(self, line: str) -> None:
        self.lines.append(line)


def test_the_summary_names_a_spent_quota_once_with_the_tests_it_stopped() -> None:
    report = RunReport("main")
    report.counts["integration"]["tests"] = 2
    for nodeid in ("t.py::a", "t.py::b"):
        report.notes.append({"nodeid": nodeid, "kind": "quota spent", "message": f"upstream quota {DAILY} is spent"})
    out = _Lines()
    report.write(out)
    assert [line for line in out.lines if DAILY in line] == [f"recording stopped: upstream quota {DAILY} is spent"]
    assert "  2 test(s) got the proxy's 429 instead: t.py::a, t.py::b" in out.lines
