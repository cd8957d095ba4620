"""Gemini's v1beta wire format as the fake serves it: the route, the request checks Gemini makes
(and the exact messages it refuses with), and response payloads split into stream chunks.

Facts shared with the cassette proxy (the error table and error body shape) live in
``dspy_bridge._gemini``; this module holds what only the fake needs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "BAD_KEY",
    "KNOWN_FIELDS",
    "MISSING_KEY",
    "ROUTE",
    "bad_key_details",
    "body_problem",
    "chunk_payloads",
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
ROUTE = re.compile(
    r"^/v1beta/(?P<model>(?:models|tunedModels)/[^/:]+):(?P<action>generateContent|streamGenerateContent)$"
)


def tokens(text: str) -> int:
    return max(1, (len(text) + 3) // 4)


def bad_key_details() -> list[dict[str, Any]]:
    return [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"},
        },
        {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": BAD_KEY},
    ]


def body_problem(body: Any) -> str | None:
    """Gemini's 400 message for a body it would refuse, or None."""
    if not isinstance(body, dict):
        return "Invalid JSON payload received. Expected an object."
    unknown = sorted(k for k in body if k not in KNOWN_FIELDS)
    if unknown:
        return f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.'
    if not body.get("contents"):
        return "* GenerateContentRequest.contents: contents is not specified\n"
    return None


def chunk_payloads(
    body: Mapping[str, Any], text: str, model: str, finish: str, response_id: str, size: int
) -> list[dict[str, Any]]:
    """The response split into chunks of ``size`` characters; the last carries finishReason."""
    prompt = json.dumps([body.get("contents"), body.get("systemInstruction") or body.get("system_instruction")])
    prompt_tokens = tokens(prompt)
    pieces = [text[i : i + size] for i in range(0, len(text), size)] or [""]
    out: list[dict[str, Any]] = []
    sent = ""
    for i, piece in enumerate(pieces):
        sent += piece
        candidate: dict[str, Any] = {"content": {"parts": [{"text": piece}], "role": "model"}}
        if i == len(pieces) - 1:
            candidate["finishReason"] = finish
        candidate["index"] = 0
        out_tokens = tokens(sent)
        usage = {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": out_tokens,
            "totalTokenCount": prompt_tokens + out_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
        }
        out.append(
            {"candidates": [candidate], "usageMetadata": usage, "modelVersion": model, "responseId": response_id}
        )
    return out
