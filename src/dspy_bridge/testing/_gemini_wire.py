"""Gemini's v1beta wire format as the fake serves it: the route, the request checks Gemini makes
(and the exact messages it refuses with), and response payloads split into stream chunks.

Facts shared with the cassette proxy (the error table and error body shape) live in
``dspy_bridge._gemini``; this module holds what only the fake needs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BAD_KEY",
    "GENERATE_ACTIONS",
    "GENERATION_FIELDS",
    "KNOWN_FIELDS",
    "MISSING_KEY",
    "MODELS_ROUTE",
    "ROUTE",
    "Thinking",
    "bad_key_details",
    "blocked_prompt_payload",
    "body_problem",
    "chunk_payloads",
    "empty_payload",
    "is_thinking_model",
    "prompt_tokens",
    "snake",
    "tokens",
]

MISSING_KEY = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)
BAD_KEY = "API key not valid. Please pass a valid API key."
KNOWN_FIELDS = frozenset(
    {
        "contents", "systemInstruction", "system_instruction", "generationConfig", "generation_config",
        "safetySettings", "safety_settings", "tools", "toolConfig", "tool_config", "cachedContent",
        "cached_content", "model", "labels", "store", "serviceTier", "service_tier",
    }
)  # fmt: skip
# https://ai.google.dev/api/generate-content#v1beta.GenerationConfig (proto JSON: camelCase or snake_case).
GENERATION_FIELDS = frozenset(
    {
        "stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema", "_responseJsonSchema",
        "responseModalities", "candidateCount", "maxOutputTokens", "temperature", "topP", "topK", "seed",
        "presencePenalty", "frequencyPenalty", "responseLogprobs", "logprobs", "enableEnhancedCivicAnswers",
        "speechConfig", "thinkingConfig", "imageConfig", "mediaResolution",
    }
)  # fmt: skip
THINKING_FIELDS = frozenset({"includeThoughts", "thinkingBudget", "thinkingLevel"})  # ...#ThinkingConfig
ROUTE = re.compile(
    r"^/v1beta/(?P<model>(?:models|tunedModels)/[^/:]+):"
    r"(?P<action>generateContent|streamGenerateContent|countTokens|embedContent|batchEmbedContents)$"
)
GENERATE_ACTIONS = frozenset({"generateContent", "streamGenerateContent"})
MODELS_ROUTE = re.compile(r"^/v1beta/models(?:/(?P<model>[^/:]+))?$")  # GET: https://ai.google.dev/api/models


def tokens(text: str) -> int:
    return max(1, (len(text) + 3) // 4)


def snake(name: str) -> str:
    """``generationConfig`` → ``generation_config``: the proto field name Gemini's messages use."""
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name.lstrip("_")).lower()


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.title() for word in rest)


def bad_key_details() -> list[dict[str, Any]]:
    # The body real Gemini sends for a wrong key: HTTP 400 INVALID_ARGUMENT (not 401/403), ErrorInfo
    # reason API_KEY_INVALID (https://ai.google.dev/gemini-api/docs/troubleshooting; recorded in
    # public issue threads, e.g. google-gemini/gemini-cli and googleapis/python-genai).
    return [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"},
        },
        {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": BAD_KEY},
    ]


def _unknown(mapping: Mapping[str, Any], known: frozenset[str]) -> list[str]:
    return sorted(k for k in mapping if k not in known and _camel(k) not in known)


def _config_problem(config: Any) -> str | None:
    """Gemini's 400 for a generationConfig it does not know (proto JSON parsing rejects unknown names)."""
    if not isinstance(config, Mapping):
        return (
            "Invalid value at 'generation_config' "
            f"(type.googleapis.com/google.ai.generativelanguage.v1beta.GenerationConfig), {json.dumps(config)}"
        )
    unknown = _unknown(config, GENERATION_FIELDS)
    if unknown:
        return (
            f"Invalid JSON payload received. Unknown name \"{unknown[0]}\" at 'generation_config': Cannot find field."
        )
    thinking = config.get("thinkingConfig", config.get("thinking_config"))
    if isinstance(thinking, Mapping):
        unknown = _unknown(thinking, THINKING_FIELDS)
        if unknown:
            return (
                f'Invalid JSON payload received. Unknown name "{unknown[0]}" at '
                "'generation_config.thinking_config': Cannot find field."
            )
    return None


