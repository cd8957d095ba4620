"""Run every benchmark and assemble docs/benchmarks.md (``nox -s bench``).

Each benchmark writes its own markdown section; this script runs them one after another (never in
parallel: they would compete for the 2 cores and distort each other) and joins the sections.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine_line

HERE = Path(__file__).parent
BENCHMARKS = [
    ("bench_worker_hello.py", []),
    ("bench_pool.py", []),
    ("bench_startup.py", []),
    ("bench_cassette_lookup.py", []),
    ("bench_plugin.py", []),
    ("bench_xdist.py", []),
    ("bench_issue14.py", []),
    ("bench_parallel_recording.py", []),
]
#: Scripts that also write their figures as JSON (``--json FILE``); run_all merges them into one file.
WRITES_JSON = {"bench_issue14.py", "bench_parallel_recording.py"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="docs/benchmarks.md")
    parser.add_argument("--json", default="docs/benchmarks.json", help="the figures as JSON (bench-compare reads it)")
    parser.add_argument("--only", action="append", help="run only these scripts (repeatable)")
    args = parser.parse_args()
    sections = []
    figures: dict[str, object] = {"machine": machine_line(), "date": datetime.date.today().isoformat()}
    with tempfile.TemporaryDirectory() as tmp:
        for script, extra in BENCHMARKS:
            if args.only and script not in args.only:
                continue
            out = Path(tmp) / (script + ".md")
            print(f"running {script} …", file=sys.stderr, flush=True)
            as_json = Path(tmp) / (script + ".json")
            more = ["--json", str(as_json)] if script in WRITES_JSON else []
            subprocess.run([sys.executable, str(HERE / script), "--out", str(out), *more, *extra], check=True)
            sections.append(out.read_text().strip())
            if as_json.exists():
                figures[script.removesuffix(".py")] = json.loads(as_json.read_text())
    today = datetime.date.today().isoformat()
    header = [
        "# Benchmarks",
        "",
        f"Measured {today} by `nox -s bench` (`python benchmarks/run_all.py`). {machine_line()}.",
        "Every ratio below comes from numbers measured in the same run. These are benchmarks, not tests:",
        "no test asserts a time.",
        "",
    ]
    Path(args.out).write_text("\n".join(header) + "\n\n".join(sections) + "\n")
    if args.only and Path(args.json).exists():  # a partial run keeps the other scripts' figures
        figures = json.loads(Path(args.json).read_text()) | figures
    Path(args.json).write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.out} and {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
