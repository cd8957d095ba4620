"""The fake Gemini server: its wire format over raw HTTP, then real DSPy 3.4 talking to it."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any, Literal

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # DSPy fetches model prices otherwise

import dspy

from dspy_bridge.testing import Delay, Drop, Fail, FakeGemini, Reply

KEY = "AIza" + "k" * 35  # built at run time: never a real-looking key in the tree
OTHER_KEY = "AIza" + "o" * 35
MODEL_PATH = "/models/gemini-2.5-flash:generateContent"

CHAT_SYSTEM = (
    "Your input fields are:\n1. `question` (str):\nYour output fields are:\n"
    "1. `n` (int): \n2. `f` (float): \n3. `b` (bool): \n4. `tags` (list[str]): \n"
    "5. `lab` (Literal['pos', 'neg']): the label\n"
    "All interactions will be structured in the following way, with the appropriate values filled in.\n\n"
    "[[ ## question ## ]]\n{question}\n\n"
    "[[ ## n ## ]]\n{n}        # note: the value you produce must be a single int value\n\n"
    "[[ ## f ## ]]\n{f}        # note: the value you produce must be a single float value\n\n"
    "[[ ## b ## ]]\n{b}        # note: the value you produce must be True or False\n\n"
    '[[ ## tags ## ]]\n{tags}        # note: the value you produce must adhere to the JSON schema: {"type": '
    '"array", "items": {"type": "string"}}\n\n'
    "[[ ## lab ## ]]\n{lab}        # note: the value you produce must exactly match (no extra characters) "
    "one of: pos; neg\n\n[[ ## completed ## ]]\nIn adhering to this structure, your objective is: \n"
    "        Classify things."
)


def chat_body(question: str = "What is 2+2?", *, snake: bool = False) -> dict[str, Any]:
    system_key = "system_instruction" if snake else "systemInstruction"
    return {
        "contents": [{"role": "user", "parts": [{"text": f"[[ ## question ## ]]\n{question}"}]}],
        system_key: {"parts": [{"text": CHAT_SYSTEM}]},
    }


def post(url: str, body: Any, *, key: str | None = KEY, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """POST JSON with urllib; HTTP errors come back as (status, headers, body), not exceptions."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    if key is not None:
        request.add_header("x-goog-api-key", key)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def text_of(payload: dict[str, Any]) -> str:
    return "".join(p["text"] for p in payload["candidates"][0]["content"]["parts"])


@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    with FakeGemini() as server:
        yield server


# ─── Raw HTTP: response shape ───────────────────────────────────────────────


def test_generate_content_has_geminis_response_shape(fake: FakeGemini) -> None:
    status, headers, raw = post(fake.base_url + MODEL_PATH, chat_body())
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    payload = json.loads(raw)
    candidate = payload["candidates"][0]
    assert candidate["content"]["role"] == "model"
    assert candidate["finishReason"] == "STOP"
    assert candidate["index"] == 0
    usage = payload["usageMetadata"]
    assert usage["promptTokenCount"] > 0 and usage["candidatesTokenCount"] > 0
    thoughts = usage["thoughtsTokenCount"]  # 2.5 Flash thinks by default, and its thoughts count in the total
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"] + thoughts
    assert payload["modelVersion"] == "gemini-2.5-flash"
    assert isinstance(payload["responseId"], str) and payload["responseId"]
    assert fake.base_url.endswith("/v1beta") and str(fake.port) in fake.base_url


def test_chat_prompt_gets_every_field_with_a_value_of_its_type(fake: FakeGemini) -> None:
    text = text_of(json.loads(post(fake.base_url + MODEL_PATH, chat_body())[2]))
    pieces = re.split(r"\[\[ ## (\w+) ## \]\]", text)
    sections = dict(zip(pieces[1::2], pieces[2::2], strict=True))
    assert list(sections) == ["n", "f", "b", "tags", "lab", "completed"]
    assert text.rstrip().endswith("[[ ## completed ## ]]")
    int(sections["n"].strip())
    float(sections["f"].strip())
    assert sections["b"].strip() in ("True", "False")
    tags = json.loads(sections["tags"])
    assert isinstance(tags, list) and tags and all(isinstance(t, str) for t in tags)
    assert sections["lab"].strip() in ("pos", "neg")


