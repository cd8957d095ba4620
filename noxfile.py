"""Developer sessions. They run in the current environment (install with `pip install -e '.[dev]'`),
because a fresh virtualenv per session would re-download DSPy each time on this offline-ish machine."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.default_venv_backend = "none"


@nox.session
def tests(session: nox.Session) -> None:
    """The fast suite (the README's test command)."""
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.run("ruff", "check", "src", "tests", "benchmarks", "reliability", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "reliability", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.run("mypy", "src/dspy_bridge")


@nox.session
def bench(session: nox.Session) -> None:
    """Run every benchmark and rewrite docs/benchmarks.md (takes a few minutes: real workers start)."""
    session.run(
        "python",
        "benchmarks/run_all.py",
        "--out",
        "docs/benchmarks.md",
        "--json",
        "docs/benchmarks.json",
        *session.posargs,
    )


@nox.session(name="bench-compare")
def bench_compare(session: nox.Session) -> None:
    """Run the benchmarks into a scratch JSON and report every figure worse than the committed one by > 10%."""
    session.run("python", "benchmarks/run_all.py", "--out", "/tmp/benchmarks.md", "--json", "/tmp/benchmarks.json")
    session.run("python", "benchmarks/compare.py", "/tmp/benchmarks.json", *session.posargs)


@nox.session
def reliability(session: nox.Session) -> None:
    """Attack the pool, workers, recorder and cassette reader at full budget; rewrite docs/reliability.md
    (minutes; not run by default). ``nox -s reliability -- --budget 0.1`` for a quicker pass."""
    session.run(
        "python",
        "-m",
        "reliability",
        "--budget",
        "full",
        "--out",
        "docs/reliability.md",
        *session.posargs,
        env={"PYTHONPATH": "src:."},
    )


@nox.session
def demo(session: nox.Session) -> None:
    """The README's main job at full size: 8 tests, all 8 also the seed's way (a minute or two)."""
    session.run("dspy-bridge", "demo", *session.posargs)
