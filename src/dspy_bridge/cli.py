"""``dspy-bridge``: the command line. Every subcommand wraps library calls; nothing is reimplemented.

dspy-bridge demo [--quick]       a small suite run the seed's way, on mock and on real workers (offline)
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
from pathlib import Path
from typing import Any

__all__ = ["main"]

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def demo(args: argparse.Namespace) -> int:
    """Record a small suite once, run it the seed's way, on mock workers and on real ones; compare and time.

    Exit 0: every answer equals the recording's; 1: one differs, or a step failed (said why); 2: usage."""
    from dspy_bridge._demo import SIZES, run_demo
    from dspy_bridge._demo._display import DemoDisplay
    from dspy_bridge._exceptions import BridgeError

    parent = Path(args.dir) if args.dir else None
    if parent is not None and parent.exists() and not parent.is_dir():
        print(
            f"dspy-bridge demo: --dir {parent} is not a directory; give a directory (created if missing)",
            file=sys.stderr,
        )
        return 2
    size = SIZES[args.size or ("quick" if args.quick else "full")]
    try:
        with DemoDisplay() as display:
            report = run_demo(size, display, parent=parent, keep=args.keep)
    except BridgeError as exc:
        print(f"dspy-bridge demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dspy-bridge demo: interrupted; every process it started was stopped", file=sys.stderr)
        return 130
    return report.exit_code


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
    p = commands.add_parser(
        "demo",
        help="run a small suite the seed's way, on mock workers and on real ones; time and compare (offline)",
        description="Records 8 question-answering tests against the bundled fake Gemini, then runs them three "
        "ways: the seed's (6 real workers started one at a time per test), mock workers answering from bridge "
        "cassettes, and zygote-forked real workers whose LM calls the cassette proxy replays. Exit 1 if any "
        "answer differs from the recording's.",
    )
    p.add_argument("--quick", action="store_true", help="run only 2 tests the seed's way (about half a minute)")
    p.add_argument("--keep", action="store_true", help="keep the work dir with the cassettes (its path is printed)")
    p.add_argument("--dir", metavar="DIR", help="create the work dir inside DIR (default: the system temp dir)")
    p.add_argument("--size", choices=("tiny",), help=argparse.SUPPRESS)  # the test suite's end-to-end run
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
