"""The fake Gemini is as strict as the real API: thinking answers, empty candidates, blocked prompts,
real error shapes, generationConfig validation, and the routes besides generateContent (raw HTTP)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from dspy_bridge._gemini import rate_limit_of
from dspy_bridge.testing import Empty, Fail, FakeGemini, PromptBlocked, Reply
from dspy_bridge.testing._script import item_from_json, item_to_json

KEY = "bridge-strict-" + "k" * 12
BODY: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": "What is 2+2?"}]}]}


def call(fake: FakeGemini, path: str, body: Any = None, *, key: str | None = KEY) -> tuple[int, dict[str, str], Any]:
    """One request (POST with a body, GET without); the JSON answer, HTTP errors included."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(fake.base_url + path, data=data, method="GET" if body is None else "POST")
    request.add_header("Content-Type", "application/json")
    if key is not None:
        request.add_header("x-goog-api-key", key)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def generate(fake: FakeGemini, body: dict[str, Any] = BODY, model: str = "gemini-2.5-flash") -> tuple[int, Any]:
    status, _, payload = call(fake, f"/models/{model}:generateContent", body)
    return status, payload


@pytest.fixture(scope="module")
def server() -> Iterator[FakeGemini]:
    with FakeGemini(expected_key=KEY) as fake:
        yield fake


@pytest.fixture
def fake(server: FakeGemini) -> FakeGemini:
    server.reset()
    return server


# ─── Thinking models ────────────────────────────────────────────────────────


def test_a_thinking_model_reports_thought_tokens_and_shows_thoughts_only_when_asked(fake: FakeGemini) -> None:
    status, plain = generate(fake)
    assert status == 200 and plain["usageMetadata"]["thoughtsTokenCount"] > 0
    assert not any(part.get("thought") for part in plain["candidates"][0]["content"]["parts"])
    assert plain["modelVersion"] == "gemini-2.5-flash" and plain["responseId"]
    assert plain["usageMetadata"]["serviceTier"] == "standard"

    asked = {**BODY, "generationConfig": {"thinkingConfig": {"includeThoughts": True}}}
    parts = generate(fake, asked)[1]["candidates"][0]["content"]["parts"]
    assert parts[0]["thought"] is True and parts[0]["text"]
    assert "thought" not in parts[1] and parts[1]["thoughtSignature"]

    off = {**BODY, "generationConfig": {"thinkingConfig": {"thinkingBudget": 0}}}
    assert "thoughtsTokenCount" not in generate(fake, off)[1]["usageMetadata"]
    assert "thoughtsTokenCount" not in generate(fake, model="gemini-2.5-flash-lite")[1]["usageMetadata"]


def test_scripted_thoughts_stream_first_with_the_signature_on_the_answer(fake: FakeGemini) -> None:
    fake.enqueue(Reply(text="four", thoughts="Two and two make four."))
    request = urllib.request.Request(
        fake.base_url + "/models/gemini-2.5-pro:streamGenerateContent?alt=sse", data=json.dumps(BODY).encode()
    )
    request.add_header("x-goog-api-key", KEY)
    with urllib.request.urlopen(request, timeout=10) as response:
        events = [json.loads(line[6:]) for line in response.read().decode().split("\r\n\r\n") if line]
    parts = events[0]["candidates"][0]["content"]["parts"]
    assert parts == [
        {"text": "Two and two make four.", "thought": True},
        {"text": "four", "thoughtSignature": parts[1]["thoughtSignature"]},
    ]
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"


# ─── Answers without text ───────────────────────────────────────────────────


def test_max_tokens_from_a_thinking_model_is_a_candidate_without_parts(fake: FakeGemini) -> None:
    fake.enqueue(Empty("MAX_TOKENS"))
    status, payload = generate(fake, {**BODY, "generationConfig": {"maxOutputTokens": 64}})
    assert status == 200
    assert payload["candidates"] == [{"content": {"role": "model"}, "finishReason": "MAX_TOKENS", "index": 0}]
    usage = payload["usageMetadata"]
    assert usage["thoughtsTokenCount"] == 64 and "candidatesTokenCount" not in usage


def test_safety_has_no_content_and_says_which_rating_blocked(fake: FakeGemini) -> None:
    fake.enqueue(Empty("SAFETY"))
    candidate = generate(fake)[1]["candidates"][0]
    assert "content" not in candidate and candidate["finishReason"] == "SAFETY"
    assert [r["category"] for r in candidate["safetyRatings"] if r.get("blocked")] == [
        "HARM_CATEGORY_DANGEROUS_CONTENT"
    ]
    with pytest.raises(ValueError, match=r"script Empty\('SAFETY'\)"):
        Reply(text="hidden", finish_reason="SAFETY")  # real Gemini never sends text with SAFETY
    with pytest.raises(ValueError, match="ends without text"):
        Empty("STOP")


def test_a_blocked_prompt_has_prompt_feedback_and_no_candidates(fake: FakeGemini) -> None:
    fake.enqueue(PromptBlocked("PROHIBITED_CONTENT"))
    status, payload = generate(fake)
    assert status == 200 and "candidates" not in payload
    assert payload["promptFeedback"] == {"blockReason": "PROHIBITED_CONTENT"}


