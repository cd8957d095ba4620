"""``cassettes diff A B``: two cassettes of one level compared interaction by interaction.

Interactions are paired by their requests (``difflib.SequenceMatcher`` over request fingerprints, so an
inserted or removed recording does not shift every later pair); a pair whose request or response differs
is shown as a unified diff of both interactions as YAML. What always differs between two recordings of
the same thing is left out: bridge ``meta`` is shown but never counts, HTTP headers are compared only
with ``headers=True``, a loopback host's port (the fake Gemini, the proxy) is ignored, and so are per-call
ids and times at the top of a JSON answer (``responseId``; OpenAI's ``id``, ``created``, ``system_fingerprint``).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from dspy_bridge._exceptions import UsageError

__all__ = ["CassetteDiff", "diff_cassettes"]

_VOLATILE_META = {"created", "run_id", "run_start"}  # differ between any two recordings
_VOLATILE_BODY = ("responseId", "id", "created", "system_fingerprint")  # per-call ids and times (Gemini, OpenAI)
_LOOPBACK = re.compile(r"^(127\.0\.0\.1|localhost|\[::1\])(:\d+)?$")


from dspy_bridge.cassettes._verdict import REGRESSION, change_verdicts


class _Dumper(yaml.SafeDumper):
    """Block style, multi-line strings as ``|`` blocks: a changed prompt line shows as one changed line."""


def _str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text and not text.endswith((" ", "\t")) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _str)


def _text(body: Any) -> Any:
    """An HTTP body as data: vcrpy's ``{string: …}``, bytes decoded, JSON (or SSE ``data:`` lines) parsed."""
    if isinstance(body, dict) and set(body) <= {"string", "encoding"}:
        body = body.get("string")
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not isinstance(body, str):
        return body
    try:
        return json.loads(body)
    except ValueError:
        pass
    events = [line[5:].strip() for line in body.splitlines() if line.startswith("data:")]
    if events:
        parsed = []
        for event in events:
            try:
                parsed.append(json.loads(event))
            except ValueError:
                parsed.append(event)
        return {"sse": parsed}
    return body


def _http(item: dict[str, Any], headers: bool) -> dict[str, Any]:
    request, response = item["request"], item["response"]
    uri = urlsplit(str(request.get("uri", "")))
    host = "loopback" if _LOOPBACK.match(uri.netloc) else uri.netloc
    shown_request: dict[str, Any] = {
        "method": request.get("method"),
        "uri": f"{uri.scheme}://{host}{uri.path}" + (f"?{uri.query}" if uri.query else ""),
        "body": _text(request.get("body")),
    }
    status = response.get("status") or {}
    body = _text(response.get("body"))
    if isinstance(body, dict):
        body = {key: value for key, value in body.items() if key not in _VOLATILE_BODY}
    shown_response: dict[str, Any] = {"status": status.get("code"), "body": body}
    if headers:
        shown_request["headers"] = request.get("headers")
        shown_response["headers"] = response.get("headers")
    return {"request": shown_request, "response": shown_response}


def _fingerprint(item: dict[str, Any]) -> str:
    return json.dumps(item["request"], sort_keys=True, default=str)


def _yaml_lines(item: dict[str, Any]) -> list[str]:
    text: str = yaml.dump(item, Dumper=_Dumper, sort_keys=True, allow_unicode=True, width=2**20)
    return text.splitlines()


def _title(level: str, item: dict[str, Any]) -> str:
    request = item["request"]
    if level == "http":
        return f"{request.get('method')} {urlsplit(str(request.get('uri'))).path}"
    args = request.get("args") or {}
    program = f" {args['program_id']}" if isinstance(args.get("program_id"), str) else ""
    return f"{request.get('command')}{program}"


