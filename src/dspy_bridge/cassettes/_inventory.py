"""Read-only inventory of cassettes on disk, both levels: what ``dspy-bridge cassettes list|show|stats`` prints.

Bridge cassettes (``*.bridge.yaml``, legacy ``*.yaml``) are read with ``Cassette.load`` (the same checks
as replay); HTTP cassettes (``*.http.yaml``, vcrpy's format) with the safe YAML loader and a shape check.
Nothing here writes a file or imports DSPy: the installed DSPy version comes from package metadata.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dspy_bridge._exceptions import CassetteCorrupt, CassetteError, UsageError

__all__ = [
    "Entry",
    "discover",
    "header_entry",
    "installed_dspy_version",
    "interactions_of",
    "read_entry",
    "render_interaction",
    "stale_reasons",
    "stats",
]

BRIDGE, HTTP = "bridge", "http"
_MODEL_IN_URI = re.compile(r"/models/([^/:?]+)")
_EXCERPT = 400


@dataclass
class Entry:
    """One cassette file as ``list`` shows it; ``error`` set (and the rest mostly empty) when it is corrupt."""

    path: str
    level: str
    size: int
    interactions: int = 0
    recorded: str | None = None  # ISO time: bridge meta ``created``; HTTP the first response ``Date``; else mtime
    age_days: float | None = None
    recorded_against: str | None = None  # bridge meta; HTTP: the host the answers came from
    dspy_version: str | None = None
    dspy_bridge_version: str | None = None
    models: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # reasons, only with ``--stale-days``
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def installed_dspy_version() -> str | None:
    """The installed DSPy distribution's version, read from its metadata (DSPy is never imported)."""
    from importlib import metadata

    try:
        return metadata.version("dspy")
    except metadata.PackageNotFoundError:
        return None


# -- finding files ----------------------------------------------------------------------------------


def level_of(path: Path) -> str:
    """``http`` for ``*.http.yaml`` and for a plain ``*.yaml`` in vcrpy's shape (requests with a ``uri``, no
    ``meta``: e.g. written by pytest-recording itself); ``bridge`` otherwise."""
    if path.name.endswith(".http.yaml"):
        return HTTP
    if path.name.endswith(".bridge.yaml"):
        return BRIDGE
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return BRIDGE
    vcr_shaped = re.search(r"^\s+uri: ", text, re.MULTILINE) and not re.search(r"^meta:", text, re.MULTILINE)
    return HTTP if vcr_shaped else BRIDGE


