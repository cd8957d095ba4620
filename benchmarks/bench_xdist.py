"""Issue 13: is going wide with pytest-xdist worth it? Serial versus ``-n 2``, timed from outside.

Three projects, each run serially and with ``-n 2`` (interleaved, median of ``--runs``):
  sample   examples/qa_app as shipped (3 mock + 2 integration tests, cassettes replayed offline)
  wide     ``--tests`` integration tests (default 100), each a real DSPy program answered from its HTTP
           cassette through the proxy (recorded once against the bundled fake before timing)
  xdist    the same number of trivial tests with no bridge at all (``-p no:dspy_bridge``): what xdist's own
           start-up costs on this machine, the floor under any ``-n 2`` figure

Run: python benchmarks/bench_xdist.py [--tests 100] [--runs 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine_line

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "qa_app"

WIDE_TEST = """
import pytest


@pytest.mark.integration
@pytest.mark.parametrize("i", range({n}))
def test_capital(bridge, i):
    bridge.configure_lm("gemini/gemini-2.5-flash")
    assert bridge.run("question -> answer", question=f"Capital of country number {{i}}?")["answer"]
"""

PLAIN_TEST = """
import pytest


@pytest.mark.parametrize("i", range({n}))
def test_plain(i):
    assert i >= 0
"""


def _env() -> dict[str, str]:
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True")
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "DSPY_BRIDGE_RECORD", "DSPY_BRIDGE_MODE"):
        env.pop(name, None)
    return env


def _pytest(project: Path, *args: str) -> float:
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=project,
        env=_env(),
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"pytest {' '.join(args)} failed in {project}:\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}")
    return elapsed


def _measure(project: Path, runs: int, *extra: str) -> tuple[float, float]:
    serial, wide = [], []
    for _ in range(runs):  # interleaved, so drift on the machine hits both alike
        serial.append(_pytest(project, *extra))
        wide.append(_pytest(project, "-n", "2", "-p", "xdist", *extra))
    return statistics.median(serial), statistics.median(wide)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tests", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sample = Path(tmp) / "sample"
        shutil.copytree(SAMPLE, sample, ignore=shutil.ignore_patterns("*.lock", "__pycache__"))
        rows.append(("sample app (3 mock + 2 integration)", *_measure(sample, args.runs)))

        wide = Path(tmp) / "wide"
        (wide / "tests").mkdir(parents=True)
        (wide / "tests" / "test_wide.py").write_text(WIDE_TEST.format(n=args.tests))
        (wide / "pytest.ini").write_text("[pytest]\n")
        _pytest(wide, "--bridge-record=once", "--bridge-upstream=fake")  # record once; timing replays offline
        rows.append((f"{args.tests} integration tests", *_measure(wide, args.runs)))

        plain = Path(tmp) / "plain"
        plain.mkdir()
        (plain / "test_plain.py").write_text(PLAIN_TEST.format(n=args.tests))
        (plain / "pytest.ini").write_text("[pytest]\n")
        rows.append(
            (
                f"{args.tests} plain tests, no bridge (xdist's own cost)",
                *_measure(plain, args.runs, "-p", "no:dspy_bridge"),
            )
        )

    lines = [
        "## pytest-xdist: serial versus `-n 2` (issue 13)",
        "",
        f"{machine_line()}. Median of {args.runs} interleaved runs each, wall time of the whole `pytest` process.",
        "With `-n 2` one zygote serves the whole run (real workers fork from it in every xdist process); each",
        "process starts its own cassette proxy and mock pool, and only when it first runs a test that needs one.",
        "",
        "| suite | serial | `-n 2` | `-n 2` ÷ serial |",
        "|---|---|---|---|",
    ]
    for name, serial, wide in rows:
        lines.append(f"| {name} | {serial:.2f} s | {wide:.2f} s | {wide / serial:.2f}× |")
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
