"""Check a built wheel (and sdist) hold what a user and a packager need; exit 1 listing what is missing.

Run by ``nox -s wheel`` on the real build; ``tests/test_packaging.py`` runs the wheel half on a wheel built
in a temporary directory. The package's files are compared with ``src/dspy_bridge`` itself, so a new module
or data file (a demo asset, a fake server) is checked without editing this script.

    python scripts/check_dist.py dist/dspy_bridge-0.1.0-py3-none-any.whl dist/dspy_bridge-0.1.0.tar.gz
"""

from __future__ import annotations

import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "dspy_bridge"
#: What an sdist must carry besides the package: enough to run the tests and build the docs from it.
SDIST_REQUIRED = (
    "pyproject.toml",
    "README.md",
    "LICENSE",
    "mkdocs.yml",
    "noxfile.py",
    "tests/conftest.py",
    "docs/index.md",
)


def package_files() -> set[str]:
    """Every file of the package as it should appear in the wheel (``dspy_bridge/...``), caches excluded."""
    return {
        str(path.relative_to(PACKAGE.parent))
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo")
    }


def wheel_problems(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = next(name.split("/")[0] for name in names if name.split("/")[0].endswith(".dist-info"))
        metadata = Parser().parsestr(archive.read(f"{dist_info}/METADATA").decode())
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
    problems = [f"wheel lacks {name}" for name in sorted(package_files() - names)]
    if "dspy_bridge/py.typed" not in names:
        problems.append("wheel lacks dspy_bridge/py.typed (PEP 561: type checkers would ignore our hints)")
    stray = sorted(name for name in names if not name.startswith(("dspy_bridge/", dist_info)))
    problems += [f"wheel carries a file outside the package: {name}" for name in stray]
    requires = {
        line.split(";")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
        for line in metadata.get_all("Requires-Dist") or []
    }
    problems += [f"METADATA does not require {name}" for name in ("dspy", "pytest", "vcrpy") if name not in requires]
    classifiers = metadata.get_all("Classifier") or []
    problems += [
        f"METADATA lacks classifier {c!r}" for c in ("Framework :: Pytest", "Typing :: Typed") if c not in classifiers
    ]
    if not metadata.get_all("Project-URL"):
        problems.append("METADATA has no Project-URL")
    if not any(name.startswith(f"{dist_info}/licenses/") for name in names):
        problems.append("wheel lacks the LICENSE file")
    for needed in ("dspy-bridge = dspy_bridge.cli:main", "dspy_bridge = dspy_bridge.pytest_plugin"):
        if needed not in entry_points:
            problems.append(f"entry_points.txt lacks {needed!r}")
    return problems


def sdist_problems(sdist: Path) -> list[str]:
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    problems = [f"sdist lacks {name}" for name in SDIST_REQUIRED if name not in names]
    problems += [f"sdist lacks src/{name}" for name in sorted(package_files()) if f"src/{name}" not in names]
    problems += [f"sdist carries build debris: {name}" for name in sorted(names) if name.startswith((".nox/", "site/"))]
    return problems


def main(argv: list[str]) -> int:
    problems: list[str] = []
    for arg in argv:
        path = Path(arg)
        problems += wheel_problems(path) if path.suffix == ".whl" else sdist_problems(path)
    for problem in problems:
        print("error:", problem, file=sys.stderr)
    print(f"checked {', '.join(argv)}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
