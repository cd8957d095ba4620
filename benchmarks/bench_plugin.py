"""Issue 5: what the pytest plugin costs a suite, against no bridge at all and against the seed's way.

Three generated projects, each run as a real ``pytest`` subprocess and timed from outside:
  plain   N tests doing the same assertions with no bridge at all
  bridge  the same N tests marked ``mock``, each creating a program, stubbing it and executing it
          through the shared mock pool (4 protocol round trips per test)
  seed    a handful of tests, each starting a fresh pool of 6 real DSPy workers one at a time with
          500 ms sleeps (what the system we replace did per test)

Run: python benchmarks/bench_plugin.py [--tests 500] [--seed-tests 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine_line

PLAIN = """
def test_{i}():
    outputs = {{"answer": "answer {i}"}}
    assert outputs == {{"answer": "answer {i}"}}
"""

BRIDGE = """
@pytest.mark.mock
def test_{i}(bridge):
    bridge.configure_lm("gemini/gemini-2.5-flash")
    program_id = bridge.create_program("question -> answer")
    bridge.stub(program_id, {{"answer": "answer {i}"}})
    assert bridge.execute(program_id, question="q{i}") == {{"answer": "answer {i}"}}
"""

SEED_CONFTEST = '''
import os, subprocess, sys, time
import pytest

SIZE, PAUSE = 6, 0.5


@pytest.fixture
def seed_pool():
    """The seed's way: a fresh pool per test, workers started one at a time with 500 ms sleeps."""
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True")
    workers = []
    for i in range(SIZE):
        proc = subprocess.Popen([sys.executable, "-m", "dspy_bridge.worker", "--mode", "real"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        header = proc.stdout.read(4)
        proc.stdout.read(int.from_bytes(header, "big"))
        workers.append(proc)
        if i < SIZE - 1:
            time.sleep(PAUSE)
    yield workers
    for proc in workers:
        proc.stdin.close()
    for proc in workers:
        proc.wait()
'''

SEED = """
def test_{i}(seed_pool):
    assert len(seed_pool) == 6
"""


def write_project(root: Path, template: str, count: int, header: str = "import pytest\n", conftest: str = "") -> None:
    root.mkdir(parents=True)
    (root / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider -q\n")
    if conftest:
        (root / "conftest.py").write_text(textwrap.dedent(conftest))
    body = header + "".join(template.format(i=i) for i in range(count))
    (root / "test_generated.py").write_text(body)


def run(root: Path) -> tuple[float, str]:
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest"], cwd=root, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"pytest failed in {root}:\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}")
    return elapsed, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tests", type=int, default=500)
    parser.add_argument("--seed-tests", type=int, default=3)
    parser.add_argument("--out")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-plugin-") as tmp:
        base = Path(tmp)
        write_project(base / "plain", PLAIN, args.tests, header="")
        write_project(base / "bridge", BRIDGE, args.tests)
        write_project(base / "seed", SEED, args.seed_tests, header="", conftest=SEED_CONFTEST)
        run(base / "plain")  # warm the page cache and .pyc files once
        plain, _ = run(base / "plain")
        bridge, bridge_out = run(base / "bridge")
        seed, _ = run(base / "seed")
    share = next((line for line in bridge_out.splitlines() if line.startswith("wall time")), "")
    per_seed_test = seed / args.seed_tests
    per_bridge_test = (bridge - plain) / args.tests
    lines = [
        "## The pytest plugin: a mock suite's cost (issue 5)",
        "",
        machine_line(),
        "",
        "| suite | tests | wall time | per test |",
        "|---|---:|---:|---:|",
        f"| plain pytest, no bridge | {args.tests} | {plain:.2f} s | {plain / args.tests * 1000:.1f} ms |",
        f"| `@pytest.mark.mock`, one shared mock pool | {args.tests} | {bridge:.2f} s | "
        f"{bridge / args.tests * 1000:.1f} ms |",
        f"| seed's way: fresh pool of 6 real workers per test, sequential + 500 ms sleeps | {args.seed_tests} | "
        f"{seed:.2f} s | {per_seed_test:.2f} s |",
        "",
        f"Bridge suite ÷ plain suite: **{bridge / plain:.2f}×** (goal ≤ 1.5×); the bridge adds "
        f"{per_bridge_test * 1000:.1f} ms per test (4 protocol round trips) on top of pytest itself.",
        f"At the seed's {per_seed_test:.1f} s per test, {args.tests} tests would take about "
        f"{per_seed_test * args.tests / 60:.0f} minutes.",
        "",
        f"The plugin's own summary line for the bridge suite: `{share}`",
        "",
    ]
    text = "\n".join(lines)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
