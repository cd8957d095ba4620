"""``dspy-bridge cassettes list|show|diff|unused|prune|verify|stats``: looking after both cassette levels.

Each subcommand wraps library calls (``cassettes._inventory``, ``_diff``, ``_unused``, ``verify``) and takes
``--json``. Exit codes (also in the help and docs/recording.md):

    list, show, stats   0 ok · 1 a file could not be read (named; the others still shown) · 2 usage
    diff                0 the same · 1 different · 2 usage or a file could not be read
    unused              0 nothing unused · 1 something is unused · 2 usage (no run record, bad path)
    prune               0 pruned, or nothing to prune, or a dry run · 1 a file could not be pruned · 2 usage
    verify              0 clean · 1 something key-shaped or not plain data · 2 usage
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_cassettes_parser", "cassettes", "verify"]

EXIT_CODES = {
    "list": "0 ok; 1 a file could not be read (named, the others still shown); 2 usage (missing path, none found)",
    "show": "0 ok; 1 the file could not be read; 2 usage (not a file, --index out of range)",
    "stats": "0 ok; 1 a file could not be read; 2 usage",
    "diff": "0 the same (--verdict: no regression); 1 different (--verdict: a regression); 2 usage (two levels, "
    "missing file) or a file could not be read",
    "unused": "0 nothing unused; 1 something is unused; 2 usage (no run record, missing path)",
    "prune": "0 pruned, nothing to prune, or a dry run; 1 a file could not be pruned; 2 usage",
    "verify": "0 clean; 1 something key-shaped, or a file that is not plain data; 2 usage (missing path, no files)",
}


def _say(prog: str, message: str) -> None:
    print(f"{prog}: {message}", file=sys.stderr)


def _shown(path: str | Path) -> str:
    """Relative to the current folder when inside it."""
    text = str(path)
    try:
        return os.path.relpath(text) if not os.path.relpath(text).startswith("..") else text
    except ValueError:
        return text


def cassettes(args: argparse.Namespace) -> int:
    from dspy_bridge._exceptions import UsageError

    prog = f"dspy-bridge cassettes {args.action}"
    handler = {
        "list": _list,
        "stats": _list,
        "show": _show,
        "diff": _diff,
        "unused": _unused,
        "prune": _unused,
        "verify": verify,
    }[args.action]
    try:
        return handler(args, prog)
    except UsageError as exc:
        _say(prog, str(exc))
        return 2


# -- list, stats, show --------------------------------------------------------------------------------
def _list(args: argparse.Namespace, prog: str) -> int:
    from dspy_bridge.cassettes import _inventory as inventory

    files = inventory.discover(args.paths or ["."])
    stale_days, model = getattr(args, "stale_days", None), getattr(args, "model", None)
    entries = [inventory.read_entry(file, stale_days=stale_days, model=model) for file in files]
    if args.action == "list":
        if args.json:
            print(json.dumps([entry.as_dict() for entry in entries], indent=2))
        else:
            print("\n".join(inventory.list_line(entry) for entry in entries))
    else:
        summary = inventory.stats(entries)
        print(json.dumps(summary, indent=2) if args.json else _stats_text(summary))
    broken = [entry for entry in entries if entry.error is not None]
    for entry in broken:
        _say(prog, f"could not read {entry.path}: {entry.error}")
    return 1 if broken else 0


def _stats_text(summary: dict[str, Any]) -> str:
    from dspy_bridge.cassettes._inventory import human_size

    by_level = ", ".join(f"{n} {level}" for level, n in sorted(summary["files_by_level"].items())) or "none readable"
    per_level = ", ".join(f"{n} {level}" for level, n in summary["interactions_by_level"].items()) or "-"
    lines = [
        f"files:            {summary['files']} ({by_level}; {len(summary['corrupt'])} corrupt)",
        f"interactions:     {summary['interactions']} ({per_level})",
        f"size:             {human_size(summary['bytes'])} ({summary['bytes']} bytes)",
    ]
    for key in ("oldest", "newest"):
        if summary[key]:
            lines.append(f"{key + ':':<17} {summary[key]['recorded']}  {summary[key]['path']}")
    against = ", ".join(f"{name} × {n}" for name, n in summary["recorded_against"].items())
    lines.append(f"recorded against: {against or '-'}")
    versions = ", ".join(f"{name} × {n}" for name, n in summary["dspy_versions"].items())
    lines.append(f"DSPy versions:    {versions or '-'}")
    return "\n".join(lines)


def _show(args: argparse.Namespace, prog: str) -> int:
    from dspy_bridge._exceptions import CassetteError, UsageError
    from dspy_bridge.cassettes import _inventory as inventory

    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"{path} is not a file: give one cassette (*.bridge.yaml, *.http.yaml or legacy *.yaml)")
    try:
        level, meta, items = inventory.interactions_of(path)
    except (CassetteError, OSError) as exc:
        _say(prog, f"could not read {path}: {exc}")
        return 1
    indexes = list(range(len(items)))
    if args.index is not None:
        if not 0 <= args.index < len(items):
            raise UsageError(f"--index {args.index} is out of range: {path} holds {len(items)} interaction(s)")
        indexes = [args.index]
    if args.json:
        shown = [{"index": i, **items[i]} for i in indexes]
        document = {"path": str(path), "level": level, "meta": meta, "interactions": shown}
        print(json.dumps(document, indent=2, default=_plain))
        return 0
    print(f"{path}  ({level} cassette, {len(items)} interaction(s))")
    for key, value in meta.items():
        print(f"  {key}: {value}")
    for i in indexes:
        print(inventory.render_interaction(level, i, items[i]))
    return 0


def _plain(value: Any) -> str:
    """JSON for what YAML may hold and JSON may not (a ``!!binary`` HTTP body: bytes)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


