"""Issue 14, "fast where users feel it": the figures users feel, each a ratio or a before/after measured in
the same run, runs interleaved, median of >= 5.

  plugin      200 trivial tests: with the plugin ÷ ``-p no:dspy_bridge``
  first       a fresh mock worker's first cassette answer after its Hello (per-test 10-interaction cassette):
              sent at once after the Hello (worst case) and after 100 ms idle (a pool warmed at collection)
  big         a 10,000-interaction cassette: save, cold load, recording 10 more, a load from the parse cache,
              and a cold load of the same data in block style (what older versions wrote: PyYAML reads it)
  roundtrip   sequential ``ping``s, p50/p99: a raw blocking pipe to an echo child (the floor, measured in the same
              process and run), ``SyncPool.request`` and ``await Pool.request`` to one mock worker; each as a
              ratio to the raw p50 of its own run
  throughput  64 client tasks sending ``ping``s back to back (64 in flight), through 1 and 4 mock workers
  suite       500 ``@pytest.mark.mock`` tests (configure, create, stub, execute) ÷ the same 500 plain tests

``--base-src DIR`` runs every figure against another source tree too (e.g. ``git archive`` of the base commit),
interleaved with this one, so before and after come from the same run.

Run: python benchmarks/bench_issue14.py [--runs 7] [--base-src DIR] [--only roundtrip ...] [--out FILE] [--json FILE]
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


# Runs in a fresh interpreter on one source tree: the raw floor and both pool paths, in the same process and run.
ROUNDTRIP = r"""
import asyncio, json, os, statistics, subprocess, sys, time
from dspy_bridge.pool import Pool, PoolConfig, SyncPool
n = int(sys.argv[1])
ECHO = '''
import os
read, write = os.read, os.write
def exactly(n):
    data = b""
    while len(data) < n:
        chunk = read(0, n - len(data))
        if not chunk:
            raise SystemExit(0)
        data += chunk
    return data
while True:
    header = exactly(4)
    write(1, header + exactly(int.from_bytes(header, "big")))
'''
def raw():
    proc = subprocess.Popen([sys.executable, "-S", "-c", ECHO], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    w, r = proc.stdin.fileno(), proc.stdout.fileno()
    import msgpack
    payload = msgpack.packb({"type": "request", "id": 1, "command": "ping", "args": {}, "session_id": None})
    frame = len(payload).to_bytes(4, "big") + payload
    samples = []
    for _ in range(n):
        began = time.perf_counter()
        os.write(w, frame)
        got = b""
        while len(got) < len(frame):
            got += os.read(r, len(frame) - len(got))
        samples.append(time.perf_counter() - began)
    proc.stdin.close(); proc.wait()
    return samples
def worker_raw():
    # the mock worker itself over a raw blocking pipe (no pool): what the worker's own loop costs
    entry = "from dspy_bridge.worker._main import main; main()"
    argv = [sys.executable, "-S", "-c", entry, "--mode", "mock", "--codec", "msgpack", "--worker-id", "raw"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, env=env)
    w, r = proc.stdin.fileno(), proc.stdout.fileno()
    import msgpack
    def read():
        header = b""
        while len(header) < 4:
            header += os.read(r, 4 - len(header))
        size, body = int.from_bytes(header, "big"), b""
        while len(body) < size:
            body += os.read(r, size - len(body))
        return body
    read()  # hello
    samples = []
    for i in range(n):
        payload = msgpack.packb({"type": "request", "id": i + 1, "command": "ping", "args": {}, "context": {}})
        began = time.perf_counter()
        os.write(w, len(payload).to_bytes(4, "big") + payload)
        read()
        samples.append(time.perf_counter() - began)
    proc.stdin.close(); proc.wait()
    return samples
config = PoolConfig(mode="mock", size=1, start_strategy="spawn")
def sync():
    samples = []
    with SyncPool(config) as pool:
        for _ in range(200):
            pool.request("ping")
        for _ in range(n):
            began = time.perf_counter(); pool.request("ping"); samples.append(time.perf_counter() - began)
    return samples
async def pool_async():
    samples = []
    async with Pool(config) as pool:
        for _ in range(200):
            await pool.request("ping")
        for _ in range(n):
            began = time.perf_counter(); await pool.request("ping"); samples.append(time.perf_counter() - began)
    return samples
def cut(samples):
    return statistics.median(samples) * 1e6, statistics.quantiles(samples, n=100, method="inclusive")[98] * 1e6
base, worker, s, a = raw(), worker_raw(), sync(), asyncio.run(pool_async())
out = {"raw": cut(base), "worker": cut(worker), "sync": cut(s), "async": cut(a)}
print(json.dumps(out))
"""

THROUGHPUT = r"""
import asyncio, json, sys, time
from dspy_bridge.pool import Pool, PoolConfig
workers, total, clients = int(sys.argv[1]), int(sys.argv[2]), 64
async def main():
    async with Pool(PoolConfig(mode="mock", size=workers, start_strategy="spawn")) as pool:
        await asyncio.gather(*(pool.request("ping") for _ in range(500)))
        each = total // clients
        async def client():
            for _ in range(each):
                await pool.request("ping")
        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return each * clients / (time.perf_counter() - began)
print(asyncio.run(main()))
"""

PLAIN_TEST = """
def test_{i}():
    outputs = {{"answer": "answer {i}"}}
    assert outputs == {{"answer": "answer {i}"}}
"""

MOCK_TEST = """
@pytest.mark.mock
def test_{i}(bridge):
    bridge.configure_lm("gemini/gemini-2.5-flash")
    program_id = bridge.create_program("question -> answer")
    bridge.stub(program_id, {{"answer": "answer {i}"}})
    assert bridge.execute(program_id, question="q{i}") == {{"answer": "answer {i}"}}
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


def bench_roundtrip(trees: dict[str, Path], runs: int, requests: int) -> dict[str, Any]:
    samples: dict[str, list[dict[str, list[float]]]] = {name: [] for name in trees}
    for _ in range(runs):
        for name, src in trees.items():
            samples[name].append(json.loads(_python(src, ROUNDTRIP, str(requests))))
    out: dict[str, Any] = {"requests": requests}
    for name in trees:
        runs_of = samples[name]
        out[f"{name}_raw_p50_us"] = _median([run["raw"][0] for run in runs_of])
        out[f"{name}_worker_p50_us"] = _median([run["worker"][0] for run in runs_of])
        out[f"{name}_worker_ratio"] = _median([run["worker"][0] / run["raw"][0] for run in runs_of])
        for path in ("sync", "async"):
            out[f"{name}_{path}_p50_us"] = _median([run[path][0] for run in runs_of])
            out[f"{name}_{path}_p99_us"] = _median([run[path][1] for run in runs_of])
            out[f"{name}_{path}_ratio"] = _median([run[path][0] / run["raw"][0] for run in runs_of])
    return out


def bench_throughput(trees: dict[str, Path], runs: int, requests: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {f"{name}_{w}": [] for name in trees for w in (1, 4)}
    for _ in range(runs):
        for name, src in trees.items():
            for workers in (1, 4):
                samples[f"{name}_{workers}"].append(float(_python(src, THROUGHPUT, str(workers), str(requests))))
    out: dict[str, Any] = {"requests": requests}
    for name in trees:
        out[f"{name}_1_rps"] = _median(samples[f"{name}_1"])
        out[f"{name}_4_rps"] = _median(samples[f"{name}_4"])
        out[f"{name}_4_over_1"] = _median(
            [four / one for one, four in zip(samples[f"{name}_1"], samples[f"{name}_4"], strict=True)]
        )
    return out


def bench_suite(trees: dict[str, Path], runs: int, tmp: Path, tests: int) -> dict[str, Any]:
    projects = {}
    for kind, template, header in (("plain", PLAIN_TEST, ""), ("mock", MOCK_TEST, "import pytest\n")):
        project = projects[kind] = tmp / f"suite-{kind}"
        project.mkdir()
        (project / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider -q\n")
        (project / "test_generated.py").write_text(header + "".join(template.format(i=i) for i in range(tests)))
    _pytest(SRC, projects["plain"])  # warm .pyc files and the page cache
    samples: dict[str, list[float]] = {f"{name}_{kind}": [] for name in trees for kind in projects}
    for _ in range(runs):
        for name, src in trees.items():
            for kind, project in projects.items():
                samples[f"{name}_{kind}"].append(_pytest(src, project))
    out: dict[str, Any] = {"tests": tests}
    for name in trees:
        out[f"{name}_plain_s"] = _median(samples[f"{name}_plain"])
        out[f"{name}_mock_s"] = _median(samples[f"{name}_mock"])
        out[f"{name}_ratio"] = _median(
            [mock / plain for plain, mock in zip(samples[f"{name}_plain"], samples[f"{name}_mock"], strict=True)]
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--big-runs", type=int, default=3)
    parser.add_argument("--base-src", type=Path, help="a source tree of the base commit, measured interleaved")
    parser.add_argument(
        "--only", action="append", choices=["plugin", "first", "big", "roundtrip", "throughput", "suite"]
    )
    parser.add_argument("--requests", type=int, default=5000, help="sequential requests per round-trip path")
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
        if not args.only or "roundtrip" in args.only:
            results["roundtrip"] = bench_roundtrip(trees, args.runs, args.requests)
        if not args.only or "throughput" in args.only:
            results["throughput"] = bench_throughput(trees, args.runs, 20_000)
        if not args.only or "suite" in args.only:
            results["suite"] = bench_suite(trees, args.runs, Path(tmp), 500)
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
    big = results.get("big")
    rows = [
        ("raw blocking pipe round trip p50 (echo child; the floor)", "roundtrip", "{}_raw_p50_us", ".0f", " µs", "—"),
        ("mock worker over a raw blocking pipe, no pool: p50", "roundtrip", "{}_worker_p50_us", ".0f", " µs", "—"),
        ("the same ÷ raw p50 (the worker's own cost)", "roundtrip", "{}_worker_ratio", ".2f", "×", "—"),
        ("`SyncPool.request` p50", "roundtrip", "{}_sync_p50_us", ".0f", " µs", "—"),
        ("`SyncPool.request` p50 ÷ raw p50", "roundtrip", "{}_sync_ratio", ".2f", "×", "≤ 1.5×"),
        ("`Pool.request` p50", "roundtrip", "{}_async_p50_us", ".0f", " µs", "—"),
        ("`Pool.request` p50 ÷ raw p50", "roundtrip", "{}_async_ratio", ".2f", "×", "≤ 1.5×"),
        ("`Pool.request` p99", "roundtrip", "{}_async_p99_us", ".0f", " µs", "≤ 500 µs"),
        ("throughput, 1 mock worker, 64 in flight", "throughput", "{}_1_rps", ",.0f", " req/s", "—"),
        ("throughput, 4 mock workers, 64 in flight", "throughput", "{}_4_rps", ",.0f", " req/s", "≥ 40,000 req/s"),
        ("throughput, 4 workers ÷ 1 worker", "throughput", "{}_4_over_1", ".2f", "×", "≥ 1×"),
        ("500 mock tests ÷ 500 plain tests", "suite", "{}_ratio", ".2f", "×", "≤ 1.3×"),
        ("plugin, 200 trivial tests ÷ `-p no:dspy_bridge`", "plugin", "{}_ratio", ".3f", "×", "≤ 1.02×"),
        ("first cassette answer, sent right after Hello", "first", "{}_idle0_ms", ".1f", " ms", "≤ 20 ms"),
        ("first cassette answer, 100 ms after Hello", "first", "{}_idle0.1_ms", ".1f", " ms", "≤ 20 ms"),
        ("10k-interaction cassette, cold load", "big", "{}_cold_s", ".2f", " s", "≤ 1.5 s"),
        ("10k-interaction cassette, save", "big", "{}_save_s", ".2f", " s", "≤ 1 s"),
        ("10k-interaction cassette, record 10 more (`new_episodes` save)", "big", "{}_append_s", ".2f", " s", "—"),
        ("10k-interaction cassette, load from the parse cache", "big", "{}_cached_s", ".2f", " s", "—"),
        ("10k-interaction block-style file (older or hand-edited), cold load", "big", "{}_block_s", ".2f", " s", "—"),
    ]
    sections = {name: results.get(name) for name in ("plugin", "first", "big", "roundtrip", "throughput", "suite")}
    head = "| figure | before (base) | after | goal |" if with_base else "| figure | measured | goal |"
    lines = [
        "### Issue 14 figures measured by `benchmarks/bench_issue14.py`",
        "",
        results["machine"]
        + f"; median of {results['runs']} interleaved runs (big cassette: {results.get('big_runs', 3)}); ratios are "
        "medians of per-run ratios.",
        "",
        head,
        "|---|---:|---:|---|" if with_base else "|---|---:|---|",
    ]
    for label, section, key, fmt, unit, goal in rows:
        if not sections[section]:
            continue
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
