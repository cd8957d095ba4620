"""The data flows one way: test → plugin → pool → protocol → worker. These tests read the imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "dspy_bridge"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {name for name in names if name.startswith("dspy_bridge")}


def _package_imports(package: str) -> dict[str, set[str]]:
    return {str(p.relative_to(SRC)): _imports(p) for p in sorted((SRC / package).rglob("*.py"))}


def test_protocol_imports_only_itself_and_the_leaf_exceptions() -> None:
    for module, imports in _package_imports("protocol").items():
        foreign = {i for i in imports if not i.startswith("dspy_bridge.protocol") and i != "dspy_bridge._exceptions"}
        assert not foreign, f"protocol/{module} imports {foreign}"


@pytest.mark.parametrize("forbidden", ["dspy_bridge.pool", "dspy_bridge._pytest", "dspy_bridge.pytest_plugin"])
def test_worker_never_imports_the_host_side(forbidden: str) -> None:
    for module, imports in _package_imports("worker").items():
        if module.endswith("zygote.py"):
            continue  # the zygote is a worker factory; it may not import the pool either (checked below)
        assert not any(i.startswith(forbidden) for i in imports), f"worker/{module} imports {forbidden}"


def test_zygote_does_not_import_the_pool() -> None:
    zygote = SRC / "worker" / "zygote.py"
    if zygote.exists():
        assert not any(i.startswith("dspy_bridge.pool") for i in _imports(zygote))


def test_mock_worker_start_imports_neither_pydantic_nor_yaml_nor_dspy() -> None:
    code = (
        "import sys; from dspy_bridge.worker import _main, _loop, _mock; "
        "print(','.join(m for m in ('pydantic', 'yaml', 'dspy', 'asyncio', 'typing') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": ":".join(p for p in sys.path if p)},
    )
    assert out.stdout.strip() == ""
