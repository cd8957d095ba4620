"""The real DSPy worker as a subprocess, talking to the bundled fake Gemini over real sockets.

One real worker serves the whole module (each costs 1-3 s to start); only the lethal tests at
the end retire it (EOF) or start their own (SIGTERM), so a full run starts two. Every LM is configured with
``cache=False`` except in the one test about the cache, which points DSPy at a temporary dir.
The worker runs with a DSPy callback that writes to stdout three ways when a question says
``PLEASE PRINT``, standing in for user code that prints inside the DSPy call path, and that
marks the start of every LM call on stderr (so a test can wait for a call to be in flight).
"""

from __future__ import annotations

import json
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dspy_bridge.protocol._programs import program_id_for
from dspy_bridge.testing import Delay, Drop, Empty, Fail, FakeGemini, PromptBlocked, Reply, ScriptItem
from workerproc import WorkerProc

pytestmark = pytest.mark.slow

# Not key-shaped on purpose: scrubbing must remove the configured key itself, not just patterns.
KEY = "bridge-test-" + secrets.token_hex(12)
KEY_SHAPED_GOOGLE = "AIza" + "Q" * 35  # built at run time; never a real key
KEY_SHAPED_OPENAI = "sk-" + "proj-" + "Z" * 40
FLASH = "gemini/gemini-2.5-flash"
PRO = "gemini/gemini-2.5-pro"

LM_CALL_MARKER = "dspy-bridge-test: lm call starting"
STRAY_PRINTER = """
import os, sys
import dspy
from dspy.utils.callback import BaseCallback

class StrayPrinter(BaseCallback):
    def on_module_start(self, call_id, instance, inputs):
        if "PLEASE PRINT" in repr(inputs):
            print("stray print() to sys.stdout")
            print("stray print to sys.__stdout__", file=sys.__stdout__, flush=True)
            os.write(1, b"stray os.write to fd 1\\n")

    def on_lm_start(self, call_id, instance, inputs):
        sys.stderr.write("dspy-bridge-test: lm call starting\\n")
        sys.stderr.flush()

dspy.configure(callbacks=[StrayPrinter()])
"""


