"""Fail unless every runtime dependency is installed at its declared floor (run by ``nox -s tests-lowest``).

A floor that resolves higher (because another dependency needs more) is a floor nobody tests: raise it.
"""

from __future__ import annotations

import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version


def main() -> int:
    project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
    wrong = []
    for text in project["dependencies"]:
        req = Requirement(text)
        floors = [Version(spec.version) for spec in req.specifier if spec.operator == ">="]
        if not floors:
            wrong.append(f"{req.name}: no >= floor declared")
            continue
        floor, installed = floors[0], Version(version(req.name))
        ok = installed.release == floor.release  # a floor names a real release: 3.4.0, not 3.4
        print(f"{req.name:<10} floor {floor!s:<8} installed {installed!s:<10} {'ok' if ok else 'NOT THE FLOOR'}")
        if not ok:
            wrong.append(f"{req.name}: declared >= {floor}, resolved {installed}")
    for line in wrong:
        print("error:", line, file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