def test_new_script_items_survive_the_control_api_json() -> None:
    items = [
        Empty("SAFETY"),
        PromptBlocked(),
        Reply(text="x", thoughts="t"),
        Fail(400, grpc_status="FAILED_PRECONDITION"),
        Fail(429, retry_after=0.2, quota_id="GenerateRequestsPerDayPerProjectPerModel-FreeTier"),
    ]
    assert [item_from_json(item_to_json(item)) for item in items] == items


# ─── Errors in the real API's shape ─────────────────────────────────────────


def test_a_429_has_quota_failure_help_and_retry_info_and_no_retry_after(fake: FakeGemini) -> None:
    fake.enqueue(Fail(429, retry_after=0.2, quota_id="GenerateRequestsPerDayPerProjectPerModel-FreeTier"))
    status, headers, body = call(fake, "/models/gemini-2.5-flash:generateContent", BODY)
    assert status == 429 and "Retry-After" not in headers
    error = body["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED"
    kinds = [detail["@type"].rsplit(".", 1)[1] for detail in error["details"]]
    assert kinds == ["QuotaFailure", "Help", "RetryInfo"]
    violation = error["details"][0]["violations"][0]
    assert violation["quotaDimensions"]["model"] == "gemini-2.5-flash"
    limit = rate_limit_of(json.dumps(body))
    assert limit is not None and limit.retry_delay == 0.2 and limit.daily
    assert limit.describe() == (
        "quota GenerateRequestsPerDayPerProjectPerModel-FreeTier "
        "(metric generativelanguage.googleapis.com/generate_content_free_tier_requests)"
    )


def test_a_wrong_key_is_400_api_key_invalid_and_a_region_is_failed_precondition(fake: FakeGemini) -> None:
    status, _, body = call(fake, "/models/gemini-2.5-flash:generateContent", BODY, key="wrong")
    assert (status, body["error"]["status"]) == (400, "INVALID_ARGUMENT")
    assert body["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    fake.enqueue(Fail(400, grpc_status="FAILED_PRECONDITION"))
    status, payload = generate(fake)
    assert (status, payload["error"]["status"]) == (400, "FAILED_PRECONDITION")
    assert payload["error"]["message"] == "User location is not supported for the API use."


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"maxTokens": 5}, "Unknown name \"maxTokens\" at 'generation_config': Cannot find field."),
        ({"thinkingConfig": {"budget": 1}}, "Unknown name \"budget\" at 'generation_config.thinking_config'"),
        ("hot", "Invalid value at 'generation_config'"),
    ],
)
def test_unknown_generation_config_fields_are_refused(fake: FakeGemini, config: Any, message: str) -> None:
    status, payload = generate(fake, {**BODY, "generationConfig": config})
    assert status == 400 and payload["error"]["status"] == "INVALID_ARGUMENT"
    assert message in payload["error"]["message"]
    assert (
        generate(fake, {**BODY, "generation_config": {"max_output_tokens": 5, "response_mime_type": "text/plain"}})[0]
        == 200
    )  # proto JSON accepts snake_case names too


# ─── Routes besides generateContent ─────────────────────────────────────────


def test_count_tokens_and_embeddings(fake: FakeGemini) -> None:
    status, _, counted = call(fake, "/models/gemini-2.5-flash:countTokens", BODY)
    assert status == 200 and counted["totalTokens"] == counted["promptTokensDetails"][0]["tokenCount"] > 0
    content = {"parts": [{"text": "hello"}]}
    one = call(fake, "/models/gemini-embedding-001:embedContent", {"content": content, "outputDimensionality": 8})
    assert one[0] == 200 and len(one[2]["embedding"]["values"]) == 8
    request = {"model": "models/gemini-embedding-001", "content": content, "outputDimensionality": 8}
    batch = call(fake, "/models/gemini-embedding-001:batchEmbedContents", {"requests": [request, request]})[2]
    assert batch["embeddings"] == [one[2]["embedding"]] * 2  # deterministic per text
    assert call(fake, "/models/gemini-embedding-001:embedContent", {"contents": []})[0] == 400
    assert fake.pending == 0 and [r.action for r in fake.requests][:2] == ["countTokens", "embedContent"]


def test_models_are_listed_paged_and_described(fake: FakeGemini) -> None:
    status, _, page = call(fake, "/models?pageSize=2")
    assert status == 200 and [m["name"] for m in page["models"]] == ["models/gemini-2.5-flash", "models/gemini-2.5-pro"]
    rest = call(fake, f"/models?pageSize=2&pageToken={page['nextPageToken']}")[2]
    assert "nextPageToken" not in rest and len(rest["models"]) == 2
    model = call(fake, "/models/gemini-2.5-pro")[2]
    assert model["name"] == "models/gemini-2.5-pro" and "generateContent" in model["supportedGenerationMethods"]
    assert model["thinking"] is True and model["inputTokenLimit"] == 1048576
    assert call(fake, "/models", key=None)[0] == 403  # listing needs a key, like everything else