def test_answers_are_deterministic_per_prompt(fake: FakeGemini) -> None:
    first = text_of(json.loads(post(fake.base_url + MODEL_PATH, chat_body("a"))[2]))
    again = text_of(json.loads(post(fake.base_url + MODEL_PATH, chat_body("a"))[2]))
    other = text_of(json.loads(post(fake.base_url + MODEL_PATH, chat_body("b"))[2]))
    assert first == again
    assert first != other


def test_snake_case_fields_and_json_mime_type_get_a_json_object(fake: FakeGemini) -> None:
    body = chat_body(snake=True) | {"generation_config": {"response_mime_type": "application/json"}}
    status, _, raw = post(fake.base_url + MODEL_PATH, body)
    assert status == 200
    answer = json.loads(text_of(json.loads(raw)))
    assert list(answer) == ["n", "f", "b", "tags", "lab"]
    assert isinstance(answer["n"], int) and isinstance(answer["b"], bool) and answer["lab"] in ("pos", "neg")


def test_response_schema_drives_the_json_answer(fake: FakeGemini) -> None:
    schema = {
        "type": "object",
        "properties": {"count": {"type": "integer", "minimum": 5, "maximum": 6}, "mood": {"enum": ["up", "down"]}},
        "required": ["count", "mood"],
    }
    body = {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": schema},
    }
    answer = json.loads(text_of(json.loads(post(fake.base_url + MODEL_PATH, body)[2])))
    assert answer["count"] in (5, 6) and answer["mood"] in ("up", "down")


def test_plain_prompt_without_fields_gets_plain_text(fake: FakeGemini) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "Say hello."}]}]}
    text = text_of(json.loads(post(fake.base_url + MODEL_PATH, body)[2]))
    assert text and "[[ ##" not in text


# ─── Raw HTTP: streaming ────────────────────────────────────────────────────


def test_sse_stream_splits_the_answer_over_several_events(fake: FakeGemini) -> None:
    url = fake.base_url + "/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    status, headers, raw = post(url, chat_body())
    assert status == 200
    assert headers["Content-Type"] == "text/event-stream"
    events = [e for e in raw.decode().split("\r\n\r\n") if e]
    assert len(events) > 2
    assert all(e.startswith("data: ") for e in events)
    payloads = [json.loads(e.removeprefix("data: ")) for e in events]
    assert [("finishReason" in p["candidates"][0]) for p in payloads] == [False] * (len(payloads) - 1) + [True]
    whole = text_of(json.loads(post(fake.base_url + MODEL_PATH, chat_body())[2]))
    assert "".join(text_of(p) for p in payloads) == whole
    assert fake.requests[0].sse and fake.requests[0].stream


def test_stream_without_alt_sse_is_a_json_array(fake: FakeGemini) -> None:
    url = fake.base_url + "/models/gemini-2.5-flash:streamGenerateContent"
    status, _, raw = post(url, chat_body())
    assert status == 200
    chunks = json.loads(raw)
    assert isinstance(chunks, list) and len(chunks) > 2
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert "".join(text_of(c) for c in chunks).endswith("[[ ## completed ## ]]")


# ─── Raw HTTP: keys and errors ──────────────────────────────────────────────


def test_header_key_is_recorded_apart_from_headers(fake: FakeGemini) -> None:
    post(fake.base_url + MODEL_PATH, chat_body(), key=KEY)
    (seen,) = fake.requests
    assert seen.api_key == KEY and seen.key_source == "header"
    assert all(k.lower() != "x-goog-api-key" for k in seen.headers)
    assert KEY not in json.dumps(seen.headers)
    assert seen.model == "gemini-2.5-flash" and seen.action == "generateContent"
    assert seen.body == chat_body()


def test_query_key_is_recorded_and_stripped_from_path(fake: FakeGemini) -> None:
    status, _, _ = post(fake.base_url + MODEL_PATH + f"?key={KEY}", chat_body(), key=None)
    assert status == 200
    (seen,) = fake.requests
    assert seen.api_key == KEY and seen.key_source == "query"
    assert KEY not in seen.path and "key" not in seen.query


def test_missing_key_is_403_permission_denied(fake: FakeGemini) -> None:
    status, _, raw = post(fake.base_url + MODEL_PATH, chat_body(), key=None)
    error = json.loads(raw)["error"]
    assert status == 403 and error["code"] == 403 and error["status"] == "PERMISSION_DENIED"
    assert "unregistered callers" in error["message"]


