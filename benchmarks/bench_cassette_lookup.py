"""Issue 4: replay lookup cost as a cassette grows (10 → 10,000 interactions), and big-file load time.

Run: python benchmarks/bench_cassette_lookup.py [--lookups N] [--out FILE]

For each size the cassette holds that many distinct ``execute_program`` recordings. "lookup" is
what a mock worker does per request once the file is loaded: build the canonical request
(``make_request``: canonicalise + scrub) and find its recording (``Replay.lookup``: a dict access).
It should stay flat. "miss" is the diagnosis of an unmatched request (a scan for the closest
recording): it is allowed to grow, because it only runs when a test is about to fail anyway.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine_line

from dspy_bridge import CassetteMiss
from dspy_bridge.cassettes import Cassette, make_request
from dspy_bridge.protocol._programs import canonical_program, program_id_for

SIZES = (10, 100, 1_000, 10_000)
DEFINITION = canonical_program({"signature": "question, context -> answer, confidence: float"})
PROGRAM_ID = program_id_for(DEFINITION)


def _inputs(i: int) -> dict[str, Any]:
    return {"question": f"Question number {i}: what happened in chapter {i % 97}?", "context": "lorem ipsum " * 8}


def _interactions(size: int) -> list[dict[str, Any]]:
    return [
        {
            "request": make_request(
                "execute_program",
                {"program_id": PROGRAM_ID, "inputs": _inputs(i)},
                session="s1",
                program=DEFINITION,
                model="gemini/gemini-2.5-flash",
            ),
            "response": {
                "ok": True,
                "result": {
                    "outputs": {"answer": f"In chapter {i % 97} the hero " + "walks on " * 20, "confidence": 0.5},
                    "usage": {"prompt_tokens": 250, "completion_tokens": 60, "total_tokens": 310},
                },
            },
        }
        for i in range(size)
    ]


def _time(function: Any, repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        samples.append((time.perf_counter() - started) * 1e6)
    return samples


def bench_size(size: int, lookups: int) -> dict[str, float]:
    cassette = Cassette(Path("bench.yaml"), _interactions(size))
    started = time.perf_counter()
    replay = cassette.replay(allow_repeats=True)  # builds the index once
    index_ms = (time.perf_counter() - started) * 1000
    probes = [_inputs(i * 7919 % size) for i in range(lookups)]
    requests = [
        make_request("execute_program", {"program_id": PROGRAM_ID, "inputs": p}, program=DEFINITION) for p in probes
    ]

    def lookup_only() -> None:
        for request in requests:
            assert replay.lookup(request) is not None

    def full() -> None:
        for inputs in probes:
            request = make_request("execute_program", {"program_id": PROGRAM_ID, "inputs": inputs}, program=DEFINITION)
            assert replay.lookup(request) is not None

    lookup_us = statistics.median(_time(lookup_only, 5)) / lookups
    full_us = statistics.median(_time(full, 5)) / lookups
    missing = make_request("execute_program", {"inputs": _inputs(-1)}, program=DEFINITION)

    def miss() -> None:
        try:
            cassette.replay().play(missing)
        except CassetteMiss:
            return
        raise AssertionError("expected a miss")

    miss_us = statistics.median(_time(miss, 3))
    return {"size": size, "index_ms": index_ms, "lookup_us": lookup_us, "full_us": full_us, "miss_ms": miss_us / 1000}


def bench_load(size: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as directory:
        os.environ["DSPY_BRIDGE_CACHE_DIR"] = str(Path(directory) / "cache")  # keep ~/.cache clean
        path = Path(directory) / "big.yaml"
        cassette = Cassette(path, _interactions(size))
        started = time.perf_counter()
        cassette.save()
        save_s = time.perf_counter() - started
        os.environ["DSPY_BRIDGE_CASSETTE_CACHE"] = "0"
        cold_s = statistics.median(_time(lambda: Cassette.load(path), 3)) / 1e6
        del os.environ["DSPY_BRIDGE_CASSETTE_CACHE"]
        Cassette.load(path)  # parses and fills the cache
        warm_s = statistics.median(_time(lambda: Cassette.load(path), 3)) / 1e6
        return {"size": size, "bytes": path.stat().st_size, "save_s": save_s, "cold_s": cold_s, "warm_s": warm_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=None, help="also write the report (markdown) here")
    options = parser.parse_args()
    lines = [
        "# Cassette replay lookup",
        "",
        machine_line(),
        "",
        "| interactions | index build (ms, once) | lookup (µs) | make_request + lookup (µs) | miss diagnosis (ms) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for size in SIZES:
        row = bench_size(size, options.lookups)
        lines.append(
            f"| {size:,} | {row['index_ms']:.1f} | {row['lookup_us']:.1f} | {row['full_us']:.1f} | {row['miss_ms']:.2f} |"
        )
        print(lines[-1], flush=True)
    load = bench_load(10_000)
    lines += [
        "",
        f"Load of a {load['size']:,}-interaction file ({load['bytes'] / 1e6:.1f} MB): {load['cold_s']:.2f} s cold "
        f"(YAML C parser + pydantic validation), {load['warm_s']:.2f} s from the parse cache (msgpack, keyed by "
        f"the file's SHA-256); save (dump + fsync + rename): {load['save_s']:.2f} s.",
    ]
    print("\n".join(lines))
    if options.out:
        options.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
