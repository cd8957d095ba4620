"""``dspy-bridge``: the command line. Every subcommand wraps library calls; nothing is reimplemented.

dspy-bridge demo                 real worker → fake Gemini, recorded; mock worker replays it (offline)
dspy-bridge verify PATH...       the same as: dspy-bridge cassettes verify PATH...
dspy-bridge daemon start|stop|status   keep a warm zygote between test runs
                                 (status exits 0 running, 1 not running, 2 incompatible; --json)
dspy-bridge fake-gemini          serve the bundled fake Gemini on 127.0.0.1
dspy-bridge cassettes list|show|diff|unused|prune|verify|stats
                                 look after bridge and HTTP cassettes (--json on each; exit codes:
                                 dspy-bridge cassettes --help)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

DEMO_SIGNATURE = "question -> answer"
DEMO_QUESTION = "What is the capital of France?"


def _demo_round(pool: Any, context: dict[str, Any], recorder: Any, lm: dict[str, Any]) -> tuple[dict[str, Any], float]:
    from dspy_bridge._client import Bridge

    client = Bridge(pool, context=context, recorder=recorder, lm_defaults=lm)
    started = time.perf_counter()
    client.configure_lm("gemini/gemini-2.5-flash")
    program_id = client.create_program(DEMO_SIGNATURE)
    outputs = client.execute(program_id, question=DEMO_QUESTION)
    return outputs, time.perf_counter() - started


def demo(args: argparse.Namespace) -> int:
    """Run one DSPy program through a real worker (recording) and a mock worker (replaying)."""
    from dspy_bridge.cassettes import Recorder
    from dspy_bridge.pool import PoolConfig, SyncPool
    from dspy_bridge.testing.fake_gemini import FakeGemini

    workdir = Path(args.dir or tempfile.mkdtemp(prefix="dspy-bridge-demo-"))
    cassette = workdir / "demo.yaml"
    print(f"dspy-bridge demo — cassette: {cassette}")
    with FakeGemini() as fake:
        lm = {"api_base": fake.base_url, "api_key": "demo-placeholder-key", "cache": False, "num_retries": 0}
        started = time.perf_counter()
        with SyncPool(PoolConfig(mode="real", size=1)) as real_pool:
            real_ready = time.perf_counter() - started
            recorder = Recorder(cassette, "all", meta={"recorded_against": "fake-gemini"})
            real_out, real_s = _demo_round(real_pool, {"test_id": "demo"}, recorder, lm)
            recorder.save()
        print(f"real worker   ready in {real_ready:6.3f} s, answered in {real_s:6.3f} s: {real_out}")
        print(f"              fake Gemini served {fake.request_count} request(s)")
    started = time.perf_counter()
    with SyncPool(PoolConfig(mode="mock", size=1)) as mock_pool:
        mock_ready = time.perf_counter() - started
        context = {"test_id": "demo", "cassette": {"path": str(cassette)}}
        mock_out, mock_s = _demo_round(mock_pool, context, None, {})
    print(f"mock worker   ready in {mock_ready:6.3f} s, answered in {mock_s:6.3f} s: {mock_out}")
    same = mock_out == real_out
    print("replay matches the real answer" if same else "MISMATCH between real and replayed answers")
    return 0 if same else 1


def verify(args: argparse.Namespace) -> int:
    """The old spelling of ``dspy-bridge cassettes verify`` (kept as an alias)."""
    from dspy_bridge._cli_cassettes import verify as verify_cassettes

    return verify_cassettes(args)


def daemon(args: argparse.Namespace) -> int:
    from dspy_bridge.pool import _daemon as warm_daemon

    try:
        if args.action == "start":
            info = warm_daemon.daemon_start(
                idle_timeout=args.idle_timeout, extra_preload=args.preload, secret_env=args.secret_env
            )
        elif args.action == "stop":
            info = warm_daemon.daemon_stop()
        else:
            info = warm_daemon.daemon_status()
    except PermissionError as exc:
        print(f"dspy-bridge daemon: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(dataclasses.asdict(info), indent=2) if args.json else info)
    if args.action == "status":
        return status_exit_code(info)
    return 1 if args.action == "start" and not info.running else 0


def status_exit_code(info: Any) -> int:
    """``daemon status``: 0 running and usable, 1 not running, 2 running but incompatible with this environment."""
    if not info.running:
        return 1
    return 2 if info.compatible is False else 0


def fake_gemini(args: argparse.Namespace) -> int:
    from dspy_bridge.testing.fake_gemini import FakeGemini

    with FakeGemini(port=args.port) as fake:
        print(json.dumps({"base_url": fake.base_url, "pid": os.getpid()}), flush=True)
        try:
            sys.stdin.read()
        except KeyboardInterrupt:
            pass
    return 0


def _version_line() -> str:
    """``dspy-bridge X (DSPy Y, Python Z)`` — read from the installed metadata, without importing DSPy."""
    from importlib.metadata import PackageNotFoundError, version

    from dspy_bridge._version import __version__

    try:
        dspy_version = version("dspy")
    except PackageNotFoundError:
        dspy_version = "not installed"
    return f"dspy-bridge {__version__} (DSPy {dspy_version}, Python {sys.version.split()[0]})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dspy-bridge",
        description=(__doc__ or "").replace("``", ""),  # the docstring without its RST markup
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version_line())
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("demo", help="record with a real worker against the fake Gemini, replay with a mock worker")
    p.add_argument("--dir", help="where to write the demo cassette (default: a temp dir)")
    p.set_defaults(func=demo)
    p = commands.add_parser("verify", help="the same as 'dspy-bridge cassettes verify' (older spelling)")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=verify)
    p = commands.add_parser("daemon", help="a warm zygote kept between test runs")
    p.add_argument("action", choices=("start", "stop", "status"))
    p.add_argument("--idle-timeout", type=float, default=1800.0)
    p.add_argument("--preload", action="append", default=[], help="extra module to import once (e.g. litellm)")
    p.add_argument(
        "--secret-env",
        action="append",
        default=[],
        metavar="NAME",
        help="start: one more variable the daemon must not inherit (keys such as GEMINI_API_KEY never are)",
    )
    p.add_argument("--json", action="store_true", help="print what the daemon reports as JSON")
    p.set_defaults(func=daemon)
    p = commands.add_parser("fake-gemini", help="serve the bundled fake Gemini until stdin closes")
    p.add_argument("--port", type=int, default=0)
    p.set_defaults(func=fake_gemini)
    from dspy_bridge._cli_cassettes import add_cassettes_parser

    add_cassettes_parser(commands)
    from dspy_bridge._cli_prompts import add_prompts_parser

    add_prompts_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