@dataclass
class CassetteDiff:
    a: str
    b: str
    level: str
    counts: dict[str, int] = field(default_factory=lambda: {"same": 0, "differ": 0, "only_a": 0, "only_b": 0})
    meta: dict[str, list[Any]] = field(default_factory=dict)  # key -> [a, b] (shown, never counted)
    changes: list[dict[str, Any]] = field(default_factory=list)  # {kind, a, b, title, diff, verdicts}
    with_verdicts: bool = False  # print each change's verdicts (``cassettes diff --verdict``)

    @property
    def same(self) -> bool:
        return not self.changes

    @property
    def regressions(self) -> int:
        """Changes with at least one regression (a recording only one side has is one)."""
        return sum(1 for c in self.changes if any(v["verdict"] == REGRESSION for v in c.get("verdicts") or []))

    def as_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "level": self.level,
            "same": self.same,
            "counts": self.counts,
            "meta": self.meta,
            "changes": self.changes,
            **({"regressions": self.regressions} if self.with_verdicts else {}),
        }

    def lines(self) -> Iterator[str]:
        yield f"--- {self.a}"
        yield f"+++ {self.b}"
        for key, (old, new) in self.meta.items():
            yield f"meta {key}: {old} → {new}  (not counted)"
        for change in self.changes:
            if change["kind"] == "only_a":
                yield f"@@ only in A: [{change['a']}] {change['title']}"
            elif change["kind"] == "only_b":
                yield f"@@ only in B: [{change['b']}] {change['title']}"
            else:
                yield f"@@ [{change['a']}] → [{change['b']}] {change['title']}: {change['what']}"
            yield from change["diff"]
            if self.with_verdicts:
                for verdict in change.get("verdicts") or []:
                    yield f"   verdict {verdict['field']}: {verdict['verdict']} ({verdict['reason']})"
        c = self.counts
        yield (
            f"{'same' if self.same else 'different'}: {c['same']} interaction(s) the same, {c['differ']} differ, "
            f"{c['only_a']} only in A, {c['only_b']} only in B"
        ) + (f"; {self.regressions} with a regression" if self.with_verdicts else "")


def diff_cassettes(
    a: Path, b: Path, *, context: int = 3, headers: bool = False, verdicts: bool = False
) -> CassetteDiff:
    """Compare two cassettes; ``UsageError`` for two levels, ``CassetteError``/``OSError`` if unreadable.
    Every change carries verdicts (``cassettes._verdict``); ``verdicts=True`` prints them."""
    from dspy_bridge.cassettes._inventory import interactions_of

    level_a, meta_a, items_a = interactions_of(a)
    level_b, meta_b, items_b = interactions_of(b)
    if level_a != level_b:
        raise UsageError(f"{a} is a {level_a} cassette and {b} a {level_b} one: diff compares two of one level")
    if level_a == "http":
        items_a = [_http(item, headers) for item in items_a]
        items_b = [_http(item, headers) for item in items_b]
    result = CassetteDiff(str(a), str(b), level_a, with_verdicts=verdicts)
    for key in sorted((set(meta_a) | set(meta_b)) - _VOLATILE_META):
        if meta_a.get(key) != meta_b.get(key):
            result.meta[key] = [meta_a.get(key), meta_b.get(key)]
    matcher = difflib.SequenceMatcher(
        None, [_fingerprint(i) for i in items_a], [_fingerprint(i) for i in items_b], autojunk=False
    )
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        pairs = list(zip(range(i1, i2), range(j1, j2), strict=False))
        for i, j in pairs:
            _compare(result, level_a, i, j, items_a[i], items_b[j], context)
        for i in range(i1 + len(pairs), i2):
            _only(result, "only_a", level_a, i, items_a[i])
        for j in range(j1 + len(pairs), j2):
            _only(result, "only_b", level_a, j, items_b[j])
        del tag  # equal and replace both pair up by position; the leftovers are insertions or deletions
    return result


def _compare(
    result: CassetteDiff, level: str, i: int, j: int, old: dict[str, Any], new: dict[str, Any], context: int
) -> None:
    if old == new:
        result.counts["same"] += 1
        return
    result.counts["differ"] += 1
    what = "the request differs" if old["request"] != new["request"] else "the response differs"
    if old["request"] != new["request"] and old["response"] != new["response"]:
        what = "the request and the response differ"
    diff = difflib.unified_diff(_yaml_lines(old), _yaml_lines(new), f"A[{i}]", f"B[{j}]", n=context, lineterm="")
    lines = [line for line in diff if not line.startswith(("---", "+++"))]
    verdicts = [v.as_dict() for v in change_verdicts(level, old, new)]
    result.changes.append(
        {
            "kind": "differ",
            "a": i,
            "b": j,
            "title": _title(level, old),
            "what": what,
            "diff": lines,
            "verdicts": verdicts,
        }
    )


def _only(result: CassetteDiff, kind: str, level: str, index: int, item: dict[str, Any]) -> None:
    result.counts[kind] += 1
    sign = "-" if kind == "only_a" else "+"
    where = {"a": index, "b": None} if kind == "only_a" else {"a": None, "b": index}
    result.changes.append(
        {
            "kind": kind,
            **where,
            "title": _title(level, item),
            "what": "",
            "diff": [f"{sign}{line}" for line in _yaml_lines(item)],
            "verdicts": [
                {
                    "field": "recording",
                    "verdict": REGRESSION,
                    "reason": "only in A" if kind == "only_a" else "only in B",
                }
            ],
        }
    )
