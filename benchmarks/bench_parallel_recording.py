"""Issue 17, parallel recording: N concurrent calls to a slow upstream, direct versus through the recording proxy.

The upstream is a local HTTP server that answers each call after ``--delay`` seconds (1 s: a short real Gemini
answer), Gemini-shaped. N threads send distinct calls at once, straight to it ("direct") and through a
``ProxyProcess`` recording every call into a fresh cassette (``record_mode="all"``). A proxy that holds its
lock across the upstream call takes N × delay; one whose lock covers only vcrpy's match and append takes
about the slowest call. ``--base-src DIR`` also runs the proxy process from another source tree (e.g. a
``git archive`` of the base commit), interleaved, so before and after come from the same run.

Run: python benchmarks/bench_parallel_recording.py [--delay 1.0] [--runs 3] [--base-src DIR] [--out FILE] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine_line

from dspy_bridge.proxy import PLACEHOLDER_KEY, ProxyProcess

SIZES = (3, 6)
PATH = "/v1beta/models/gemini-2.5-flash:generateContent"
KEY = "AIza" + "b" * 35  # the slow upstream accepts any key


class _SlowUpstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    delay = 1.0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(type(self).delay)  # the upstream "thinking": this is what the benchmark is about
        data = json.dumps({"candidates": [{"content": {"role": "model", "parts": [{"text": "ok"}]}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def _post(port: int, index: int) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        body = json.dumps({"contents": [{"role": "user", "parts": [{"text": f"question {index}"}]}]}).encode()
        headers = {"Content-Type": "application/json", "x-goog-api-key": PLACEHOLDER_KEY}
        connection.request("POST", PATH, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def _burst(port: int, count: int) -> float:
    """``count`` calls at once; seconds until the last answer."""
    started = time.perf_counter()
    with ThreadPoolExecutor(count) as pool:
        statuses = list(pool.map(lambda i: _post(port, i), range(count)))
    elapsed = time.perf_counter() - started
    if statuses != [200] * count:
        raise SystemExit(f"unexpected answers {statuses}")
    return elapsed


@contextlib.contextmanager
def _proxy_from(src: str | None, upstream: str) -> Iterator[ProxyProcess]:
    """A proxy process run from ``src`` (None: this tree); the host side is always this tree's."""
    saved = os.environ.get("PYTHONPATH")
    if src is not None:
        os.environ["PYTHONPATH"] = src
    try:
        proxy = ProxyProcess(upstream=upstream, api_key=KEY).start()
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    try:
        yield proxy
    finally:
        proxy.close()


def _through(proxy: ProxyProcess, count: int, folder: Path, run: int) -> float:
    proxy.use_cassette(folder / f"n{count}-{run}.yaml", record_mode="all")
    try:
        return _burst(proxy.port, count)
    finally:
        report = proxy.eject()
        if report.forwarded != count:
            raise SystemExit(f"the proxy recorded {report.forwarded} of {count} calls")


def measure(delay: float, runs: int, base_src: str | None) -> dict[str, Any]:
    _SlowUpstream.delay = delay
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _SlowUpstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{upstream.server_port}"
    own_src = str(Path(__file__).resolve().parents[1] / "src")
    trees = {"after": own_src, **({"before": base_src} if base_src else {})}
    samples: dict[str, dict[int, list[float]]] = {name: {n: [] for n in SIZES} for name in ("direct", *trees)}
    try:
        with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
            proxies = {name: stack.enter_context(_proxy_from(src, url)) for name, src in trees.items()}
            for run in range(runs):  # interleaved: load shifts hit every variant alike
                for count in SIZES:
                    samples["direct"][count].append(_burst(upstream.server_port, count))
                    for name, proxy in proxies.items():
                        samples[name][count].append(_through(proxy, count, Path(tmp) / name, run))
    finally:
        upstream.shutdown()
        upstream.server_close()
    figures: dict[str, Any] = {"delay_s": delay, "runs": runs}
    for count in SIZES:
        direct = statistics.median(samples["direct"][count])
        row: dict[str, Any] = {"direct_wall_s": round(direct, 3)}
        for name in trees:
            through = statistics.median(samples[name][count])
            row[f"proxy_{name}_wall_s"] = round(through, 3)
            row[f"proxy_{name}_vs_direct_ratio"] = round(through / direct, 3)
        figures[f"n{count}"] = row
    return figures


def render(figures: dict[str, Any], base: bool) -> str:
    delay, runs = figures["delay_s"], figures["runs"]
    lines = [
        "## Parallel recording through the proxy (issue 17)",
        "",
        f"{machine_line()}; median of {runs} interleaved runs. Upstream: a local server answering each call after "
        f"{delay:g} s; N distinct calls sent at once, straight to it and through the proxy recording every call "
        "(`record_mode=all`). Serialised recording would take N × the delay. Measured by "
        "`benchmarks/bench_parallel_recording.py`.",
        "",
    ]
    if base:
        lines += [
            "| N at once | direct | proxy before (base) | before ÷ direct | proxy now | now ÷ direct |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
    else:
        lines += ["| N at once | direct | through the proxy | proxy ÷ direct |", "|---:|---:|---:|---:|"]
    for count in SIZES:
        row = figures[f"n{count}"]
        after = f"{row['proxy_after_wall_s']:.2f} s | {row['proxy_after_vs_direct_ratio']:.2f}×"
        if base:
            before = f"{row['proxy_before_wall_s']:.2f} s | {row['proxy_before_vs_direct_ratio']:.2f}×"
            lines.append(f"| {count} | {row['direct_wall_s']:.2f} s | {before} | {after} |")
        else:
            lines.append(f"| {count} | {row['direct_wall_s']:.2f} s | {after} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=1.0, help="seconds the upstream takes per call")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--base-src", help="another tree's src/ whose proxy process to measure too (before)")
    parser.add_argument("--out", help="write the markdown section here (default: print it)")
    parser.add_argument("--json", help="write the figures as JSON here")
    args = parser.parse_args()
    figures = measure(args.delay, args.runs, args.base_src)
    text = render(figures, base=bool(args.base_src))
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
