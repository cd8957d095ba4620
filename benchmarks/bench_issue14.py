"""Issue 14, "fast where users feel it": the figures users feel, each a ratio or a before/after measured in
the same run, runs interleaved, median of >= 5.

  plugin      200 trivial tests: with the plugin ÷ ``-p no:dspy_bridge``
  first       a fresh mock worker's first cassette answer after its Hello (per-test 10-interaction cassette):
              sent at once after the Hello (worst case) and after 100 ms idle (a pool warmed at collection)
  big         a 10,000-interaction cassette: save, cold load, recording 10 more, a load from the parse cache,
              and a cold load of the same data in block style (what older versions wrote: PyYAML reads it)

``--base-src DIR`` runs every figure against another source tree too (e.g. ``git archive`` of the base commit),
interleaved with this one, so before and after come from the same run.

Run: python benchmarks/bench_issue14.py [--runs 7] [--base-src DIR] [--out FILE] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine_line

HERE = Path(__file__).parent
SRC = HERE.parent / "src"

RECORD = r"""
import sys
from pathlib import Path
from dspy_bridge.cassettes import Recorder
from dspy_bridge.protocol._programs import program_id_for
from dspy_bridge.cassettes._config import cassette_context
import json
path = Path(sys.argv[1])
with Recorder(path, "once", meta={"recorded_against": "bench"}) as recorder:
    recorder.record({"command": "configure_lm", "args": {"model": "gemini/gemini-2.5-flash"}, "session_id": "r"},
                    {"ok": True, "result": {"configured": {"model": "gemini/gemini-2.5-flash"}}})
    for i in range(5):  # 1 + 2 * 5 = 11 interactions, what a typical per-test cassette holds
        definition = {"signature": f"question -> answer{i}"}
        pid = program_id_for(definition)
        recorder.record({"command": "create_program", "args": definition, "session_id": "r"},
                        {"ok": True, "result": {"program_id": pid}})
        recorder.record({"command": "execute_program", "args": {"program_id": pid, "inputs": {"question": f"q{i}"}},
                         "session_id": "r"}, {"ok": True, "result": {"outputs": {f"answer{i}": f"a{i}"}, "usage": {}}})
print(json.dumps({"test_id": "bench::first", "cassette": cassette_context(path)}))
"""

# Runs in a fresh interpreter: spawns one mock worker as the pool does (python -S -c), reads its Hello, then
# times configure_lm + create_program + execute_program (the first cassette answer) over raw pipes.
FIRST = r"""
import json, os, subprocess, sys, time
import msgpack
src, context, idle = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3])
env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, *[p for p in sys.path if p]]))
proc = subprocess.Popen([sys.executable, "-S", "-c", "from dspy_bridge.worker._main import main; main()",
                         "--mode", "mock", "--codec", "msgpack", "--worker-id", "b"],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, bufsize=0)
def read():
    n = int.from_bytes(proc.stdout.read(4), "big")
    return msgpack.unpackb(proc.stdout.read(n), raw=False)
def call(i, command, args):
    body = msgpack.packb({"type": "request", "id": i, "command": command, "args": args, "session_id": "s",
                          "context": context}, use_bin_type=True)
    proc.stdin.write(len(body).to_bytes(4, "big") + body)
    reply = read()
    assert reply.get("ok"), reply
    return reply["result"]
assert read()["type"] == "hello"
time.sleep(idle)
started = time.perf_counter()
call(1, "configure_lm", {"model": "gemini/gemini-2.5-flash"})
pid = call(2, "create_program", {"signature": "question -> answer0"})["program_id"]
result = call(3, "execute_program", {"program_id": pid, "inputs": {"question": "q0"}})
elapsed = time.perf_counter() - started
assert result["source"] == "cassette", result
proc.stdin.close(); proc.wait()
print(elapsed)
"""

BIG = r"""
import os, sys, time, json, tempfile
from pathlib import Path
import yaml
from dspy_bridge.cassettes import Cassette, Recorder
size, path = int(sys.argv[1]), Path(sys.argv[2])
def item(i):
    inputs = {"question": f"Question number {i}: what is {i} + {i}?", "context": "Some context. " * 8}
    return {"request": {"command": "execute_program", "session": "s1",
                        "program": {"signature": "question, context -> answer", "program_type": "predict"},
                        "model": "gemini/gemini-2.5-flash",
                        "args": {"program_id": "prog_0123456789abcdef", "inputs": inputs}},
            "response": {"ok": True, "result": {"outputs": {"answer": f"The answer is {2 * i}.\nSecond line."},
                                                  "usage": {"prompt_tokens": 50, "completion_tokens": 10}}}}
