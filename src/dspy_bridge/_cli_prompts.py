"""``dspy-bridge prompts show TEST``: print the prompts a test's lock file holds (``--bridge-prompts=update``).

TEST is a pytest node id (``tests/test_app.py::test_triage``, with ``[param]`` if parametrized) or the path of
a ``*.prompts.yaml`` file. Exit codes: 0 shown; 1 no lock for that test, or an unreadable one; 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_prompts_parser", "lock_for_node_id"]


def lock_for_node_id(node_id: str, cassette_dir: str | None = None) -> Path:
    """Where the plugin keeps ``node_id``'s prompt lock (the default layout, or under ``--cassette-dir``)."""
    from dspy_bridge._exceptions import UsageError
    from dspy_bridge._pytest._names import safe_name
    from dspy_bridge._pytest._prompts import PROMPTS_SUFFIX

    module, _, rest = node_id.partition("::")
    if not rest or not module.endswith(".py"):
        raise UsageError(
            f"{node_id!r} is neither a *.prompts.yaml file nor a test node id such as tests/test_app.py::test_triage"
        )
    base = Path(cassette_dir) if cassette_dir else Path(module).parent / "cassettes"
    stem = Path(Path(module).stem) / safe_name(".".join(rest.split("::")))
    return base / f"{stem}{PROMPTS_SUFFIX}"


def show(args: argparse.Namespace) -> int:
    from dspy_bridge._exceptions import CassetteCorrupt, UsageError
    from dspy_bridge._pytest._prompts import PROMPTS_SUFFIX, load_lock

    target = str(args.test)
    try:
        path = Path(target) if target.endswith(PROMPTS_SUFFIX) else lock_for_node_id(target, args.cassette_dir)
    except UsageError as exc:
        print(f"dspy-bridge prompts: {exc}", file=sys.stderr)
        return 2
    if not path.is_file():
        print(
            f"dspy-bridge prompts: no prompt lock at {path}; write it with: pytest {target} --bridge-prompts=update",
            file=sys.stderr,
        )
        return 1
    try:
        lock = load_lock(path)
    except CassetteCorrupt as exc:
        print(f"dspy-bridge prompts: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(lock, indent=2, ensure_ascii=False))
        return 0
    print(f"{path}  (test {lock.get('test')}, DSPy {lock.get('dspy')})")
    for program in lock["programs"]:
        for predictor in program.get("predictors") or []:
            print(_header(program, predictor))
            for message in predictor.get("messages") or []:
                print(f"--- [{message['role']}]")
                print(message["content"])
    return 0


def _header(program: dict[str, Any], predictor: dict[str, Any]) -> str:
    fields = ", ".join(f"{name}: {kind}" for name, kind in (predictor.get("inputs") or {}).items())
    outputs = ", ".join(f"{name}: {kind}" for name, kind in (predictor.get("outputs") or {}).items())
    return (
        f"\n=== {program['program']} / {predictor['name']} (adapter {program.get('adapter')}, "
        f"{predictor.get('demos', 0)} demos): {fields} -> {outputs}"
    )


def add_prompts_parser(commands: Any) -> None:
    p = commands.add_parser(
        "prompts",
        help="show the prompts a test's lock file holds (pytest --bridge-prompts=update writes them)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", required=True)
    q = actions.add_parser("show", help="print each predictor's messages, as the adapter renders them")
    q.add_argument("test", metavar="TEST", help="a test node id (tests/test_app.py::test_x) or a *.prompts.yaml file")
    q.add_argument("--cassette-dir", metavar="DIR", help="the cassette root, if the run used --bridge-cassette-dir")
    q.add_argument("--json", action="store_true", help="print the lock as JSON")
    q.set_defaults(func=show)