class _Slot:
    """Hands out the module's real worker, starting another only if a test retired it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.current: WorkerProc | None = None
        self.started = 0

    def live(self) -> WorkerProc:
        if self.current is None or self.current.proc.poll() is not None:
            if self.current is not None:
                self.current.close()
            self.current = WorkerProc("real", max_concurrency=2, env=self.env, prelude=STRAY_PRINTER)
            self.started += 1
        return self.current


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dspy-cache") / "cache"


@pytest.fixture(scope="module")
def slot(cache_dir: Path) -> Iterator[_Slot]:
    holder = _Slot({"DSPY_CACHEDIR": str(cache_dir)})
    yield holder
    if holder.current is not None:
        holder.current.close()


@pytest.fixture
def worker(slot: _Slot) -> Iterator[WorkerProc]:
    current = slot.live()
    yield current
    if current.outstanding:  # a failed test left answers in the pipe: retire rather than desync
        current.close()


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    with FakeGemini(expected_key=KEY) as fake:
        yield fake


@pytest.fixture
def fake(gemini: FakeGemini) -> FakeGemini:
    gemini.reset()
    return gemini


def _session() -> str:
    return "s-" + secrets.token_hex(4)


def _configure(
    worker: WorkerProc, fake: FakeGemini, session_id: str | None, model: str = FLASH, **extra: Any
) -> dict[str, Any]:
    args = {"model": model, "api_key": KEY, "api_base": fake.base_url, "cache": False, "num_retries": 0, **extra}
    result = worker.call("configure_lm", args, session_id=session_id)
    assert isinstance(result, dict)
    return result


def _create(worker: WorkerProc, session_id: str | None, signature: Any, **extra: Any) -> str:
    program_id = worker.call("create_program", {"signature": signature, **extra}, session_id=session_id)["program_id"]
    assert isinstance(program_id, str)
    return program_id


def _execute(worker: WorkerProc, session_id: str | None, program_id: str, **inputs: Any) -> dict[str, Any]:
    result = worker.call("execute_program", {"program_id": program_id, "inputs": inputs}, session_id=session_id)
    assert isinstance(result, dict)
    return result


def _execute_error(worker: WorkerProc, session_id: str | None, program_id: str, **inputs: Any) -> dict[str, Any]:
    return worker.error("execute_program", {"program_id": program_id, "inputs": inputs}, session_id=session_id)


# --- hello, configure, create ------------------------------------------------------------------


def test_hello_says_real_mode_with_dspy_3_4(worker: WorkerProc) -> None:
    hello = worker.hello
    assert hello["mode"] == "real"
    assert hello["dspy_version"].startswith("3.4.")
    assert hello["pid"] == worker.proc.pid
    assert "dspy" in hello["capabilities"]
    assert "stub_program" not in hello["capabilities"]  # stubs are a mock-worker feature
    assert worker.call("ping")["versions"]["dspy"] == hello["dspy_version"]


def test_configure_lm_never_echoes_the_key(worker: WorkerProc, fake: FakeGemini) -> None:
    configured = _configure(worker, fake, _session(), temperature=0.0, max_tokens=256, timeout=30)
    assert configured["configured"] == {
        "model": FLASH,
        "api_base": fake.base_url,
        "temperature": 0.0,
        "max_tokens": 256,
        "num_retries": 0,
        "cache": False,
        "timeout": 30,
    }
    assert KEY not in repr(configured)


def test_gemini_api_base_must_end_in_v1beta(worker: WorkerProc, fake: FakeGemini) -> None:
    wrong = fake.base_url.removesuffix("/v1beta")
    error = worker.error("configure_lm", {"model": FLASH, "api_key": KEY, "api_base": wrong}, session_id=_session())
    assert error["type"] == "invalid_request"
    assert "/v1beta" in error["message"]
    assert KEY not in repr(error)
    assert fake.request_count == 0


def test_program_ids_are_deterministic_and_ignore_whitespace(worker: WorkerProc) -> None:
    session = _session()
    first = _create(worker, session, "question -> answer: int")
    again = _create(worker, session, "  question\t ->answer:   int ")
    assert first == again == program_id_for({"signature": "question -> answer: int"})
    cot = _create(worker, session, "question -> answer: int", program_type="chain_of_thought")
    assert cot != first
    assert worker.call("list_programs", session_id=session)["programs"] == sorted({first, cot})
    info = worker.call("get_program_info", {"program_id": first}, session_id=session)
    assert info["outputs"] == [{"name": "answer", "type": "int", "description": ""}]


def test_unsupported_types_are_refused_before_dspy_sees_them(worker: WorkerProc) -> None:
    error = worker.error("create_program", {"signature": "q -> a: complex"}, session_id=_session())
    assert error["type"] == "invalid_request"
    assert "complex" in error["message"]


# --- running programs through the fake Gemini --------------------------------------------------


def test_predict_runs_through_the_lm_and_reports_usage(worker: WorkerProc, fake: FakeGemini) -> None:
    session = _session()
    _configure(worker, fake, session)
    program_id = _create(worker, session, "question -> answer")
    fake.enqueue({"answer": "Paris"})
    result = _execute(worker, session, program_id, question="What is the capital of France?")
    assert result["outputs"] == {"answer": "Paris"}
    assert result["model"] == FLASH
    assert result["lm_calls"] == 1
    usage = result["usage"][FLASH]  # per model (docs/programs-contract.md)
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert fake.request_count == 1
    sent = fake.requests[0]
    assert sent.api_key == KEY and sent.model == "gemini-2.5-flash"
    assert "What is the capital of France?" in repr(sent.body)


def test_chain_of_thought_returns_its_reasoning(worker: WorkerProc, fake: FakeGemini) -> None:
    session = _session()
    _configure(worker, fake, session)
    program_id = _create(worker, session, "question -> answer: int", program_type="chain_of_thought")
    fake.enqueue({"reasoning": "Two and two make four.", "answer": 4})
    result = _execute(worker, session, program_id, question="2+2?")
    assert result["outputs"] == {"reasoning": "Two and two make four.", "answer": 4}
    assert "reasoning" in repr(fake.requests[0].body)  # DSPy asked the LM for it


def test_typed_outputs_arrive_as_plain_typed_values(worker: WorkerProc, fake: FakeGemini) -> None:
    session = _session()
    _configure(worker, fake, session)
    signature = "text -> count: int, ratio: float, ok: bool, tags: list[str], mood: Literal['happy', 'sad']"
    program_id = _create(worker, session, signature)
    scripted = {"count": 7, "ratio": 0.25, "ok": True, "tags": ["a", "b c"], "mood": "sad"}
    fake.enqueue(scripted)
    assert _execute(worker, session, program_id, text="scripted")["outputs"] == scripted

    generated = _execute(worker, session, program_id, text="whatever the fake makes of it")["outputs"]
    assert type(generated["count"]) is int
    assert type(generated["ratio"]) is float
    assert type(generated["ok"]) is bool
    assert isinstance(generated["tags"], list) and all(type(tag) is str for tag in generated["tags"])
    assert generated["mood"] in ("happy", "sad")


def test_structured_signature_carries_descriptions_and_instructions(worker: WorkerProc, fake: FakeGemini) -> None:
    session = _session()
    _configure(worker, fake, session)
    signature = {
        "inputs": [{"name": "review", "type": "str", "description": "a customer review of a cafe"}],
        "outputs": [
            {"name": "label", "type": "Literal['positive', 'negative']", "description": "overall sentiment"},
            {"name": "keywords", "type": "list[str]", "description": "words that decided it"},
        ],
        "instructions": "Classify the review's sentiment.",
    }
    program_id = _create(worker, session, signature)
    result = _execute(worker, session, program_id, review="Lovely coffee, rude staff.")
    assert result["outputs"]["label"] in ("positive", "negative")
    assert all(type(word) is str for word in result["outputs"]["keywords"])
    prompt = json.dumps(fake.requests[0].body, ensure_ascii=False)
    for text in ("a customer review of a cafe", "overall sentiment", "Classify the review's sentiment."):
        assert text in prompt
    assert "Literal['positive', 'negative']" in prompt  # a real typing.Literal reached DSPy

    terse = _create(worker, session, "question -> answer", instructions="Answer in one word.")
    _execute(worker, session, terse, question="Sky colour?")
    assert "Answer in one word." in json.dumps(fake.requests[-1].body)


# --- sessions ----------------------------------------------------------------------------------


def test_sessions_keep_their_own_programs_and_lms_even_concurrently(worker: WorkerProc, fake: FakeGemini) -> None:
    a, b = _session(), _session()
    _configure(worker, fake, a, model=FLASH)
    _configure(worker, fake, b, model=PRO)
    program_a = _create(worker, a, "question -> answer")
    assert worker.call("list_programs", session_id=b)["programs"] == []
    assert _execute_error(worker, b, program_a, question="q")["type"] == "program_not_found"

    program_b = _create(worker, b, "question -> answer")
    assert program_b == program_a  # same definition, same id, separate instances
    # Two sessions in flight at once (the worker runs two handler threads).
    sent = {
        worker.send("execute_program", {"program_id": program_a, "inputs": {"question": "A?"}}, session_id=a): FLASH,
        worker.send("execute_program", {"program_id": program_b, "inputs": {"question": "B?"}}, session_id=b): PRO,
    }
    while sent:
        response = worker.read()
        assert response is not None and response["ok"] is True, response
        assert response["result"]["model"] == sent.pop(response["id"])
    models = sorted(request.model or "" for request in fake.requests)
    assert models == ["gemini-2.5-flash", "gemini-2.5-pro"]


def test_sessions_without_an_lm_use_the_default_or_fail(worker: WorkerProc, fake: FakeGemini) -> None:
    session = _session()
    program_id = _create(worker, session, "question -> answer")
    error = _execute_error(worker, session, program_id, question="q")
    assert error["type"] == "lm_not_configured"
    assert fake.request_count == 0
    _configure(worker, fake, None, model=PRO)  # the worker-wide default
    try:
        assert _execute(worker, session, program_id, question="q")["model"] == PRO
    finally:
        assert worker.call("cleanup_session", {"session_id": None})["removed"] is True


# --- LM failures -------------------------------------------------------------------------------


TOO_LONG = "The input token count (2000000) exceeds the maximum number of tokens allowed (1048576)."


@pytest.mark.parametrize(
    ("item", "retries", "attempts", "exception", "expected"),
    [
        # Gemini sends no Retry-After, so each retry costs DSPy's 1 s back-off: only the 429 shows one.
        pytest.param(Fail(429, retry_after=0), 1, 2, "LMRateLimitError", ("lm_rate_limited", True), id="429"),
        pytest.param(Fail(503), 0, 1, "LMServerError", ("lm_error", True), id="503"),
        pytest.param(Fail(500), 0, 1, "LMServerError", ("lm_error", True), id="500"),
        pytest.param(Fail(504), 0, 1, "LMTimeoutError", ("lm_timeout", True), id="504"),
        pytest.param(Fail(403), 1, 1, "LMAuthError", ("lm_auth", False), id="403"),
        pytest.param(Fail(401), 1, 1, "LMAuthError", ("lm_auth", False), id="401"),
        pytest.param(Fail(400), 1, 1, "LMInvalidRequestError", ("lm_error", False), id="400"),
        pytest.param(
            Fail(404, "models/x is not found"), 1, 1, "LMUnsupportedModelError", ("lm_error", False), id="404"
        ),
        pytest.param(Fail(400, TOO_LONG), 1, 1, "ContextWindowExceededError", ("lm_error", False), id="too-long"),
        pytest.param(Drop(), 0, 1, "LMTransportError", ("lm_error", True), id="connection-dropped"),
    ],
)
def test_lm_failures_map_onto_the_taxonomy(
    worker: WorkerProc,
    fake: FakeGemini,
    item: ScriptItem,
    retries: int,
    attempts: int,
    exception: str,
    expected: tuple[str, bool],
) -> None:
    session = _session()
    _configure(worker, fake, session, num_retries=retries)
    program_id = _create(worker, session, "question -> answer")
    fake.enqueue(item, times=retries + 1)
    error = _execute_error(worker, session, program_id, question="q")
    assert (error["type"], error["retryable"]) == expected, error
    assert error["details"]["exception"] == f"dspy.utils.exceptions.{exception}"
    assert fake.request_count == attempts  # DSPy retried exactly what it should have
    assert KEY not in repr(error)
    if isinstance(item, Fail):
        assert error["details"]["status"] == item.status


def test_a_wrong_key_is_lm_auth_even_though_gemini_says_400(worker: WorkerProc, fake: FakeGemini) -> None:
    session = _session()
    wrong = "wrong-" + secrets.token_hex(8)
    args = {"model": FLASH, "api_key": wrong, "api_base": fake.base_url, "cache": False, "num_retries": 2}
    worker.call("configure_lm", args, session_id=session)
    program_id = _create(worker, session, "question -> answer")
    error = _execute_error(worker, session, program_id, question="q")
    assert (error["type"], error["retryable"], error["details"]["status"]) == ("lm_auth", False, 400)
    assert fake.request_count == 1  # an auth failure is never retried
    assert fake.requests[0].api_key == wrong
    assert wrong not in repr(error)
    assert error["message"].startswith("Gemini rejected the API key (400 INVALID_ARGUMENT, reason API_KEY_INVALID")
    assert "configure_lm(api_key=...)" in error["message"] and "GEMINI_API_KEY" in error["message"]


# --- Gemini as it really answers (thinking models, answers without text) ------------------------


def test_an_empty_max_tokens_candidate_is_an_error_naming_the_finish_reason(
    worker: WorkerProc, fake: FakeGemini
) -> None:
    session = _session()
    _configure(worker, fake, session, max_tokens=64)
    program_id = _create(worker, session, "question -> answer")
    fake.enqueue(Empty("MAX_TOKENS"), times=2)  # ChatAdapter's call, then DSPy's JSONAdapter fallback
    error = _execute_error(worker, session, program_id, question="q")
    assert (error["type"], error["retryable"]) == ("adapter_parse_error", False)
    assert error["message"].startswith(
        "Gemini stopped at the output limit (finishReason MAX_TOKENS) before writing any answer text; "
        "a thinking model can spend the whole budget on thoughts. Raise max_tokens"
    )
    assert error["details"]["finish_reason"] == "MAX_TOKENS"
    assert fake.request_count == 2 and fake.pending == 0


def test_thought_parts_never_leak_into_the_answer(worker: WorkerProc, fake: FakeGemini) -> None:
    session = _session()
    _configure(worker, fake, session)
    program_id = _create(worker, session, "question -> answer")
    fake.enqueue(Reply({"answer": "four"}, thoughts="PRIVATE-THOUGHT: two and two"))
    result = _execute(worker, session, program_id, question="2+2?")
    assert result["outputs"] == {"answer": "four"}
    assert "PRIVATE-THOUGHT" not in json.dumps(result)


@pytest.mark.parametrize(
    ("item", "start", "detail"),
    [
        pytest.param(Empty("SAFETY"), "Gemini blocked the answer (finishReason SAFETY)", "finish_reason", id="safety"),
        pytest.param(
            PromptBlocked("PROHIBITED_CONTENT"),
            "Gemini refused the prompt itself (promptFeedback.blockReason)",
            "block_reason",
            id="prompt-blocked",
        ),
        pytest.param(
            Fail(400, grpc_status="FAILED_PRECONDITION"),
            "Gemini refused the call (400 FAILED_PRECONDITION): the API is not served to this location",
            "status",
            id="region",
        ),
    ],
)
def test_answers_gemini_refuses_are_clear_errors_that_are_not_retried(
    worker: WorkerProc, fake: FakeGemini, item: ScriptItem, start: str, detail: str
) -> None:
    session = _session()
    _configure(worker, fake, session, num_retries=2)
    program_id = _create(worker, session, "question -> answer")
    fake.enqueue(item, times=3)
    error = _execute_error(worker, session, program_id, question="q")
    assert (error["type"], error["retryable"]) == ("lm_error", False)
    assert error["message"].startswith(start) and "DSPy said:" in error["message"]
    assert detail in error["details"]
    assert fake.request_count == 1


def test_the_proxys_spent_quota_answer_is_rate_limited_but_not_retryable(worker: WorkerProc, fake: FakeGemini) -> None:
    session = _session()
    _configure(worker, fake, session)
    program_id = _create(worker, session, "question -> answer")
    quota = "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
    fake.enqueue(Fail(429, f"dspy-bridge cassette proxy: upstream quota {quota} is spent (a per-day quota)."))
    error = _execute_error(worker, session, program_id, question="q")  # the words proxy/_ratelimit.py answers with
    assert (error["type"], error["retryable"]) == ("lm_rate_limited", False)
    assert quota in error["message"] and "To fix" not in error["message"]  # not lm15's "wait a moment and retry"


def test_no_key_anywhere_is_lm_auth_without_a_request(worker: WorkerProc, fake: FakeGemini) -> None:
    session = _session()
    worker.call("configure_lm", {"model": FLASH, "api_base": fake.base_url, "cache": False}, session_id=session)
    program_id = _create(worker, session, "question -> answer")
    error = _execute_error(worker, session, program_id, question="q")
    assert (error["type"], error["retryable"]) == ("lm_auth", False)
    assert "GEMINI_API_KEY" in error["message"]
    # Workers never get a key from the environment: the message names the two ways to give one.
    assert "api_key=" in error["message"] and "PoolConfig.env" in error["message"]
    assert fake.request_count == 0


def test_keys_in_provider_messages_are_scrubbed(worker: WorkerProc, fake: FakeGemini) -> None:
    session = _session()
    _configure(worker, fake, session)
    program_id = _create(worker, session, "question -> answer")
    echo = f"Incorrect API key provided: {KEY} (also tried {KEY_SHAPED_GOOGLE} and {KEY_SHAPED_OPENAI})"
    fake.enqueue(Fail(401, echo))
    error = _execute_error(worker, session, program_id, question="q")
    assert error["type"] == "lm_auth"
    assert "Incorrect API key provided: [REDACTED] (also tried [REDACTED] and [REDACTED])" in error["message"]
    for secret in (KEY, KEY_SHAPED_GOOGLE, KEY_SHAPED_OPENAI):
        assert secret not in repr(error)


def test_read_timeout_is_lm_timeout(worker: WorkerProc, fake: FakeGemini) -> None:
    session = _session()
    _configure(worker, fake, session, timeout=0.2)
    program_id = _create(worker, session, "question -> answer")
    fake.enqueue(Delay(3, then=Fail(500)))  # never answers within the LM's timeout
    error = _execute_error(worker, session, program_id, question="q")
    assert (error["type"], error["retryable"]) == ("lm_timeout", True), error
    assert "timed out" in error["message"]


def test_unparseable_answers_are_adapter_parse_errors(worker: WorkerProc, fake: FakeGemini) -> None:
    session = _session()
    _configure(worker, fake, session)
    program_id = _create(worker, session, "question -> answer: int")
    fake.enqueue(Reply(text="I would rather not say."), times=2)
    error = _execute_error(worker, session, program_id, question="q")
    assert (error["type"], error["retryable"]) == ("adapter_parse_error", False)
    assert error["details"]["adapter"] == "JSONAdapter"
    assert fake.request_count == 2  # ChatAdapter, then DSPy's JSONAdapter fallback


def test_mapping_of_failures_the_fake_cannot_provoke() -> None:
    """The pure mapping, in-process, for DSPy errors no HTTP answer produces."""
    from dspy.utils.exceptions import LMBillingError, LMLockTimeoutError, LMUnexpectedError, LMUnsupportedFeatureError

    from dspy_bridge.worker._lm_errors import failure_for, scrub

    def mapped(exc: BaseException) -> tuple[str, bool]:
        failure = failure_for(exc, secrets=[KEY])
        assert failure is not None
        return str(failure.type), failure.retryable

    assert mapped(LMBillingError("quota", status=400)) == ("lm_error", False)
    assert mapped(LMLockTimeoutError("credential lock busy")) == ("lm_error", True)
    assert mapped(LMUnsupportedFeatureError("no tools")) == ("lm_error", False)
    assert mapped(TimeoutError("socket timed out")) == ("lm_timeout", True)
    unexpected = LMUnexpectedError("engine failed")
    unexpected.__cause__ = TimeoutError("read")
    assert mapped(unexpected) == ("lm_timeout", True)
    assert mapped(LMUnexpectedError("engine bug")) == ("lm_error", False)
    assert failure_for(ValueError("not an LM error")) is None
    assert scrub(f"k={KEY} g={KEY_SHAPED_GOOGLE} o={KEY_SHAPED_OPENAI} u=https://x/y?key=abc&z=1", [KEY]) == (
        "k=[REDACTED] g=[REDACTED] o=[REDACTED] u=https://x/y?key=[REDACTED]&z=1"
    )
    assert scrub("a sk-short word", ["ab"]) == "a sk-short word"  # too short to be a key: left alone


def test_outputs_are_made_plain_for_the_wire() -> None:
    """Whatever DSPy returns (pydantic models, enums, tuples, huge ints) must survive msgpack and JSON."""
    import enum
    from datetime import date

    import msgpack
    import pydantic

    from dspy_bridge.worker._dspy_types import plain

    class Colour(enum.Enum):
        RED = "red"

    class Item(pydantic.BaseModel):
        name: str
        when: date
        tags: tuple[str, ...]

    value = {
        "item": Item(name="x", when=date(2024, 1, 2), tags=("a", "b")),
        "colour": Colour.RED,
        "pair": (1, 2.5),
        "big": 2**80,
        "nan": float("nan"),
        "raw": b"bytes",
        "other": object,
    }
    out = plain(value)
    assert out["item"] == {"name": "x", "when": "2024-01-02", "tags": ["a", "b"]}
    assert (out["colour"], out["pair"], out["big"], out["nan"], out["raw"]) == (
        "red",
        [1, 2.5],
        str(2**80),
        "nan",
        "bytes",
    )
    assert out["other"] == "<class 'object'>"
    assert msgpack.unpackb(msgpack.packb(out)) == out
    assert json.loads(json.dumps(out, allow_nan=False)) == out


# --- process hygiene ---------------------------------------------------------------------------


def test_litellm_is_never_imported_for_gemini(worker: WorkerProc, fake: FakeGemini) -> None:
    session = _session()
    _configure(worker, fake, session)
    _execute(worker, session, _create(worker, session, "question -> answer"), question="q")
    assert worker.call("get_stats")["litellm_imported"] is False


def test_cache_false_never_touches_the_cache_and_cache_true_uses_its_own_sessions_memory_cache(
    worker: WorkerProc, fake: FakeGemini, cache_dir: Path
) -> None:
    uncached, cached, cached_later, uncached_again = _session(), _session(), _session(), _session()
    _configure(worker, fake, uncached)
    program_id = _create(worker, uncached, "question -> answer")
    for _ in range(2):
        _execute(worker, uncached, program_id, question="same question")
    assert fake.request_count == 2

    _configure(worker, fake, cached, cache=True)
    _create(worker, cached, "question -> answer")
    first = _execute(worker, cached, program_id, question="same question")
    second = _execute(worker, cached, program_id, question="same question")
    assert fake.request_count == 3  # the second answer came from DSPy's cache
    assert second["outputs"] == first["outputs"]
    assert second["usage"] == {}  # a cache hit costs no tokens
    assert (first["cache_hits"], second["cache_hits"]) == (0, 1)
    assert second["calls"]["self"]["cache_hits"] == 1 and second["lm_calls"] == 0  # counted, never reached the LM

    _configure(worker, fake, cached_later, cache=True)  # another test: its own, empty cache
    _create(worker, cached_later, "question -> answer")
    assert _execute(worker, cached_later, program_id, question="same question")["cache_hits"] == 0
    assert fake.request_count == 4

    _configure(worker, fake, uncached_again)
    _create(worker, uncached_again, "question -> answer")
    _execute(worker, uncached_again, program_id, question="same question")
    assert fake.request_count == 5  # cache=False still goes to the LM with warm caches around
    stats = worker.call("get_stats")["lm_cache"]
    assert stats["scope"] == "session" and stats["disk_dir"] is None
    assert not cache_dir.exists()  # DSPY_CACHEDIR is never created: no disk cache, ever


def test_stray_prints_land_on_stderr_not_in_the_frame_stream(worker: WorkerProc, fake: FakeGemini) -> None:
    session = _session()
    _configure(worker, fake, session)
    program_id = _create(worker, session, "question -> answer")
    fake.enqueue({"answer": "printed"})
    assert _execute(worker, session, program_id, question="PLEASE PRINT")["outputs"] == {"answer": "printed"}
    stderr = worker.wait_for_stderr("stray os.write to fd 1")
    assert "stray print() to sys.stdout" in stderr
    assert "stray print to sys.__stdout__" in stderr
    assert worker.call("ping")["status"] == "ok"  # the stream is still in sync


def test_unknown_command_keeps_the_real_worker_alive(worker: WorkerProc) -> None:
    assert worker.error("train_a_model")["type"] == "unknown_command"
    assert worker.call("ping")["status"] == "ok"


# --- lethal tests: keep them last ---------------------------------------------------------------


def test_eof_says_goodbye_and_exits_zero_with_no_key_on_stderr(slot: _Slot) -> None:
    worker = slot.live()
    assert worker.call("ping")["status"] == "ok"
    worker.close_stdin()
    assert worker.read() == {"type": "goodbye", "worker_id": "test-worker", "pid": worker.proc.pid, "reason": "eof"}
    assert worker.read() is None
    assert worker.wait() == 0
    stderr = worker.stderr_text(wait=True)
    for secret in (KEY, KEY_SHAPED_GOOGLE, KEY_SHAPED_OPENAI):
        assert secret not in stderr


def test_sigterm_during_an_lm_call_says_goodbye_without_waiting(gemini: FakeGemini, cache_dir: Path) -> None:
    gemini.reset()
    with WorkerProc("real", env={"DSPY_CACHEDIR": str(cache_dir)}, prelude=STRAY_PRINTER) as worker:
        session = _session()
        _configure(worker, gemini, session)
        program_id = _create(worker, session, "question -> answer")
        gemini.enqueue(Delay(120))  # answers only after the test is long over (close() cuts it short)
        worker.send("execute_program", {"program_id": program_id, "inputs": {"question": "q"}}, session_id=session)
        worker.wait_for_stderr(LM_CALL_MARKER)  # the handler is inside DSPy's LM call now
        worker.signal(signal.SIGTERM)
        first = worker.read()
        assert first is not None and first["type"] == "goodbye", first  # the LM call was not awaited
        assert first["reason"] == "sigterm"
        assert worker.wait() == 0


def test_a_sigterm_landing_inside_an_asyncio_callback_still_ends_the_run() -> None:
    """asyncio logs and swallows most exceptions a callback raises, but re-raises SystemExit: the SIGTERM
    handler's exception must be one, or a signal that lands in DSPy's event loop leaves the call running."""
    import asyncio

    from dspy_bridge.worker._main import _on_sigterm

    async def a_call_in_flight() -> None:
        await asyncio.sleep(0.2)

    loop = asyncio.new_event_loop()
    task = loop.create_task(a_call_in_flight())
    try:
        loop.call_soon(_on_sigterm, signal.SIGTERM, None)
        with pytest.raises(SystemExit):
            loop.run_until_complete(task)
    finally:
        task.cancel()
        loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
        loop.close()
