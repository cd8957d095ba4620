"""The fake's answers besides generateContent: model listing, countTokens and embeddings.

Shapes from the API reference: https://ai.google.dev/api/models (``Model``, ``ListModelsResponse``),
https://ai.google.dev/api/tokens (``CountTokensResponse``), https://ai.google.dev/api/embeddings
(``EmbedContentResponse``, ``BatchEmbedContentsResponse``). Values are deterministic: an embedding is
seeded by a SHA-256 of its text, so the same text always embeds the same way.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Iterable, Mapping
from typing import Any

from dspy_bridge.testing._gemini_wire import prompt_tokens

__all__ = ["CATALOG", "batch_embeddings", "count_tokens", "embedding", "model_info", "models_page"]

_GENERATE = ["generateContent", "countTokens", "createCachedContent", "batchGenerateContent"]
# (name, display name, input limit, output limit, methods, thinks): a subset of what GET /v1beta/models lists.
CATALOG: tuple[tuple[str, str, int, int, list[str], bool], ...] = (
    ("gemini-2.5-flash", "Gemini 2.5 Flash", 1048576, 65536, _GENERATE, True),
    ("gemini-2.5-pro", "Gemini 2.5 Pro", 1048576, 65536, _GENERATE, True),
    ("gemini-2.5-flash-lite", "Gemini 2.5 Flash-Lite", 1048576, 65536, _GENERATE, True),
    (
        "gemini-embedding-001",
        "Gemini Embedding 001",
        2048,
        1,
        ["embedContent", "countTextTokens", "countTokens"],
        False,
    ),
)
_EMBEDDING_SIZE = (
    3072  # gemini-embedding-001's default outputDimensionality (https://ai.google.dev/gemini-api/docs/embeddings)
)


def model_info(name: str) -> dict[str, Any]:
    """One ``Model`` resource; a model outside the catalog is described like a Flash model."""
    found = next((entry for entry in CATALOG if entry[0] == name), None)
    _, display, limit_in, limit_out, methods, thinks = found or (name, name, 1048576, 65536, _GENERATE, True)
    info: dict[str, Any] = {
        "name": f"models/{name}",
        "version": "001",
        "displayName": display,
        "description": f"{display} (served by dspy-bridge's fake Gemini)",
        "inputTokenLimit": limit_in,
        "outputTokenLimit": limit_out,
        "supportedGenerationMethods": methods,
    }
    if "generateContent" in methods:
        info.update(temperature=1, topP=0.95, topK=64, maxTemperature=2, thinking=thinks)
    return info


def models_page(names: Iterable[str], page_size: int | None, page_token: str | None) -> dict[str, Any]:
    """``ListModelsResponse``: ``models`` and, when more remain, ``nextPageToken`` (default page size 50)."""
    ordered = list(names)
    start = int(page_token) if page_token and page_token.isdigit() else 0
    size = max(1, min(page_size or 50, 1000))
    out: dict[str, Any] = {"models": [model_info(name) for name in ordered[start : start + size]]}
    if start + size < len(ordered):
        out["nextPageToken"] = str(start + size)
    return out


def count_tokens(body: Mapping[str, Any]) -> dict[str, Any]:
    """``CountTokensResponse`` for ``contents`` or a whole ``generateContentRequest``."""
    inner = body.get("generateContentRequest") or body.get("generate_content_request") or body
    total = prompt_tokens(inner)
    return {"totalTokens": total, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": total}]}


def _text(content: Any) -> str:
    parts = content.get("parts") if isinstance(content, Mapping) else None
    return "".join(str(p.get("text", "")) for p in parts or () if isinstance(p, Mapping))


def embedding(request: Mapping[str, Any]) -> dict[str, Any]:
    """``ContentEmbedding`` for one ``EmbedContentRequest``: unit length, ``outputDimensionality`` long."""
    size = int(request.get("outputDimensionality") or request.get("output_dimensionality") or _EMBEDDING_SIZE)
    seed = json.dumps([_text(request.get("content")), request.get("taskType")]).encode()
    stream = b"".join(hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range((size * 4 + 31) // 32))
    raw = [v / 2**31 - 1.0 for v in struct.unpack(f">{size}I", stream[: size * 4])]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return {"values": [round(v / norm, 6) for v in raw]}


def batch_embeddings(body: Mapping[str, Any]) -> dict[str, Any]:
    """``BatchEmbedContentsResponse``: one embedding per request, in order."""
    return {"embeddings": [embedding(request) for request in body.get("requests") or ()]}
