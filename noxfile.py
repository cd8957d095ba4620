"""Developer sessions. They run in the current environment (install with `pip install -e '.[dev]'`),
because a fresh virtualenv per session would re-download DSPy each time on this offline-ish machine.
The exceptions build real environments on purpose, with uv (`pip install uv`) and the package index:
docs, tests-lowest and wheel; none is in the default list."""

from __future__ import annotations

import tempfile

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


@nox.session(venv_backend="uv", python="3.11")
def docs(session: nox.Session) -> None:
    """Build the docs site into site/ with ``mkdocs build --strict`` (any warning fails: a broken link, a page
    missing from the nav, a docstring mkdocstrings cannot render). Only the ``docs`` extra is installed:
    mkdocstrings reads the source statically."""
    docs_extra = nox.project.load_toml("pyproject.toml")["project"]["optional-dependencies"]["docs"]
    session.install(*docs_extra, "ruff")  # mkdocstrings formats the API's signatures with ruff
    session.run("mkdocs", "build", "--strict", "--site-dir", "site", *session.posargs, env={"NO_MKDOCS_2_WARNING": "1"})


# -- packaging: real environments (slow, never in the default list) -----------------------------------------
# These sessions build a fresh virtualenv with uv (`pip install uv`), so they need the package index.


@nox.session(name="tests-lowest", venv_backend="uv", python="3.11")
def tests_lowest(session: nox.Session) -> None:
    """Every runtime dependency at its declared floor (uv's lowest-direct resolution), then the suite.

    The dev tools come on top at their newest versions compatible with those floors (a constraints file
    keeps the floors), and scripts/check_floors.py fails if any floor did not resolve to itself.
    ``nox -s tests-lowest -- tests/test_pool_real.py`` runs a subset.
    """
    # litellm is named so that it too resolves to the floor DSPy declares for it: today's litellm needs a
    # newer filelock and PyYAML than ours, which would hide our own floors.
    session.install("--resolution=lowest-direct", "-e", ".", "litellm")
    frozen = session.run("uv", "pip", "freeze", silent=True) or ""
    floors = session.create_tmp() + "/floors.txt"
    with open(floors, "w") as out:  # the resolved floors (and what they pulled in) constrain the dev tools
        out.writelines(line + "\n" for line in str(frozen).splitlines() if "==" in line)
    session.install("-c", floors, "-e", ".[dev]")
    session.run("python", "scripts/check_floors.py")
    # TMPDIR: nox points it into .nox/, inside this repository, where pytester's runs would find our pyproject
    # (and its --strict-markers) as their rootdir config.
    env = {"PYTHONPATH": "", "TMPDIR": tempfile.gettempdir()}
    session.run("python", "-m", "pytest", "-q", "-x", *(session.posargs or ["tests"]), env=env)


@nox.session(venv_backend="uv", python="3.11")
def wheel(session: nox.Session) -> None:
    """Build the sdist and the wheel from it (``uv build``), check what they contain, install the wheel alone
    into this session's fresh venv and run ``dspy-bridge demo`` from it, outside the source tree."""
    import glob
    import shutil

    dist = session.create_tmp() + "/dist"
    shutil.rmtree(dist, ignore_errors=True)
    session.run("uv", "build", "--out-dir", dist, external=True)  # the sdist, then the wheel built from it
    (wheel_file,) = glob.glob(f"{dist}/*.whl")
    (sdist_file,) = glob.glob(f"{dist}/*.tar.gz")
    session.run("python", "scripts/check_dist.py", wheel_file, sdist_file, external=True)
    session.install(wheel_file)
    elsewhere = tempfile.mkdtemp(prefix="dspy-bridge-wheel-")
    with session.chdir(elsewhere):  # no source tree in sight: only the installed wheel can answer
        session.run(
            "python", "-c", "import dspy_bridge; assert 'site-packages' in dspy_bridge.__file__, dspy_bridge.__file__"
        )
        session.run("dspy-bridge", "demo", env={"PYTHONPATH": ""})
    shutil.rmtree(elsewhere, ignore_errors=True)


@nox.session
def demo(session: nox.Session) -> None:
    """The README's main job at full size: 8 tests, all 8 also the seed's way (a minute or two)."""
    session.run("dspy-bridge", "demo", *session.posargs)
