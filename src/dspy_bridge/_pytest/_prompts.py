"""The prompt lock file (``--bridge-prompts=check|update``): did my program's prompts change?

For every program a test creates, a real worker renders each predictor's messages with the program's
adapter and placeholder inputs, without calling the LM (``render_prompts``). ``update`` keeps them in
``<test>.prompts.yaml`` beside the test's cassettes; ``check`` compares and fails the test with a
structural summary ("generate_answer.predict: instructions changed; demos 3 → 4; answer: str →
Literal['yes', 'no']; adapter chat → json") and a unified diff of the messages. Prompts change when
DSPy is upgraded, when an optimizer's saved state changes, or when a signature is edited; a score that
drops with the same code usually starts there.
"""

from __future__ import annotations

import difflib
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dspy_bridge.pool import SyncPool

__all__ = [
    "LOCK_VERSION",
    "PROMPTS_MODES",
    "PROMPTS_SUFFIX",
    "after_test",
    "compare",
    "load_lock",
    "lock_path",
    "render",
    "save_lock",
]

PROMPTS_MODES = ("off", "check", "update")
PROMPTS_SUFFIX = ".prompts.yaml"
LOCK_VERSION = 1


def lock_path(bridge_cassette: Path) -> Path:
    """``<test>.prompts.yaml`` beside ``<test>.bridge.yaml`` (or a legacy ``<test>.yaml``)."""
    name = bridge_cassette.name
    for suffix in (".bridge.yaml", ".yaml"):
        if name.endswith(suffix):
            return bridge_cassette.with_name(name.removesuffix(suffix) + PROMPTS_SUFFIX)
    return bridge_cassette.with_name(name + PROMPTS_SUFFIX)


def _label(args: dict[str, Any]) -> str:
    if "module" in args:
        return str(args["module"])
    signature = args.get("signature")
    text = signature if isinstance(signature, str) else "<signature map>"
    program_type = args.get("program_type", "predict")
    return text if program_type == "predict" else f"{program_type}({text})"


def render(pool: SyncPool, definitions: list[dict[str, Any]], test_id: str) -> dict[str, Any]:
    """Create each program on a real worker in a throwaway session and render its prompts."""
    session = f"prompts-{secrets.token_hex(6)}"
    programs, version = [], None
    try:
        for args in definitions:
            program_id = pool.request("create_program", args, session_id=session)["program_id"]
            rendered = pool.request("render_prompts", {"program_id": program_id}, session_id=session)
            version = rendered.get("dspy_version") or version
            programs.append(
                {"program": _label(args), "adapter": rendered["adapter"], "predictors": rendered["predictors"]}
            )
    finally:
        pool.close_session(session)
    return {"version": LOCK_VERSION, "test": test_id, "dspy": version, "programs": programs}


# -- the file ------------------------------------------------------------------------------------
def _dumper() -> Any:
    import yaml

    class LockDumper(yaml.SafeDumper):
        """Multi-line text as ``|`` blocks: a changed prompt line is a one-line diff in review."""

    def text(dumper: Any, value: str) -> Any:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    LockDumper.add_representer(str, text)
    return LockDumper


def save_lock(path: Path, lock: dict[str, Any]) -> None:
    import os
    import tempfile

    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.dump(lock, Dumper=_dumper(), sort_keys=False, allow_unicode=True, width=10_000)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(temporary, path)


def load_lock(path: Path) -> dict[str, Any]:
    """The lock's data; a file that is not one raises ``CassetteCorrupt`` naming it and the way out."""
    import yaml

    from dspy_bridge._exceptions import CassetteCorrupt

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CassetteCorrupt(f"{path} is not a readable prompt lock ({exc}); delete it and rerun with "
                              "--bridge-prompts=update") from None  # fmt: skip
    if not isinstance(data, dict) or data.get("version") != LOCK_VERSION or not isinstance(data.get("programs"), list):
        raise CassetteCorrupt(
            f"{path} is not a version-{LOCK_VERSION} prompt lock (no 'version: {LOCK_VERSION}' and 'programs' list); "
            "delete it and rerun with --bridge-prompts=update"
        )
    return data


# -- comparing -----------------------------------------------------------------------------------
def _fields(side: str, old: dict[str, str], new: dict[str, str]) -> list[str]:
    changes = []
    for name in old:
        if name not in new:
            changes.append(f"{side} field {name} removed")
        elif old[name] != new[name]:
            changes.append(f"{name}: {old[name]} → {new[name]}")
    changes += [f"{side} field {name}: {new[name]} added" for name in new if name not in old]
    return changes


