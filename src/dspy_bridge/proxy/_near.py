"""Near matching for drifting prompts (opt-in: ``near_match=0.9``): the last resort before a miss.

Only when exact matching (vcrpy's matchers) found nothing to play. A recording is a candidate when the
method, path and query are the same and the JSON bodies are equal *apart from their prompt text*
(every ``text`` string; volatile fields dropped first). Among candidates not yet played (or all, if
repeats are allowed) the one whose prompt text — whitespace normalised — is most similar wins, if
``difflib``'s ratio reaches the threshold. The proxy answers with it and reports the similarity, so the
plugin can name the test in its summary: a near match is never silent.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["VOLATILE_FIELDS", "NearMatch", "drop_fields", "find_near_match"]

#: Dropped from both bodies before comparing, besides the cassette's own ``ignore_body_fields``.
VOLATILE_FIELDS = ("generationConfig.seed", "contents.*.parts.*.thoughtSignature")
_SPACE = re.compile(r"\s+")


def _drop_path(node: Any, path: Sequence[str]) -> None:
    if not path:
        return
    head, rest = path[0], path[1:]
    if isinstance(node, dict):
        keys = list(node) if head == "*" else [head] if head in node else []
        for key in keys:
            if rest:
                _drop_path(node[key], rest)
            else:
                del node[key]
    elif isinstance(node, list):
        if head == "*":
            indexes = list(range(len(node)))
        elif head.isdigit() and int(head) < len(node):
            indexes = [int(head)]
        else:
            indexes = []
        for index in reversed(indexes):
            if rest:
                _drop_path(node[index], rest)
            else:
                del node[index]


def drop_fields(data: Any, fields: Sequence[str]) -> None:
    """Remove dotted JSON paths (``*`` for any key or list item) from ``data``, in place."""
    for field in fields:
        _drop_path(data, field.split("."))


@dataclass(frozen=True, slots=True)
class NearMatch:
    index: int  # in the cassette's interactions
    similarity: float


def _split(body: Any, ignore: Sequence[str]) -> tuple[str, str] | None:
    """(normalised prompt text, canonical JSON of everything else) of a request body; None if not JSON."""
    raw = body.encode() if isinstance(body, str) else body
    try:
        data = json.loads(raw or b"")
    except (ValueError, TypeError):
        return None
    drop_fields(data, [*VOLATILE_FIELDS, *ignore])
    texts: list[str] = []

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key == "text" and isinstance(value, str):
                    texts.append(value)
                    out[key] = ""
                else:
                    out[key] = strip(value)
            return out
        if isinstance(node, list):
            return [strip(item) for item in node]
        return node

    rest = strip(data)
    return _SPACE.sub(" ", " ".join(texts)).strip(), json.dumps(rest, sort_keys=True)


def find_near_match(cassette: Any, request: Any, threshold: float, ignore: Sequence[str]) -> NearMatch | None:
    """The most similar playable recording of ``request`` (already filtered by the cassette's hooks)."""
    wanted = _split(request.body, ignore)
    if wanted is None:
        return None
    prompt, rest = wanted
    best: NearMatch | None = None
    for index, (stored, _response) in enumerate(cassette.data):
        if cassette.play_counts[index] and not cassette.allow_playback_repeats:
            continue
        if (stored.method, stored.path, stored.query) != (request.method, request.path, request.query):
            continue
        theirs = _split(stored.body, ignore)
        if theirs is None or theirs[1] != rest:
            continue
        ratio = 1.0 if theirs[0] == prompt else difflib.SequenceMatcher(None, prompt, theirs[0], autojunk=False).ratio()
        if ratio >= threshold and (best is None or ratio > best.similarity):
            best = NearMatch(index, ratio)
    return best