# -- diff ------------------------------------------------------------------------------------------------
def _diff(args: argparse.Namespace, prog: str) -> int:
    from dspy_bridge._exceptions import CassetteError, UsageError
    from dspy_bridge.cassettes._diff import diff_cassettes

    for name in (args.a, args.b):
        if not Path(name).is_file():
            raise UsageError(f"{name} is not a file: diff takes two cassette files (A B)")
    try:
        result = diff_cassettes(
            Path(args.a), Path(args.b), context=args.context, headers=args.headers, verdicts=args.verdict
        )
    except (CassetteError, OSError) as exc:
        _say(prog, f"could not read a cassette: {exc}")
        return 2
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, default=_plain))
    else:
        print("\n".join(result.lines()))
    if args.verdict:
        return 1 if result.regressions else 0
    return 0 if result.same else 1


# -- unused, prune ----------------------------------------------------------------------------------------
def _unused(args: argparse.Namespace, prog: str) -> int:
    from dspy_bridge._exceptions import UsageError
    from dspy_bridge.cassettes import _inventory as inventory
    from dspy_bridge.cassettes import _unused as unused

    record_path = Path(args.run_record) if args.run_record else unused.find_record(Path.cwd())
    record = unused.load_record(record_path)
    assert record_path is not None  # load_record raised otherwise
    paths: list[Path] = [Path(p) for p in args.paths] or unused.record_roots(record)
    if not paths:
        raise UsageError(f"the run record {record_path} names no cassette folder that exists: give PATH")
    report = unused.find_unused(inventory.discover(paths), record, record_path)
    if args.action == "unused":
        print(json.dumps(report.as_dict(), indent=2) if args.json else "\n".join(_unused_lines(report)))
        return 1 if report.unused else 0
    apply = args.yes
    outcomes = [_prune_one(finding) if apply else "would remove" for finding in report.unused]
    if args.json:
        data = report.as_dict()
        data["applied"] = apply
        for finding, outcome in zip(data["unused"], outcomes, strict=True):
            finding["outcome"] = outcome
        print(json.dumps(data, indent=2))
    else:
        for line in _unused_lines(report, outcomes):
            print(line)
        if report.unused and not apply:
            print("dry run: nothing was changed; run again with --yes to remove these")
    failed = [f for f, outcome in zip(report.unused, outcomes, strict=True) if outcome.startswith("failed")]
    for finding, outcome in zip(report.unused, outcomes, strict=True):
        if outcome.startswith("failed"):
            _say(prog, f"{finding.path}: {outcome}")
    return 1 if failed else 0


def _unused_lines(report: Any, outcomes: list[str] | None = None) -> list[str]:
    covered = (
        f"run record {_shown(report.record)} ({report.finished}, {report.invocation}): "
        f"{report.ran} bridge test(s) ran of {report.collected} collected"
    )
    lines = [covered]
    for n, finding in enumerate(report.unused):
        what = "file" if finding.whole_file else f"interactions {finding.indexes} of"
        prefix = f"{outcomes[n]}: " if outcomes is not None else "unused "
        lines.append(f"{prefix}{finding.level} {what} {_shown(finding.path)}  ({finding.reason})")
    if not report.unused:
        lines.append("nothing unused among the cassettes that run vouched for")
    if report.not_covered:
        lines.append(
            f"left alone: {len(report.not_covered)} cassette file(s) whose tests did not run in that run "
            "(deselected, skipped, or not collected); run the whole suite to judge them"
        )
    for item in report.unknown:
        lines.append(f"not judged: {_shown(item['path'])}: {item['reason']}")
    for item in report.errors:
        lines.append(f"could not read {_shown(item['path'])}: {item['error']}")
    if report.skipped:
        lines.append(f"not dspy-bridge's (plain vcrpy *.yaml, e.g. pytest-recording's): {len(report.skipped)} file(s)")
    return lines


def _prune_one(finding: Any) -> str:
    """Delete a whole unused file, or drop its unplayed interactions; refuse a file changed since the run."""
    from dspy_bridge._exceptions import CassetteError
    from dspy_bridge.cassettes._unused import digest

    path = Path(finding.path)
    if finding.digest is not None and digest(path) != finding.digest:
        return "failed: changed since the run record was written; run the tests again"
    try:
        if finding.whole_file:
            path.unlink()
            return "removed"
        if finding.level == "bridge":
            from dspy_bridge.cassettes import Cassette

            cassette = Cassette.load(path)
            unused = set(finding.indexes)
            dropped = cassette.prune([item.index for item in cassette if item.index not in unused])
        else:
            dropped = _prune_http(path, finding.indexes)
        return f"removed {dropped} interaction(s) from"
    except (CassetteError, OSError) as exc:
        return f"failed: {exc}"