def _predictor_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    changes = []
    if old.get("instructions") != new.get("instructions"):
        changes.append("instructions changed")
    if old.get("demos") != new.get("demos"):
        changes.append(f"demos {old.get('demos')} → {new.get('demos')}")
    changes += _fields("input", old.get("inputs") or {}, new.get("inputs") or {})
    changes += _fields("output", old.get("outputs") or {}, new.get("outputs") or {})
    if not changes and old.get("messages") != new.get("messages"):
        changes.append("prompt text changed")
    return changes


def _summary(locked: dict[str, Any], rendered: dict[str, Any]) -> list[str]:
    """One line per changed program: ``<predictor>: change; change; <predictor>: …; adapter chat → json``
    (prefixed with the program when the test has several)."""
    lines = []
    if locked.get("dspy") != rendered.get("dspy"):
        lines.append(f"DSPy {locked.get('dspy')} → {rendered.get('dspy')}")
    old_programs, new_programs = locked["programs"], rendered["programs"]
    if len(old_programs) != len(new_programs):
        lines.append(f"programs {len(old_programs)} → {len(new_programs)}")
    several = max(len(old_programs), len(new_programs)) > 1
    for old, new in zip(old_programs, new_programs, strict=False):
        old_predictors = {p["name"]: p for p in old.get("predictors") or []}
        new_predictors = {p["name"]: p for p in new.get("predictors") or []}
        parts = [f"predictor {name} removed" for name in old_predictors if name not in new_predictors]
        parts += [f"predictor {name} added" for name in new_predictors if name not in old_predictors]
        for name, predictor in new_predictors.items():
            changes = _predictor_changes(old_predictors[name], predictor) if name in old_predictors else []
            if changes:
                parts.append(f"{name}: " + "; ".join(changes))
        if old.get("adapter") != new.get("adapter"):
            parts.append(f"adapter {old.get('adapter')} → {new.get('adapter')}")
        if parts:
            lines.append((f"{new['program']}: " if several else "") + "; ".join(parts))
    return lines


def _as_text(lock: dict[str, Any]) -> list[str]:
    lines = [f"# DSPy {lock.get('dspy')}\n"]
    for program in lock["programs"]:
        for predictor in program.get("predictors") or []:
            lines.append(f"### {program['program']} / {predictor['name']} (adapter {program.get('adapter')})\n")
            for message in predictor.get("messages") or []:
                lines.append(f"--- [{message['role']}]\n")
                lines += [line + "\n" for line in str(message["content"]).split("\n")]
    return lines


def compare(locked: dict[str, Any], rendered: dict[str, Any]) -> tuple[list[str], str] | None:
    """None when the prompts are the same (another DSPy version that renders the same is the same), else
    (summary lines, unified diff of the messages)."""
    if locked.get("programs") == rendered.get("programs"):
        return None
    diff = "".join(difflib.unified_diff(_as_text(locked), _as_text(rendered), "locked", "rendered now", n=2))
    return _summary(locked, rendered) or ["prompts changed"], diff


# -- one test ------------------------------------------------------------------------------------
def after_test(mode: str, nodeid: str, bridge_cassette: Path, created: list[dict[str, Any]], pool: SyncPool,
               counts: Any) -> None:  # fmt: skip
    """``check``: fail the test (``pytest.fail``) when its prompts differ from its lock; ``update``: write the
    lock when missing or different. ``counts`` (a Counter) gets checked/changed/written/unchanged."""
    import shlex

    import pytest

    path = lock_path(bridge_cassette)
    if not created and not path.exists():
        return
    from dspy_bridge._exceptions import CassetteCorrupt

    rendered = render(pool, created, nodeid)
    try:
        locked = load_lock(path) if path.exists() else None
    except CassetteCorrupt as exc:
        if mode != "update":  # update rewrites it; check says what is wrong, without the plugin's frames
            counts["checked"] += 1
            counts["changed"] += 1
            pytest.fail(f"{nodeid}: {exc.message}", pytrace=False)
        locked = None
    difference = compare(locked, rendered) if locked is not None else (["no lock yet"], "")
    update = f"pytest {shlex.quote(nodeid)} --bridge-prompts=update"
    if mode == "update":
        if difference is None and locked is not None and locked.get("dspy") == rendered.get("dspy"):
            counts["unchanged"] += 1
        else:
            save_lock(path, rendered)
            counts["written"] += 1
        return
    counts["checked"] += 1
    if locked is None:
        counts["changed"] += 1
        pytest.fail(f"{nodeid}: no prompt lock at {path}; write it with: {update}", pytrace=False)
    if difference is not None:
        counts["changed"] += 1
        summary, diff = difference
        pytest.fail(
            f"{nodeid}: prompts differ from {path.name}:\n  " + "\n  ".join(summary) + f"\n{diff}\n"
            f"If the change is intended, accept it with: {update}",
            pytrace=False,
        )
