"""Keep secrets out of cassettes: redact before writing, and ``verify`` files afterwards.

Two rules, applied to every request, response and error on its way to disk:

* fields whose *name* says they hold a credential (``api_key``, ``authorization``, ...) lose
  their value (``configure_lm``'s ``api_key`` is dropped entirely: replay never needs it);
* any *string* anywhere (values, map keys, error messages, tracebacks) has key-shaped
  substrings replaced by ``<REDACTED:kind>``: Google ``AIza…`` keys and ``ya29.`` tokens,
  OpenAI ``sk-…`` / Anthropic ``sk-ant-…`` keys, ``Bearer …`` tokens and ``?key=…`` URL params.

``verify`` scans written files with the same patterns (raw text and parsed scalars, so an
escaped or folded key is caught too) and raises ``SecretLeak`` naming file, line and column
but never the secret itself.
"""

from __future__ import annotations

import re

TYPE_CHECKING = False  # typing stays off a mock worker's replay path
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from pathlib import Path
    from typing import Any

from dspy_bridge._exceptions import CassetteCorrupt, SecretLeak, UsageError
from dspy_bridge._secrets import redact_values

__all__ = [
    "REDACTED",
    "SENSITIVE_FIELDS",
    "Finding",
    "find_secrets",
    "redact_text",
    "scrub",
    "scrub_interaction",
    "verify",
]

REDACTED = "<REDACTED>"

# (kind, pattern). Random keys are told from words by their shape, not by what precedes them (a
# key glued to a letter is still caught): an ``sk-`` key must contain a run of 20 characters without
# a dash ("sk-learn-..." or "risk-assessment-plan-..." have none), a bearer token a digit
# ("the bearer instrument" is prose).
_PATTERNS: tuple[tuple[str, str], ...] = (
    ("google-api-key", r"AIza[0-9A-Za-z_\-]{35}"),
    ("google-oauth-token", r"ya29\.[0-9A-Za-z_\-]{20,}"),
    ("anthropic-key", r"sk-ant-(?=[A-Za-z0-9_\-]*?[A-Za-z0-9_]{20})[A-Za-z0-9_\-]+"),
    ("openai-key", r"sk-(?=[A-Za-z0-9_\-]*?[A-Za-z0-9_]{20})[A-Za-z0-9_\-]+"),
    ("bearer-token", r"(?i:bearer)\s+(?=[A-Za-z._~+/\-]*[0-9])[A-Za-z0-9._~+/\-]{16,}=*"),
    ("url-key-param", r"[?&](?i:key|api_?key|access_token)=[^&\s\"'#<>]{8,}"),
)
_COMPILED = tuple((kind, re.compile(pattern)) for kind, pattern in _PATTERNS)
_ANY = re.compile("|".join(f"(?:{pattern})" for _, pattern in _PATTERNS))

#: Field names (compared without case, ``-`` or ``_``) whose values are credentials.
SENSITIVE_FIELDS = frozenset(
    {
        "apikey",
        "xgoogapikey",
        "xapikey",
        "authorization",
        "proxyauthorization",
        "accesstoken",
        "refreshtoken",
        "clientsecret",
        "password",
    }
)
_DROPPED_ARGS = ("api_key",)  # removed from recorded request args: replay never needs them


def _field_is_sensitive(name: str) -> bool:
    return name.lower().replace("-", "").replace("_", "") in SENSITIVE_FIELDS


def _replacement(match: re.Match[str]) -> str:
    text = match.group(0)
    for kind, pattern in _COMPILED:
        if pattern.fullmatch(text):
            if kind == "bearer-token":
                return f"Bearer <REDACTED:{kind}>"
            if kind == "url-key-param":
                return text[: text.index("=") + 1] + f"<REDACTED:{kind}>"
            return f"<REDACTED:{kind}>"
    return REDACTED  # pragma: no cover - the combined pattern only matches one of the parts


def redact_text(text: str) -> str:
    """``text`` with every key-shaped substring replaced by ``<REDACTED:kind>``."""
    if not _ANY.search(text):
        return text
    return _ANY.sub(_replacement, text)


def scrub(value: Any, secrets: tuple[str, ...] = ()) -> Any:
    """A copy of plain data with credentials redacted (maps, lists and strings, recursively).

    ``secrets`` are exact values (e.g. the host's key) removed too, whatever their shape.
    """
    if isinstance(value, str):
        return redact_text(redact_values(value, secrets) if secrets else value)
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            new_key = scrub(key, secrets) if isinstance(key, str) else key
            if isinstance(key, str) and _field_is_sensitive(key) and item not in (None, ""):
                out[new_key] = REDACTED
            else:
                out[new_key] = scrub(item, secrets)
        return out
    if isinstance(value, list | tuple):
        return [scrub(item, secrets) for item in value]
    return value


def scrub_interaction(interaction: dict[str, Any], secrets: tuple[str, ...] = ()) -> dict[str, Any]:
    """Scrub one recorded ``{request, response}``; request args lose ``api_key`` entirely."""
    request = dict(interaction["request"])
    args = request.get("args")
    if isinstance(args, dict) and any(name in args for name in _DROPPED_ARGS):
        request["args"] = {key: value for key, value in args.items() if key not in _DROPPED_ARGS}
    return {"request": scrub(request, secrets), "response": scrub(interaction["response"], secrets)}


# -- verify ------------------------------------------------------------------------------------