def body_problem(body: Any, action: str = "generateContent") -> str | None:
    """Gemini's 400 message for a body it would refuse, or None (https://ai.google.dev/api)."""
    if not isinstance(body, dict):
        return "Invalid JSON payload received. Expected an object."
    if action == "embedContent":  # https://ai.google.dev/api/embeddings#method:-models.embedcontent
        known = frozenset({"model", "content", "taskType", "title", "outputDimensionality"})
        unknown = _unknown(body, known)
        if unknown:
            return f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.'
        return (
            None
            if isinstance(body.get("content"), Mapping)
            else "* EmbedContentRequest.content: content is not specified\n"
        )
    if action == "batchEmbedContents":
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            return "* BatchEmbedContentsRequest.requests: requests is not specified\n"
        for request in requests:
            problem = body_problem(request, "embedContent")
            if problem:
                return problem
        return None
    if action == "countTokens":  # https://ai.google.dev/api/tokens: contents, or a whole generateContentRequest
        inner = body.get("generateContentRequest", body.get("generate_content_request"))
        if inner is not None:
            return body_problem(inner)
        return None if body.get("contents") else "* CountTokensRequest.contents: contents is not specified\n"
    unknown = sorted(k for k in body if k not in KNOWN_FIELDS)
    if unknown:
        return f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.'
    if not body.get("contents"):
        return "* GenerateContentRequest.contents: contents is not specified\n"
    config = body.get("generationConfig", body.get("generation_config"))
    return None if config is None else _config_problem(config)


def prompt_tokens(body: Mapping[str, Any]) -> int:
    return tokens(json.dumps([body.get("contents"), body.get("systemInstruction") or body.get("system_instruction")]))


def is_thinking_model(model: str) -> bool:
    """2.5 Pro/Flash and 3.x think by default; 2.5 Flash-Lite does not (https://ai.google.dev/gemini-api/docs/thinking)."""
    return (model.startswith("gemini-2.5") or model.startswith("gemini-3")) and "flash-lite" not in model


@dataclass(frozen=True, slots=True)
class Thinking:
    """How a thinking model's answer looks: thought text shown (or not), tokens spent, the signature."""

    thoughts: str | None  # a thought summary part is sent only when asked for (includeThoughts) or scripted
    tokens: int  # usageMetadata.thoughtsTokenCount; 0: the model did not think
    signature: str  # opaque; real ones are base64 (https://ai.google.dev/gemini-api/docs/thought-signatures)

    @classmethod
    def for_request(cls, body: Mapping[str, Any], model: str, answer: str, scripted: str | None) -> Thinking:
        config = body.get("generationConfig") or body.get("generation_config") or {}
        thinking = config.get("thinkingConfig") or config.get("thinking_config") or {}
        budget = thinking.get("thinkingBudget", thinking.get("thinking_budget"))
        thinks = scripted is not None or (is_thinking_model(model) and budget != 0)
        if not thinks:
            return cls(None, 0, "")
        shown = scripted
        if shown is None and thinking.get("includeThoughts", thinking.get("include_thoughts")):
            shown = "**Working it out**\n\nI read the question and the fields it asks for, then wrote each one."
        digest = hashlib.sha256((model + answer).encode()).digest()
        spent = tokens(shown) if shown else 3 * tokens(answer) + digest[0] % 64
        return cls(shown, spent, base64.b64encode(digest * 3).decode())


def _usage(body: Mapping[str, Any], out_tokens: int | None, thoughts: int) -> dict[str, Any]:
    prompt = prompt_tokens(body)
    usage: dict[str, Any] = {"promptTokenCount": prompt}
    if out_tokens is not None:
        usage["candidatesTokenCount"] = out_tokens
    usage["totalTokenCount"] = prompt + (out_tokens or 0) + thoughts  # thoughts count towards the total
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    # Output only, the tier the call was served on (UsageMetadata.serviceTier in Google's gen-AI SDK types:
    # https://googleapis.github.io/kotlin-genai/google-genai-kotlin/com.google.genai.kotlin.types/-usage-metadata/).
    usage["serviceTier"] = str(body.get("serviceTier") or body.get("service_tier") or "standard")
    return usage


