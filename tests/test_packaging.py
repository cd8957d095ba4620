"""The wheel a user installs holds the whole package, its metadata and entry points — checked on a wheel built
here with hatchling's own API (~0.5 s). ``nox -s wheel`` does the slow half: sdist and wheel with ``uv build``,
installed alone into a fresh venv, ``dspy-bridge demo`` run from it; ``nox -s tests-lowest`` runs the suite
on every dependency floor."""

from __future__ import annotations

import importlib.util
import tomllib
import zipfile
from pathlib import Path
from types import ModuleType

import pytest
from hatchling.builders.wheel import WheelBuilder
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def _check_dist() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_dist", ROOT / "scripts" / "check_dist.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    (built,) = WheelBuilder(str(ROOT)).build(directory=str(out), versions=["standard"])
    return Path(built)


def test_the_wheel_holds_every_package_file_its_metadata_and_entry_points(wheel: Path) -> None:
    check = _check_dist()
    assert check.wheel_problems(wheel) == []
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("dspy_bridge/py.typed", "dspy_bridge/testing/fake_gemini.py", "dspy_bridge/cli.py"):
        assert needed in names


def test_the_checker_names_what_a_wheel_lacks(wheel: Path, tmp_path: Path) -> None:
    """The check above could pass on anything if the checker were blind: strip two files and it must say so."""
    stripped = tmp_path / wheel.name
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(stripped, "w") as target:
        for item in source.infolist():
            if item.filename not in ("dspy_bridge/py.typed", "dspy_bridge/testing/fake_gemini.py"):
                target.writestr(item, source.read(item))
    problems = _check_dist().wheel_problems(stripped)
    assert "wheel lacks dspy_bridge/testing/fake_gemini.py" in problems
    assert any("py.typed" in problem and "PEP 561" in problem for problem in problems)


def test_every_runtime_dependency_has_a_floor_and_its_evidence_in_the_decisions() -> None:
    """``nox -s tests-lowest`` installs each floor; docs/decisions.md says why each is that release."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    decisions = (ROOT / "docs" / "decisions.md").read_text()
    for text in project["dependencies"]:
        requirement = Requirement(text)
        floors = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        assert floors, f"{requirement.name} has no >= floor"
        assert f"| `{requirement.name}` | {floors[0]} |" in decisions, f"docs/decisions.md lacks {requirement.name}"