def test_wrong_key_is_400_api_key_invalid() -> None:
    with FakeGemini(expected_key=KEY) as fake:
        assert post(fake.base_url + MODEL_PATH, chat_body(), key=KEY)[0] == 200
        status, _, raw = post(fake.base_url + MODEL_PATH, chat_body(), key=OTHER_KEY)
        assert [r.api_key for r in fake.requests] == [KEY, OTHER_KEY]
    error = json.loads(raw)["error"]
    assert status == 400 and error["status"] == "INVALID_ARGUMENT"
    assert error["message"] == "API key not valid. Please pass a valid API key."
    assert error["details"][0]["reason"] == "API_KEY_INVALID"


@pytest.mark.parametrize(
    ("path", "method"),
    [("/models/gemini-2.5-flash:predict", "POST"), ("/nope", "POST"), (MODEL_PATH, "GET")],
)
def test_unknown_routes_are_404_in_geminis_error_shape(fake: FakeGemini, path: str, method: str) -> None:
    request = urllib.request.Request(fake.base_url + path, data=b"{}" if method == "POST" else None, method=method)
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 404
    assert json.loads(caught.value.read())["error"]["status"] == "NOT_FOUND"


def test_unknown_model_is_404_when_models_are_listed() -> None:
    with FakeGemini(models=["gemini-2.5-flash"]) as fake:
        assert post(fake.base_url + MODEL_PATH, chat_body())[0] == 200
        status, _, raw = post(fake.base_url + "/models/gemini-9:generateContent", chat_body())
    assert status == 404
    assert json.loads(raw)["error"]["message"].startswith("models/gemini-9 is not found for API version v1beta")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "Invalid JSON payload"),
        ({"contents": []}, "contents is not specified"),
        ({"contents": [{"parts": [{"text": "x"}]}], "generationConfg": {}}, 'Unknown name "generationConfg"'),
    ],
)
def test_bad_bodies_are_400_invalid_argument(fake: FakeGemini, body: Any, fragment: str) -> None:
    status, _, raw = post(fake.base_url + MODEL_PATH, body)
    error = json.loads(raw)["error"]
    assert status == 400 and error["status"] == "INVALID_ARGUMENT" and fragment in error["message"]


@pytest.mark.parametrize(
    ("code", "grpc"),
    [
        (400, "INVALID_ARGUMENT"),
        (401, "UNAUTHENTICATED"),
        (403, "PERMISSION_DENIED"),
        (404, "NOT_FOUND"),
        (429, "RESOURCE_EXHAUSTED"),
        (500, "INTERNAL"),
        (503, "UNAVAILABLE"),
    ],
)
def test_scripted_errors_use_geminis_status_names(fake: FakeGemini, code: int, grpc: str) -> None:
    fake.enqueue(Fail(code))
    status, headers, raw = post(fake.base_url + MODEL_PATH, chat_body())
    error = json.loads(raw)["error"]
    assert (status, error["code"], error["status"]) == (code, code, grpc)
    assert error["message"]
    assert "Retry-After" not in headers  # real Gemini sends none unless the test asks for it


def test_errors_for_k_calls_then_answers(fake: FakeGemini) -> None:
    fake.enqueue(Fail(503), times=2)
    assert fake.pending == 2
    statuses = [post(fake.base_url + MODEL_PATH, chat_body())[0] for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert fake.pending == 0 and fake.request_count == 3


def test_a_429_carries_retry_info_in_the_body_and_no_retry_after_header(fake: FakeGemini) -> None:
    fake.enqueue(Fail(429, message="slow down", retry_after=36))
    status, headers, raw = post(fake.base_url + MODEL_PATH, chat_body())
    error = json.loads(raw)["error"]
    assert status == 429 and "Retry-After" not in headers and error["message"] == "slow down"
    assert error["details"][-1] == {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "36s"}


# ─── Raw HTTP: scripting ────────────────────────────────────────────────────


def test_scripted_dict_fills_named_fields_and_generates_the_rest(fake: FakeGemini) -> None:
    fake.enqueue({"lab": "neg", "n": 7})
    text = text_of(json.loads(post(fake.base_url + MODEL_PATH, chat_body())[2]))
    assert "[[ ## lab ## ]]\nneg" in text and "[[ ## n ## ]]\n7" in text
    assert "[[ ## tags ## ]]" in text and text.endswith("[[ ## completed ## ]]")


def test_scripted_text_is_sent_verbatim_and_script_replaces_the_queue(fake: FakeGemini) -> None:
    fake.enqueue(Fail(500), times=3)
    fake.script("raw one", Reply(text="raw two", finish_reason="MAX_TOKENS"))
    first = json.loads(post(fake.base_url + MODEL_PATH, chat_body())[2])
    second = json.loads(post(fake.base_url + MODEL_PATH, chat_body())[2])
    assert text_of(first) == "raw one"
    assert (text_of(second), second["candidates"][0]["finishReason"]) == ("raw two", "MAX_TOKENS")
    assert post(fake.base_url + MODEL_PATH, chat_body())[0] == 200


def test_dropped_connection_gives_no_response(fake: FakeGemini) -> None:
    fake.enqueue(Drop())
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, urllib.error.URLError)):
        post(fake.base_url + MODEL_PATH, chat_body())
    assert post(fake.base_url + MODEL_PATH, chat_body())[0] == 200