def chunk_payloads(
    body: Mapping[str, Any], text: str, model: str, finish: str, response_id: str, size: int, thinking: Thinking
) -> list[dict[str, Any]]:
    """The response split into chunks of ``size`` characters; the last carries finishReason.

    Layout from https://ai.google.dev/api/generate-content#v1beta.GenerateContentResponse: candidates,
    usageMetadata, modelVersion, responseId. A thinking model's thought summary comes first as its own
    part (``"thought": true``) and the first answer part carries the ``thoughtSignature``
    (https://ai.google.dev/gemini-api/docs/thinking#summaries).
    """
    pieces = [text[i : i + size] for i in range(0, len(text), size)] or [""]
    out: list[dict[str, Any]] = []
    sent = ""
    for i, piece in enumerate(pieces):
        sent += piece
        part: dict[str, Any] = {"text": piece}
        parts = [part]
        if i == 0 and thinking.thoughts is not None:
            parts.insert(0, {"text": thinking.thoughts, "thought": True})
            part["thoughtSignature"] = thinking.signature
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
        if i == len(pieces) - 1:
            candidate["finishReason"] = finish
        candidate["index"] = 0
        usage = _usage(body, tokens(sent), thinking.tokens)
        out.append(
            {"candidates": [candidate], "usageMetadata": usage, "modelVersion": model, "responseId": response_id}
        )
    return out


def _ratings(blocked: str | None) -> list[dict[str, Any]]:
    """safetyRatings as Gemini lists them (https://ai.google.dev/api/generate-content#safetyrating)."""
    categories = (
        "HARM_CATEGORY_SEXUALLY_EXPLICIT", "HARM_CATEGORY_HATE_SPEECH", "HARM_CATEGORY_HARASSMENT",
        "HARM_CATEGORY_DANGEROUS_CONTENT",
    )  # fmt: skip
    ratings: list[dict[str, Any]] = []
    for category in categories:
        rating: dict[str, Any] = {"category": category, "probability": "NEGLIGIBLE"}
        if category == blocked:
            rating.update(probability="HIGH", blocked=True)
        ratings.append(rating)
    return ratings


def empty_payload(body: Mapping[str, Any], model: str, finish: str, response_id: str) -> dict[str, Any]:
    """A candidate without text.

    MAX_TOKENS from a thinking model that spent the whole budget thinking: ``content`` holds only the role,
    no ``parts``, and usage has no candidatesTokenCount (recorded in the Gemini forum thread "finishReason
    MAX_TOKENS but text is empty", https://discuss.ai.google.dev/t/finishreason-max-tokens-but-text-is-empty/81874).
    SAFETY and the other blocking reasons: no ``content`` at all, with safetyRatings
    (https://ai.google.dev/api/generate-content#candidate, https://ai.google.dev/gemini-api/docs/safety-settings).
    """
    candidate: dict[str, Any]
    if finish == "MAX_TOKENS":
        config = body.get("generationConfig") or body.get("generation_config") or {}
        budget = int(config.get("maxOutputTokens") or config.get("max_output_tokens") or 1024)
        candidate = {"content": {"role": "model"}, "finishReason": finish, "index": 0}
        usage = _usage(body, None, budget)
    else:
        candidate = {"finishReason": finish, "index": 0, "safetyRatings": _ratings("HARM_CATEGORY_DANGEROUS_CONTENT")}
        usage = _usage(body, None, 0)
    return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": model, "responseId": response_id}


def blocked_prompt_payload(body: Mapping[str, Any], model: str, reason: str, response_id: str) -> dict[str, Any]:
    """The prompt itself refused: no candidates, promptFeedback.blockReason
    (https://ai.google.dev/api/generate-content#PromptFeedback)."""
    feedback: dict[str, Any] = {"blockReason": reason}
    if reason == "SAFETY":
        feedback["safetyRatings"] = _ratings("HARM_CATEGORY_DANGEROUS_CONTENT")
    return {
        "promptFeedback": feedback,
        "usageMetadata": _usage(body, None, 0),
        "modelVersion": model,
        "responseId": response_id,
    }