cassette = Cassette(path, [item(i) for i in range(size)])
started = time.perf_counter(); cassette.save(); save = time.perf_counter() - started
started = time.perf_counter(); loaded = Cassette.load(path); cold = time.perf_counter() - started
assert len(loaded) == size
out = {"save": save, "cold": cold, "bytes": path.stat().st_size}
# Recording 10 more (new_episodes): merge under the lock, write, rename
started = time.perf_counter()
with Recorder(path, "new_episodes", meta={"recorded_against": "unknown"}) as recorder:
    for i in range(size, size + 10):
        request = item(i)["request"]
        recorder.record({"command": "execute_program", "args": request["args"], "session_id": "x"},
                        item(i)["response"])
out["append"] = time.perf_counter() - started
assert len(Cassette.load(path)) == size + 10
# The parse cache: the first load writes the entry, later loads (other workers, other runs) read it
with tempfile.TemporaryDirectory() as cache:
    os.environ.update(DSPY_BRIDGE_CASSETTE_CACHE="1", DSPY_BRIDGE_CACHE_DIR=cache)
    Cassette.load(path)
    started = time.perf_counter(); Cassette.load(path); out["cached"] = time.perf_counter() - started
    os.environ["DSPY_BRIDGE_CASSETTE_CACHE"] = "0"
# A block-style file (what earlier versions wrote, or a hand edit): PyYAML reads it
block = path.with_name("block.yaml")
data = {"version": 1, "meta": loaded.meta, "interactions": [i.as_dict() for i in loaded]}
block.write_text(yaml.dump(data, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False,
                           allow_unicode=True, width=2**30))