def test_partial_drop_cuts_the_body(fake: FakeGemini) -> None:
    fake.enqueue(Drop(partial=True))
    with pytest.raises(http.client.IncompleteRead):
        post(fake.base_url + MODEL_PATH, chat_body())


def test_delay_outlasting_the_client_timeout_and_close_wakes_it() -> None:
    fake = FakeGemini().start()
    fake.enqueue(Delay(30))
    with pytest.raises(TimeoutError):
        post(fake.base_url + MODEL_PATH, chat_body(), timeout=0.3)
    fake.close()  # returns only after the delayed handler thread was woken and joined
    fake.close()  # idempotent


def test_delay_then_answers(fake: FakeGemini) -> None:
    fake.enqueue(Delay(0.05, then=Reply(text="late")))
    assert text_of(json.loads(post(fake.base_url + MODEL_PATH, chat_body())[2])) == "late"


def test_concurrent_requests_are_all_counted(fake: FakeGemini) -> None:
    keys = [f"AIza{i:035d}" for i in range(16)]
    threads = [
        threading.Thread(target=post, args=(fake.base_url + MODEL_PATH, chat_body()), kwargs={"key": k}) for k in keys
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fake.request_count == 16
    assert sorted(r.api_key or "" for r in fake.requests) == sorted(keys)
    fake.reset()
    assert fake.request_count == 0 and fake.requests == []


def test_lifecycle_errors_name_the_state() -> None:
    fake = FakeGemini()
    with pytest.raises(RuntimeError, match="not running"):
        _ = fake.base_url
    with fake, pytest.raises(RuntimeError, match="already running"):
        fake.start()
    with pytest.raises(RuntimeError, match="closed"):
        fake.start()


def test_control_api_scripts_and_reads_the_log(fake: FakeGemini) -> None:
    root = fake.base_url.removesuffix("/v1beta")
    items = {"items": [{"kind": "fail", "status": 429}, {"kind": "reply", "text": "scripted"}]}
    assert json.loads(post(root + "/__fake__/enqueue", items, key=None)[2]) == {"pending": 2}
    assert post(fake.base_url + MODEL_PATH, chat_body())[0] == 429
    assert text_of(json.loads(post(fake.base_url + MODEL_PATH, chat_body())[2])) == "scripted"
    with urllib.request.urlopen(root + "/__fake__/requests", timeout=10) as response:
        log = json.loads(response.read())["requests"]
    assert [r["api_key"] for r in log] == [KEY, KEY]
    post(root + "/__fake__/reset", {}, key=None)
    assert fake.request_count == 0


def test_standalone_process_prints_its_url_and_exits_on_stdin_eof() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "dspy_bridge.testing.fake_gemini", "--port", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        info = json.loads(proc.stdout.readline())
        assert info["pid"] == proc.pid and info["base_url"].endswith("/v1beta")
        assert post(info["base_url"] + MODEL_PATH, chat_body())[0] == 200
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_standalone_process_exits_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "dspy_bridge.testing.fake_gemini", "--port", "0", "--no-stdin-watch"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert post(info["base_url"] + MODEL_PATH, chat_body(), key=None)[0] == 403
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ─── Real DSPy end to end ───────────────────────────────────────────────────


def gemini_lm(fake: FakeGemini, *, key: str = KEY, num_retries: int = 0, **kw: Any) -> Any:
    return dspy.LM(
        "gemini/gemini-2.5-flash", api_key=key, api_base=fake.base_url, cache=False, num_retries=num_retries, **kw
    )


class Typed(dspy.Signature):
    """Answer with typed fields."""

    question: str = dspy.InputField()
    count: int = dspy.OutputField()
    score: float = dspy.OutputField()
    flag: bool = dspy.OutputField()
    tags: list[str] = dspy.OutputField()
    label: Literal["spam", "ham", "unsure"] = dspy.OutputField()


def test_dspy_predict_round_trip_sends_the_real_key(fake: FakeGemini) -> None:
    with dspy.context(lm=gemini_lm(fake)):
        prediction = dspy.Predict("question -> answer")(question="What is 2+2?")
    assert isinstance(prediction.answer, str) and prediction.answer
    (seen,) = fake.requests
    assert seen.api_key == KEY and seen.key_source == "header"
    assert seen.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert "[[ ## question ## ]]\nWhat is 2+2?" in seen.body["contents"][-1]["parts"][0]["text"]


def test_dspy_chain_of_thought_answers_reasoning_too(fake: FakeGemini) -> None:
    with dspy.context(lm=gemini_lm(fake)):
        prediction = dspy.ChainOfThought("question -> answer")(question="Why is the sky blue?")
    assert prediction.reasoning and prediction.answer
    assert fake.request_count == 1  # parsed first time: no JSONAdapter fallback


@pytest.mark.parametrize("adapter", [dspy.ChatAdapter(), dspy.JSONAdapter(), dspy.XMLAdapter()], ids=type)
def test_dspy_typed_outputs_parse(fake: FakeGemini, adapter: Any) -> None:
    with dspy.context(lm=gemini_lm(fake), adapter=adapter):
        prediction = dspy.Predict(Typed)(question="Is this spam?")
    assert isinstance(prediction.count, int) and not isinstance(prediction.count, bool)
    assert isinstance(prediction.score, float)
    assert isinstance(prediction.flag, bool)
    assert isinstance(prediction.tags, list) and all(isinstance(t, str) for t in prediction.tags)
    assert prediction.label in ("spam", "ham", "unsure")
    assert fake.request_count == 1


def test_dspy_sees_scripted_field_values(fake: FakeGemini) -> None:
    fake.enqueue({"answer": "forty-two"})
    with dspy.context(lm=gemini_lm(fake)):
        assert dspy.Predict("question -> answer")(question="q").answer == "forty-two"


@pytest.mark.parametrize(
    ("status", "exception"),
    [
        (400, dspy.LMInvalidRequestError),
        (401, dspy.LMAuthError),
        (403, dspy.LMAuthError),
        (404, dspy.LMInvalidRequestError),
        (429, dspy.LMRateLimitError),
        (500, dspy.LMServerError),
        (503, dspy.LMServerError),
        (504, dspy.LMTimeoutError),
    ],
)
def test_dspy_raises_its_exception_per_status(fake: FakeGemini, status: int, exception: type[Exception]) -> None:
    fake.enqueue(Fail(status))
    with dspy.context(lm=gemini_lm(fake)), pytest.raises(exception) as caught:
        dspy.Predict("question -> answer")(question="q")
    assert caught.value.status == status  # type: ignore[attr-defined]
    assert fake.request_count == 1


def test_dspy_wrong_key_is_an_invalid_request_not_an_auth_error() -> None:
    with FakeGemini(expected_key=KEY) as fake, dspy.context(lm=gemini_lm(fake, key=OTHER_KEY)):
        with pytest.raises(dspy.LMInvalidRequestError, match="API key not valid"):
            dspy.Predict("question -> answer")(question="q")
        assert fake.requests[0].api_key == OTHER_KEY


def test_dspy_dropped_connection_and_read_timeout_are_transport_errors(fake: FakeGemini) -> None:
    fake.enqueue(Drop())
    with dspy.context(lm=gemini_lm(fake)), pytest.raises(dspy.LMTransportError):
        dspy.Predict("question -> answer")(question="q")
    fake.enqueue(Delay(30))
    with dspy.context(lm=gemini_lm(fake, timeout=0.3)), pytest.raises(dspy.LMTransportError, match="timed out"):
        dspy.Predict("question -> answer")(question="q")


def test_dspy_num_retries_retries_rate_limits(fake: FakeGemini) -> None:
    # No Retry-After (real Gemini sends none): DSPy backs off 1 s, so one retry is all this test affords.
    fake.enqueue(Fail(429, retry_after=0))
    with dspy.context(lm=gemini_lm(fake, num_retries=1)):
        assert dspy.Predict("question -> answer")(question="q").answer
    assert fake.request_count == 2


def test_dspy_gives_up_after_num_retries(fake: FakeGemini) -> None:
    fake.enqueue(Fail(503), times=3)
    with dspy.context(lm=gemini_lm(fake, num_retries=1)), pytest.raises(dspy.LMServerError):
        dspy.Predict("question -> answer")(question="q")
    assert fake.request_count == 2 and fake.pending == 1


def test_dspy_does_not_retry_client_errors(fake: FakeGemini) -> None:
    fake.enqueue(Fail(400), times=3)
    with dspy.context(lm=gemini_lm(fake, num_retries=2)), pytest.raises(dspy.LMInvalidRequestError):
        dspy.Predict("question -> answer")(question="q")
    assert fake.request_count == 1


def test_dspy_streamify_streams_over_sse() -> None:
    listener = dspy.streaming.StreamListener(signature_field_name="answer")
    program = dspy.streamify(dspy.ChainOfThought("question -> answer"), stream_listeners=[listener])

    async def collect(fake: FakeGemini) -> list[Any]:
        with dspy.context(lm=gemini_lm(fake)):
            return [item async for item in program(question="Stream please")]

    with FakeGemini(stream_chunk_chars=5) as fake:
        items = asyncio.run(collect(fake))
        (seen,) = fake.requests
    chunks = [i for i in items if isinstance(i, dspy.streaming.StreamResponse)]
    (final,) = [i for i in items if isinstance(i, dspy.Prediction)]
    assert len(chunks) > 2
    assert "".join(c.chunk for c in chunks) == final.answer
    assert final.reasoning
    assert seen.action == "streamGenerateContent" and seen.sse and seen.api_key == KEY


@pytest.mark.parametrize(
    ("reminder", "expect"),
    [
        (
            "Respond with the corresponding output fields, starting with the field `[[ ## count ## ]]` (must be "
            "formatted as a valid Python int), then `[[ ## note ## ]]`, and then ending with the marker for "
            "`[[ ## completed ## ]]`.",
            "chat",
        ),
        (
            "Respond with a JSON object in the following order of fields: `count` (must be formatted as a valid "
            "Python int), then `note`.",
            "json",
        ),
        ("Respond with the corresponding output fields wrapped in XML tags `<count>`, then `<note>`.", "xml"),
    ],
)
def test_user_reminder_alone_names_the_fields(fake: FakeGemini, reminder: str, expect: str) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": f"[[ ## question ## ]]\nq\n\n{reminder}"}]}]}
    text = text_of(json.loads(post(fake.base_url + MODEL_PATH, body)[2]))
    if expect == "chat":
        pieces = re.split(r"\[\[ ## (\w+) ## \]\]", text)
        assert pieces[1::2] == ["count", "note", "completed"]
        int(pieces[2].strip())
    elif expect == "json":
        answer = json.loads(text)
        assert list(answer) == ["count", "note"] and isinstance(answer["count"], int)
    else:
        assert re.fullmatch(r"<count>[^<]+</count>\n<note>[^<]+</note>", text)


def test_fake_imports_without_dspy() -> None:
    code = "import sys, dspy_bridge.testing.fake_gemini; print('dspy' in sys.modules, 'pydantic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_dspy_unknown_model_and_context_overflow_get_their_own_classes() -> None:
    with FakeGemini(models=["gemini-2.5-flash"]) as fake:
        lm = dspy.LM("gemini/gemini-9", api_key=KEY, api_base=fake.base_url, cache=False, num_retries=0)
        with dspy.context(lm=lm), pytest.raises(dspy.LMUnsupportedModelError):
            dspy.Predict("question -> answer")(question="q")
        overflow = "The input token count (2000000) exceeds the maximum number of tokens allowed (1048576)."
        fake.enqueue(Fail(400, message=overflow))
        with dspy.context(lm=gemini_lm(fake)), pytest.raises(dspy.ContextWindowExceededError):
            dspy.Predict("question -> answer")(question="q")
