"""The docs site keeps up with the code: every error and plugin message is on the troubleshooting page, every
page is in the nav, and the examples and recipes the pages show are the ones the suite runs.

The site itself is built by ``nox -s docs`` (``mkdocs build --strict``); these checks are the cheap part.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import dspy_bridge._exceptions as exceptions
from dspy_bridge.protocol._taxonomy import ErrorType
from dspy_bridge.pytest_plugin import BridgeMarkWarning

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PACKAGE = ROOT / "src" / "dspy_bridge"
TROUBLESHOOTING = DOCS / "troubleshooting.md"
PLUGIN_MODULES = [PACKAGE / "pytest_plugin.py", *sorted((PACKAGE / "_pytest").glob("*.py"))]
#: Calls whose (last) argument is text the plugin shows the user.
PRINTING_CALLS = {"warn", "write_line", "write_sep", "add_report_section", "fail", "skip", "exit"}


def _flat(text: str) -> str:
    return " ".join(text.split())


def _code_blocks(page: Path, language: str = "python") -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", page.read_text(), flags=re.S)


def _literal_parts(node: ast.AST) -> list[str]:
    """The constant pieces of a string, an f-string or a ``+`` of them (placeholders split the pieces)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        parts, current = [], ""
        for value in node.values:
            if isinstance(value, ast.Constant):
                current += str(value.value)
            else:
                parts.append(current)
                current = ""
        return [*parts, current]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _literal_parts(node.left) + _literal_parts(node.right)
    return []


def _message_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Where the plugin's user-facing text is: raised exceptions, warnings, terminal lines, report sections,
    ``message``/``reason`` variables, and strings returned by its helpers (reasons, problems)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args:
            yield node.exc.args[0]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in PRINTING_CALLS:
            if node.args:
                arg = node.args[-1]
                yield arg.args[0] if isinstance(arg, ast.Call) and arg.args else arg
        elif isinstance(node, ast.Assign):
            if any(isinstance(target, ast.Name) and target.id in ("message", "reason") for target in node.targets):
                yield node.value
        elif isinstance(node, ast.Return) and node.value is not None:
            yield node.value


def plugin_message_templates() -> dict[str, str]:
    """``{"file:line": fixed phrase}``: each message's longest fixed run of words (12+ characters, with a
    space: names and paths are not messages) — the part the troubleshooting page must quote."""
    found = {}
    for module in PLUGIN_MODULES:
        for node in _message_nodes(ast.parse(module.read_text())):
            parts = [part.strip() for part in _literal_parts(node)]
            phrase = max(parts, key=len, default="")
            if len(phrase) >= 12 and " " in phrase:
                found[f"{module.name}:{node.lineno}"] = _flat(phrase)
    return found


def test_every_exception_class_has_a_troubleshooting_entry() -> None:
    page = TROUBLESHOOTING.read_text()
    names = [*exceptions.__all__, BridgeMarkWarning.__name__]
    missing = [name for name in names if f"### `{name}`" not in page]
    assert not missing, f"add a '### `Name`' entry to docs/troubleshooting.md for: {missing}"


def test_every_error_type_is_in_the_troubleshooting_table() -> None:
    page = TROUBLESHOOTING.read_text()
    missing = [kind.value for kind in ErrorType if f"| `{kind.value}` |" not in page]
    assert not missing, f"add a row to the error-type table of docs/troubleshooting.md for: {missing}"


def test_every_plugin_message_is_quoted_on_the_troubleshooting_page() -> None:
    templates = plugin_message_templates()
    # The collector itself must see the plugin's messages, or this test would pass on nothing.
    assert len(templates) >= 25
    assert ": bridge_proxy serves tests on real workers; mark it integration" in templates.values()
    page = _flat(TROUBLESHOOTING.read_text())
    missing = {where: phrase for where, phrase in templates.items() if phrase not in page}
    assert not missing, f"quote these plugin messages in docs/troubleshooting.md (and say what to do): {missing}"


def _nav_pages(entries: list[object]) -> Iterator[str]:
    for entry in entries:
        if isinstance(entry, str):
            yield entry
        elif isinstance(entry, dict):
            for value in entry.values():
                yield from _nav_pages(value) if isinstance(value, list) else [str(value)]


def test_every_docs_page_is_in_the_site_nav_and_every_nav_page_exists() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = list(_nav_pages(config["nav"]))
    pages = sorted(str(path.relative_to(DOCS)) for path in DOCS.rglob("*.md"))
    assert sorted(set(nav)) == sorted(nav), "a page is listed twice in the nav"
    assert [page for page in pages if page not in nav] == [], "add the page to mkdocs.yml's nav"
    assert [page for page in nav if page not in pages] == [], "the nav names a page that does not exist"


def _python_block_after(page: Path, marker: str) -> str:
    """The ``python - <<'PY' … PY`` snippet in ``page`` (dedented as the shell would see it)."""
    text = page.read_text()
    match = re.search(r"python - > shard\.txt <<'PY'\n(.*?)\n\s*PY\n", text, flags=re.S)
    assert match, f"{page.name} lost its {marker} snippet"
    lines = match.group(1).splitlines()
    indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    return "\n".join(line[indent:] for line in lines)


def test_the_ci_sharding_recipe_puts_every_test_file_in_exactly_one_shard() -> None:
    snippet = _python_block_after(DOCS / "ci.md", "sharding")
    shards = 4
    picked = []
    for shard in range(shards):
        env = {**os.environ, "SHARD": str(shard), "SHARDS": str(shards)}
        out = subprocess.run(
            [sys.executable, "-S", "-"], input=snippet, text=True, capture_output=True, cwd=ROOT, env=env, check=True
        ).stdout
        picked.append([line for line in out.splitlines() if line])
    every = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "tests").rglob("test_*.py"))
    assert sorted(name for shard in picked for name in shard) == every  # each file once, none lost
    assert all(picked), "a shard got no test file: pytest would exit 5"


def _same_code(a: str, b: str) -> bool:
    return ast.dump(ast.parse(a)) == ast.dump(ast.parse(b))  # comments and spacing do not count


def _constant(module: Path, name: str) -> str:
    for node in ast.parse(module.read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return str(ast.literal_eval(node.value))
    raise AssertionError(f"{module.name} has no {name}")


@pytest.mark.parametrize(
    ("page", "module", "constant", "fill"),
    [
        # The quickstart's first test is the one test_plugin_workflow records with the printed command and replays.
        (
            "quickstart.md",
            "test_plugin_workflow.py",
            "TEST_TEMPLATE",
            {"mark": "mock", "question": "Capital of France?"},
        ),
        # The stub example is the one test_plugin runs on the shared mock pool.
        ("writing-tests.md", "test_plugin.py", "MOCK_STUB_TEST", None),
    ],
)
def test_the_examples_on_the_site_are_the_ones_the_suite_runs(
    page: str, module: str, constant: str, fill: dict[str, str] | None
) -> None:
    code = _constant(ROOT / "tests" / module, constant)
    code = code.format(**fill) if fill else code
    blocks = _code_blocks(DOCS / page)
    assert any(_same_code(block, code) for block in blocks), f"{page} no longer shows {module}'s {constant}"