def _looks_like_cassette(path: Path) -> bool:
    """A legacy ``*.yaml`` found while recursing counts if it has a top-level ``interactions:`` key (or cannot
    be read as text: then it is reported as corrupt rather than silently skipped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return True
    return re.search(r"^interactions:", text, re.MULTILINE) is not None


def discover(paths: Iterable[str | Path]) -> list[Path]:
    """Cassette files under ``paths`` (files are taken as given, folders searched recursively).

    Skips hidden folders and files (temp files), lock files and ``*.yaml`` files that are not cassettes.
    ``UsageError`` for a missing path or when nothing is found.
    """
    found: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found.extend(_walk(path))
        elif path.is_file():
            found.append(path)
        else:
            raise UsageError(f"{path} does not exist: give a cassette file or a folder that holds cassettes")
    if not found:
        shown = ", ".join(str(p) for p in paths)
        raise UsageError(
            f"no cassettes (*.bridge.yaml, *.http.yaml, legacy *.yaml) under {shown}: "
            "record some with pytest --bridge-record=once, or point at your tests' cassettes folder"
        )
    return list(dict.fromkeys(found))


def _walk(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*.yaml")):
        relative = path.relative_to(root).parts
        if any(part.startswith(".") for part in relative) or not path.is_file():
            continue
        if path.name.endswith((".http.yaml", ".bridge.yaml")) or _looks_like_cassette(path):
            yield path


# -- reading ------------------------------------------------------------------------------------------


def _load_http(path: Path) -> list[dict[str, Any]]:
    """The interactions of a vcrpy cassette; ``CassetteCorrupt`` (naming file and fix) on anything else."""
    import yaml

    from dspy_bridge.cassettes._yamlio import SafeLoader

    fix = "Delete it and record again through the proxy (--bridge-record=rewrite), or fix it by hand."
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=SafeLoader)
    except UnicodeDecodeError as exc:
        raise CassetteCorrupt(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}). {fix}") from exc
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f":{where.line + 1}:{where.column + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or exc
        raise CassetteCorrupt(f"{path}{at}: not valid YAML ({problem}). {fix}") from exc
    items = data.get("interactions") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise CassetteCorrupt(f"{path}: not an HTTP cassette (no 'interactions' list at the top). {fix}")
    for index, item in enumerate(items):
        request = item.get("request") if isinstance(item, dict) else None
        response = item.get("response") if isinstance(item, dict) else None
        if not isinstance(request, dict) or not isinstance(response, dict) or "uri" not in request:
            raise CassetteCorrupt(f"{path}: interaction {index} has no request uri or no response. {fix}")
    return items


def interactions_of(path: Path) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """``(level, meta, interactions)``; raises ``CassetteError`` (corrupt) or ``OSError``."""
    level = level_of(path)
    if level == HTTP:
        return level, {}, _load_http(path)
    from dspy_bridge.cassettes._cassette import Cassette

    cassette = Cassette.load(path)
    return level, dict(cassette.meta), [{"request": i.request, "response": i.response} for i in cassette.interactions]


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _header(headers: Any, name: str) -> str | None:
    if not isinstance(headers, dict):
        return None
    for key, value in headers.items():
        if str(key).lower() == name.lower():
            return str(value[0]) if isinstance(value, list) and value else str(value)
    return None


def _bridge_models(meta: dict[str, Any], items: list[dict[str, Any]]) -> list[str]:
    models = {meta.get("model")}
    for item in items:
        request = item["request"]
        models.add(request.get("model"))
        if request.get("command") == "configure_lm":
            models.add((request.get("args") or {}).get("model"))
    return sorted(m for m in models if isinstance(m, str) and m)


def read_entry(
    path: Path, *, now: datetime | None = None, stale_days: float | None = None, model: str | None = None
) -> Entry:
    """What ``list`` prints for one file; a file that cannot be read gets ``error`` set, never an exception."""
    now = now or datetime.now(UTC)
    size = path.stat().st_size if path.exists() else 0
    try:
        level, meta, items = interactions_of(path)
    except (CassetteError, OSError) as exc:
        return Entry(str(path), level_of(path), size, error=str(exc))
    entry = Entry(str(path), level, size, interactions=len(items))
    if level == BRIDGE:
        recorded = _parse_time(meta.get("created"))
        entry.recorded_against = meta.get("recorded_against")
        entry.dspy_version = meta.get("dspy_version")
        entry.dspy_bridge_version = meta.get("dspy_bridge_version")
        entry.models = _bridge_models(meta, items)
    else:
        dates = [_parse_time(_header(i["response"].get("headers"), "Date")) for i in items]
        recorded = min((d for d in dates if d is not None), default=None)
        hosts = sorted({urlsplit(str(i["request"]["uri"])).netloc for i in items})
        entry.recorded_against = ", ".join(hosts) or None
        entry.models = sorted({m for i in items for m in _MODEL_IN_URI.findall(str(i["request"]["uri"]))})
    if recorded is None:
        recorded = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    entry.recorded = recorded.replace(microsecond=0).isoformat().replace("+00:00", "Z")
    entry.age_days = round((now - recorded).total_seconds() / 86400, 2)
    entry.stale = stale_reasons(entry, stale_days=stale_days, model=model)
    return entry


def header_entry(path: Path, *, now: datetime | None = None) -> Entry | None:
    """A bridge cassette's ``meta`` read from the top of the file only (``version`` and ``meta`` precede
    ``interactions``): enough for staleness, without parsing every interaction. ``None`` if that fails."""
    import yaml

    from dspy_bridge.cassettes._yamlio import SafeLoader

    try:
        with path.open(encoding="utf-8") as handle:
            head = []
            for line in handle:
                if line.startswith("interactions:"):
                    break
                head.append(line)
        data = yaml.load("".join(head), Loader=SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    meta = data.get("meta") if isinstance(data, dict) else None
    recorded = _parse_time(meta.get("created")) if isinstance(meta, dict) else None
    if not isinstance(meta, dict) or recorded is None:
        return None
    entry = Entry(str(path), BRIDGE, path.stat().st_size, recorded_against=meta.get("recorded_against"))
    entry.dspy_version, entry.dspy_bridge_version = meta.get("dspy_version"), meta.get("dspy_bridge_version")
    entry.models = [meta["model"]] if isinstance(meta.get("model"), str) else []
    entry.recorded = recorded.replace(microsecond=0).isoformat().replace("+00:00", "Z")
    entry.age_days = round(((now or datetime.now(UTC)) - recorded).total_seconds() / 86400, 2)
    return entry


def _model_name(model: str) -> str:
    """``gemini/gemini-2.5-flash`` (DSPy's name) and ``gemini-2.5-flash`` (the URL's) are the same model."""
    return model.rsplit("/", 1)[-1].lower()


def stale_reasons(entry: Entry, *, stale_days: float | None = None, model: str | None = None) -> list[str]:
    """Why a cassette should be re-recorded: older than ``stale_days``, recorded with another DSPy than the
    installed one (bridge cassettes carry the version), or against other models than ``model``."""
    reasons = []
    if stale_days is not None and entry.age_days is not None and entry.age_days > stale_days:
        reasons.append(f"older than {stale_days:g} days")
    installed = installed_dspy_version()
    if entry.dspy_version and installed and entry.dspy_version != installed:
        reasons.append(f"recorded with DSPy {entry.dspy_version}, {installed} installed")
    if model and entry.models and _model_name(model) not in {_model_name(m) for m in entry.models}:
        reasons.append(f"recorded against {', '.join(entry.models)}, not {model}")
    return reasons


# -- printing -----------------------------------------------------------------------------------------


def human_size(size: int) -> str:
    return f"{size} B" if size < 1024 else f"{size / 1024:.1f} KiB" if size < 1024 * 1024 else f"{size / 2**20:.1f} MiB"


def human_age(days: float | None) -> str:
    if days is None:
        return "?"
    if days >= 1:
        return f"{days:.0f}d"
    hours = days * 24
    return f"{hours:.0f}h" if hours >= 1 else f"{hours * 60:.0f}m"


def list_line(entry: Entry) -> str:
    if entry.error is not None:
        return f"{entry.level:<6}  CORRUPT  {entry.path}"
    fields = [
        f"{entry.level:<6}",
        f"{human_age(entry.age_days):>4}",
        f"{human_size(entry.size):>9}",
        f"{entry.interactions:>3} interaction(s)",
        f"against {entry.recorded_against or '?'}",
        f"DSPy {entry.dspy_version or '-'}",
        f"models {', '.join(entry.models) or '-'}",
        entry.path,
    ]
    line = "  ".join(fields)
    return f"{line}  STALE: {'; '.join(entry.stale)}" if entry.stale else line


def stats(entries: list[Entry]) -> dict[str, Any]:
    good = [e for e in entries if e.error is None]
    dated = sorted((e for e in good if e.recorded), key=lambda e: e.recorded or "")
    return {
        "files": len(entries),
        "files_by_level": dict(Counter(e.level for e in good)),
        "corrupt": [e.path for e in entries if e.error is not None],
        "interactions": sum(e.interactions for e in good),
        "interactions_by_level": {
            level: sum(e.interactions for e in good if e.level == level) for level in sorted({e.level for e in good})
        },
        "bytes": sum(e.size for e in entries),
        "oldest": {"path": dated[0].path, "recorded": dated[0].recorded} if dated else None,
        "newest": {"path": dated[-1].path, "recorded": dated[-1].recorded} if dated else None,
        "recorded_against": dict(Counter(e.recorded_against or "unknown" for e in good).most_common()),
        "dspy_versions": dict(Counter(e.dspy_version for e in good if e.dspy_version).most_common()),
    }


def _excerpt(value: Any, limit: int = _EXCERPT) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    shown = text if len(text) <= limit else text[:limit] + f"… ({len(text)} chars)"
    return shown.replace("\n", "\n      ")  # continuation lines stay under their label


def _body_text(body: Any) -> str:
    if isinstance(body, dict):  # vcrpy response: {string: ...}
        body = body.get("string")
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    return body if isinstance(body, str) else ""


def _texts(document: Any, *keys: str) -> list[str]:
    """Every ``text`` (Gemini parts) or string ``content`` (OpenAI messages) in ``document``, descending at the
    top only into ``keys`` (so a Gemini ``systemInstruction`` is left out of the prompt) — tolerant of any shape."""
    found: list[str] = []
    if isinstance(document, dict):
        for key, value in document.items():
            if key in ("text", "content") and isinstance(value, str):
                found.append(value)
            elif not keys or key in keys:
                found.extend(_texts(value))
    elif isinstance(document, list):
        for value in document:
            found.extend(_texts(value))
    return found


def _json_texts(text: str, *keys: str) -> str | None:
    """Text parts of a JSON body, or of each ``data:`` line of a streamed (SSE) body; None if not JSON."""
    documents: list[Any] = []
    lines = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
    for chunk in lines or [text]:
        try:
            documents.append(json.loads(chunk))
        except ValueError:
            continue
    if not documents:
        return None
    return "".join("\n".join(_texts(document, *keys)) for document in documents)


def _render_http(item: dict[str, Any]) -> list[str]:
    request, response = item["request"], item["response"]
    uri = urlsplit(str(request.get("uri", "")))
    status = response.get("status") or {}
    body = _body_text(request.get("body"))
    prompt = _json_texts(body, "contents", "messages", "parts", "content")
    answer_body = _body_text(response.get("body"))
    answer = _json_texts(answer_body, "candidates", "content", "parts", "choices", "message")
    return [
        f"  {request.get('method', '?')} {uri.path}  (host {uri.netloc})",
        f"  prompt: {_excerpt(prompt if prompt is not None else body)}",
        f"  → status {status.get('code', '?')} {status.get('message', '')}".rstrip(),
        f"  answer: {_excerpt(answer if answer else answer_body)}",
    ]


def _render_bridge(item: dict[str, Any]) -> list[str]:
    request, response = item["request"], item["response"]
    lines = [f"  {request.get('command')}  (session {request.get('session', '?')})"]
    if request.get("program"):
        lines.append(f"  program: {_excerpt(request['program'])}")
    if request.get("model"):
        lines.append(f"  model: {request['model']}")
    args = dict(request.get("args") or {})
    inputs = args.pop("inputs", None)
    if isinstance(inputs, dict):
        lines.append("  inputs:")
        lines.extend(f"    {name}: {_excerpt(value)}" for name, value in inputs.items())
    if args:
        lines.append(f"  args: {_excerpt(args)}")
    if response.get("ok"):
        result = response.get("result")
        outputs = result.get("outputs") if isinstance(result, dict) else None
        if isinstance(outputs, dict):
            lines.append("  → outputs:")
            lines.extend(f"    {name}: {_excerpt(value)}" for name, value in outputs.items())
        else:
            lines.append(f"  → result: {_excerpt(result)}")
        if response.get("chunks"):
            lines.append(f"  (streamed in {len(response['chunks'])} chunk(s))")
    else:
        error = response.get("error") or {}
        lines.append(f"  → error {error.get('type')}: {_excerpt(error.get('message', ''))}")
    return lines


def render_interaction(level: str, index: int, item: dict[str, Any]) -> str:
    body = _render_http(item) if level == HTTP else _render_bridge(item)
    return "\n".join([f"[{index}]", *body])