started = time.perf_counter(); assert len(Cassette.load(block)) == size; out["block"] = time.perf_counter() - started
print(json.dumps(out))
"""


def _env(src: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(src), LITELLM_LOCAL_MODEL_COST_MAP="True", DSPY_BRIDGE_CASSETTE_CACHE="0")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _python(src: Path, code: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], env=_env(src), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return done.stdout.strip()


def _pytest(src: Path, project: Path, *extra: str) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *extra], cwd=project, env=_env(src), capture_output=True, check=False
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(done.stdout[-3000:])
    return elapsed


def _median(values: list[float]) -> float:
    return statistics.median(values)


def bench_plugin(trees: dict[str, Path], runs: int, tmp: Path) -> dict[str, Any]:
    project = tmp / "trivial"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider -q\n")
    (project / "test_trivial.py").write_text("".join(f"def test_{i}():\n    assert {i} == {i}\n" for i in range(200)))
    samples: dict[str, list[float]] = {"none": []} | {name: [] for name in trees}
    _pytest(SRC, project)  # warm .pyc files and the page cache
    for _ in range(runs):
        samples["none"].append(_pytest(SRC, project, "-p", "no:dspy_bridge"))
        for name, src in trees.items():
            samples[name].append(_pytest(src, project))
    none = _median(samples["none"])
    return {"none_s": none} | {f"{name}_ratio": _median(samples[name]) / none for name in trees}


def bench_first(trees: dict[str, Path], runs: int, tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    contexts = {}
    for name, src in trees.items():
        path = tmp / f"first-{name}.yaml"
        contexts[name] = _python(src, textwrap.dedent(RECORD), str(path))
    for idle in ("0", "0.1"):
        samples: dict[str, list[float]] = {name: [] for name in trees}
        for _ in range(runs):
            for name, src in trees.items():
                samples[name].append(float(_python(src, FIRST, str(src), contexts[name], idle)))
        for name in trees:
            out[f"{name}_idle{idle}_ms"] = _median(samples[name]) * 1000
    return out


def bench_big(trees: dict[str, Path], runs: int, tmp: Path, size: int) -> dict[str, Any]:
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for _ in range(runs):
        for name, src in trees.items():
            samples[name].append(json.loads(_python(src, BIG, str(size), str(tmp / f"big-{name}.yaml"))))
    out: dict[str, Any] = {"size": size}
    for name in trees:
        for figure in ("cold", "save", "append", "cached", "block"):
            out[f"{name}_{figure}_s"] = _median([s[figure] for s in samples[name]])
        out[f"{name}_bytes"] = samples[name][0]["bytes"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--big-runs", type=int, default=3)
    parser.add_argument("--base-src", type=Path, help="a source tree of the base commit, measured interleaved")
    parser.add_argument("--only", action="append", choices=["plugin", "first", "big"])
    parser.add_argument("--out")
    parser.add_argument("--json")
    args = parser.parse_args()
    trees = {"new": SRC} | ({"base": args.base_src.resolve()} if args.base_src else {})
    results: dict[str, Any] = {"machine": machine_line(), "runs": args.runs, "big_runs": args.big_runs}
    with tempfile.TemporaryDirectory(prefix="bench-14-") as tmp:
        if not args.only or "plugin" in args.only:
            results["plugin"] = bench_plugin(trees, args.runs, Path(tmp))
        if not args.only or "first" in args.only:
            results["first"] = bench_first(trees, args.runs, Path(tmp))
        if not args.only or "big" in args.only:
            results["big"] = bench_big(trees, args.big_runs, Path(tmp), 10_000)
    text = render(results, "base" in trees)
    if args.out:
        Path(args.out).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(text)


def _cell(section: dict[str, Any] | None, key: str, fmt: str) -> str:
    if not section or key not in section:
        return "—"
    return format(section[key], fmt)


def render(results: dict[str, Any], with_base: bool) -> str:
    plugin, first, big = results.get("plugin"), results.get("first"), results.get("big")
    rows = [
        ("plugin, 200 trivial tests ÷ `-p no:dspy_bridge`", "plugin", "{}_ratio", ".3f", "×", "≤ 1.02×"),
        ("first cassette answer, sent right after Hello", "first", "{}_idle0_ms", ".1f", " ms", "≤ 20 ms"),
        ("first cassette answer, 100 ms after Hello", "first", "{}_idle0.1_ms", ".1f", " ms", "≤ 20 ms"),
        ("10k-interaction cassette, cold load", "big", "{}_cold_s", ".2f", " s", "≤ 1.5 s"),
        ("10k-interaction cassette, save", "big", "{}_save_s", ".2f", " s", "≤ 1 s"),
        ("10k-interaction cassette, record 10 more (`new_episodes` save)", "big", "{}_append_s", ".2f", " s", "—"),
        ("10k-interaction cassette, load from the parse cache", "big", "{}_cached_s", ".2f", " s", "—"),
        ("10k-interaction block-style file (older or hand-edited), cold load", "big", "{}_block_s", ".2f", " s", "—"),
    ]
    sections = {"plugin": plugin, "first": first, "big": big}
    head = "| figure | before (base) | after | goal |" if with_base else "| figure | measured | goal |"
    lines = [
        "### Issue 14 figures measured by `benchmarks/bench_issue14.py`",
        "",
        results["machine"]
        + f"; median of {results['runs']} interleaved runs (big cassette: {results.get('big_runs', 3)}).",
        "",
        head,
        "|---|---:|---:|---|" if with_base else "|---|---:|---|",
    ]
    for label, section, key, fmt, unit, goal in rows:
        new = _cell(sections[section], key.format("new"), fmt) + unit
        if with_base:
            base = _cell(sections[section], key.format("base"), fmt) + unit
            lines.append(f"| {label} | {base} | {new} | {goal} |")
        else:
            lines.append(f"| {label} | {new} | {goal} |")
    if big:
        sizes = ", ".join(
            f"{name} {big[f'{name}_bytes'] / 1e6:.1f} MB" for name in ("base", "new") if f"{name}_bytes" in big
        )
        lines += ["", f"The 10k cassette as written: {sizes} (parse cache off except in its own row: cold loads)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