class Finding:
    """One key-shaped string in a file: where, what kind, and a preview that hides the secret."""

    __slots__ = ("column", "kind", "line", "path", "preview")

    def __init__(self, path: Path, line: int, column: int, kind: str, secret: str) -> None:
        self.path = path
        self.line = line
        self.column = column
        self.kind = kind
        self.preview = f"{secret[:4]}...({len(secret)} chars)"

    def as_dict(self) -> dict[str, Any]:
        return {"file": str(self.path), "line": self.line, "column": self.column, "kind": self.kind}

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.kind} {self.preview}"


def _kind_of(text: str) -> str:
    for kind, pattern in _COMPILED:
        if pattern.fullmatch(text):
            return kind
    return "secret"  # pragma: no cover


def _scan_text(path: Path, text: str) -> list[Finding]:
    findings = []
    for number, line in enumerate(text.splitlines(), start=1):
        for match in _ANY.finditer(line):
            findings.append(Finding(path, number, match.start() + 1, _kind_of(match.group(0)), match.group(0)))
    return findings


def _scan_nodes(path: Path, text: str) -> list[Finding]:
    """Parsed scalars catch what raw text hides: escapes (``\\x41Iza``) and folded lines."""
    import yaml

    from dspy_bridge.cassettes._yamlio import SafeLoader

    try:
        root = yaml.compose(text, Loader=SafeLoader)
    except yaml.YAMLError:
        return []  # not YAML: the raw scan is all we can do
    findings: list[Finding] = []
    stack: list[yaml.Node] = [root] if root is not None else []
    seen: set[int] = set()  # a node shared by aliases (or containing itself) is scanned once
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            for match in _ANY.finditer(node.value):
                if match.group(0) not in text:  # shown verbatim: the raw scan already has it
                    mark = node.start_mark
                    findings.append(
                        Finding(path, mark.line + 1, mark.column + 1, _kind_of(match.group(0)), match.group(0))
                    )
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if (
                    isinstance(key, yaml.ScalarNode)
                    and _field_is_sensitive(key.value)
                    and isinstance(value, yaml.ScalarNode)
                    and value.tag != "tag:yaml.org,2002:null"
                    and value.value not in ("", "~", "null")
                    and not value.value.startswith("<REDACTED")
                ):
                    mark = value.start_mark
                    findings.append(Finding(path, mark.line + 1, mark.column + 1, f"{key.value}-field", value.value))
                stack.extend((key, value))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return findings


def find_secrets(path: str | Path) -> list[Finding]:
    """Every key-shaped string in one file (raw text and parsed YAML scalars)."""
    from pathlib import Path

    file = Path(path)
    text = file.read_text(encoding="utf-8", errors="replace")
    findings = _scan_text(file, text)
    if file.suffix in (".yaml", ".yml"):
        findings += _scan_nodes(file, text)
    return sorted(findings, key=lambda f: (f.line, f.column))


def _expand(paths: str | Path | Iterable[str | Path]) -> Iterator[Path]:
    from pathlib import Path

    items = [paths] if isinstance(paths, str | Path) else list(paths)
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
            if not found:
                raise UsageError(f"{path} holds no cassette (*.yaml or *.yml) to verify")
            yield from found
        elif path.exists():
            yield path
        else:
            raise UsageError(f"{path} does not exist")


def format_problem(path: Path) -> str | None:
    """Why ``path`` is not plain, bounded YAML data (``_limits``), or None if it is.

    Aliases that do not recurse are accepted here (HTTP cassettes are written by other tools);
    ``Cassette.load`` is stricter and refuses every alias.
    """
    import yaml

    from dspy_bridge.cassettes._format import max_bytes
    from dspy_bridge.cassettes._limits import LimitError, check_nodes, compose
    from dspy_bridge.cassettes._yamlio import SafeLoader

    try:
        if path.stat().st_size > max_bytes():
            return f"{path}: larger than {max_bytes()} bytes"
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"
    try:
        check_nodes(compose(text, SafeLoader), allow_aliases=True)
    except LimitError as exc:
        where = f"{path}:{exc.line}:{exc.column}" if exc.line is not None else str(path)
        return f"{where}: {exc.problem}"
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        return f"{where}: not YAML ({' '.join(str(p) for p in (exc.context, exc.problem) if p)})"
    except yaml.YAMLError as exc:
        return f"{path}: not YAML ({exc})"
    return None


def verify(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """Scan cassette files (or directories of them); raise ``SecretLeak`` on anything key-shaped,
    ``CassetteCorrupt`` on a file that is not plain bounded YAML data (unsafe or unknown tags, dates,
    huge ints, NaN, recursive aliases, too deep) and ``UsageError`` on a missing path or an empty folder.

    Returns the files scanned. The error names file, line and column, never the secret.
    """
    files = list(_expand(paths))
    findings = [finding for file in files for finding in find_secrets(file)]
    problems = [problem for file in files if (problem := format_problem(file)) is not None]
    if findings:
        shown = "\n".join(f"  {finding}" for finding in findings[:20])
        more = f"\n  ... and {len(findings) - 20} more" if len(findings) > 20 else ""
        raise SecretLeak(
            f"{len(findings)} key-shaped string(s) found in {len({f.path for f in findings})} file(s):\n"
            f"{shown}{more}\n"
            "Remove them (re-recording scrubs by default) and rotate any real key that was exposed.",
            findings=[finding.as_dict() for finding in findings],
        )
    if problems:
        shown = "\n".join(f"  {problem}" for problem in problems[:20])
        raise CassetteCorrupt(
            f"{len(problems)} file(s) are not plain cassette data:\n{shown}\n"
            "Bridge cassettes hold maps, lists, strings, finite numbers, booleans and null only.",
            problems=problems,
        )
    return files