def _prune_http(path: Path, indexes: list[int]) -> int:
    """Drop interactions of a vcrpy cassette, written as the proxy writes it (same serializer, lock, atomic)."""
    from dspy_bridge.cassettes._storage import write_atomic
    from dspy_bridge.proxy._persister import lock_for
    from dspy_bridge.proxy._serializer import ReadableYaml

    drop = set(indexes)
    with lock_for(path):
        data = ReadableYaml.deserialize(path.read_text(encoding="utf-8"))
        data["interactions"] = [item for i, item in enumerate(data["interactions"]) if i not in drop]
        write_atomic(path, ReadableYaml.serialize(data))
    return len(drop)


# -- verify ----------------------------------------------------------------------------------------------
def verify(args: argparse.Namespace, prog: str = "dspy-bridge verify") -> int:
    """0 clean, 1 something key-shaped or not plain data, 2 usage (``dspy-bridge verify`` is an alias)."""
    from dspy_bridge._exceptions import CassetteError, UsageError
    from dspy_bridge.cassettes import verify as verify_cassettes

    as_json = getattr(args, "json", False)
    try:
        files = verify_cassettes([Path(p) for p in args.paths])
    except UsageError as exc:
        _say(prog, str(exc))
        return 2
    except CassetteError as exc:  # SecretLeak, CassetteCorrupt
        if as_json:
            print(json.dumps({"ok": False, "error": type(exc).__name__, "message": exc.message, **exc.details}))
        _say(prog, exc.message)
        return 1
    if as_json:
        print(json.dumps({"ok": True, "files": [str(file) for file in files]}, indent=2))
    else:
        print(f"{prog}: {len(files)} cassette file(s) are plain data and hold nothing key-shaped")
    return 0


# -- the parser ------------------------------------------------------------------------------------------
def add_cassettes_parser(commands: Any) -> None:
    codes = "\n".join(f"  {name:<7} {text}" for name, text in EXIT_CODES.items())
    p = commands.add_parser(
        "cassettes",
        help="list, show, diff, find unused, prune, verify and sum up bridge and HTTP cassettes",
        description=f"Look after both cassette levels (bridge *.bridge.yaml, HTTP *.http.yaml).\n\nExit codes:\n{codes}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(
            name,
            help=help_text,
            description=f"{help_text[0].upper()}{help_text[1:]}.\n\nExit codes: {EXIT_CODES[name]}.",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.add_argument("--json", action="store_true", help="print JSON instead of text")
        return parser

    def paths(parser: argparse.ArgumentParser, default: str = "default .") -> None:
        parser.add_argument(
            "paths", nargs="*", metavar="PATH", help=f"files or folders (searched recursively); {default}"
        )

    q = action("list", "one line per cassette: level, age, size, interactions, versions, models, STALE reasons")
    paths(q)
    q.add_argument(
        "--stale-days", type=float, metavar="N", help="also flag files recorded more than N days ago as STALE"
    )
    q.add_argument("--model", metavar="NAME", help="also flag files recorded against other models than NAME")
    q = action("show", "print a cassette's interactions readably")
    q.add_argument("file", metavar="FILE")
    q.add_argument("--index", type=int, metavar="N", help="only interaction N (0-based)")
    q = action("stats", "sums over cassettes: files per level, interactions, bytes, oldest and newest")
    paths(q)
    q = action("diff", "compare two cassettes of one level, interaction by interaction")
    q.add_argument("a", metavar="A")
    q.add_argument("b", metavar="B")
    q.add_argument("--context", type=int, default=3, metavar="N", help="lines of context around a change")
    q.add_argument("--headers", action="store_true", help="HTTP cassettes: compare headers too")
    q.add_argument(
        "--verdict",
        action="store_true",
        help="give each change a verdict (benign: same type, other text; regression: type, Literal value, missing "
        "field, tool calls, finish reason, status) and exit 1 only on a regression",
    )
    for name, text in (
        ("unused", "report recordings no test used in the last pytest run (from its run record)"),
        ("prune", "remove what unused reports (a dry run unless --yes)"),
    ):
        q = action(name, text)
        paths(q, "default: the cassette folders the run record knows")
        q.add_argument(
            "--run-record",
            metavar="FILE",
            help="the run record to read (default: .dspy-bridge/last-run.json here or above)",
        )
        if name == "prune":
            q.add_argument("--yes", "--apply", dest="yes", action="store_true", help="really delete")
    q = action("verify", "fail if any cassette holds something key-shaped or is not plain data")
    q.add_argument("paths", nargs="+", metavar="PATH", help="cassette files or folders")
    p.set_defaults(func=cassettes)
