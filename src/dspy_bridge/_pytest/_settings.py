"""Every plugin setting, and the one precedence rule they all follow.

Low to high: built-in default < the test's mark < ini file < environment variable < command line.
A run-level setting (ini, env, CLI) is an explicit choice for the whole run, so it beats what a
mark asks for; that is how ``--bridge-mode=integration`` forces every test onto real workers and
how CI guarantees ``--bridge-record=none``. Documented with worked examples in docs/pytest-plugin.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from dspy_bridge._modes import RECORD_MODES

__all__ = [
    "HTTP_MARK_KEYS",
    "MARK_KEYS",
    "RECORD_MODES",
    "SETTINGS",
    "Setting",
    "add_options",
    "run_level",
    "validate_all",
    "validate_mark",
]

MODES = ("auto", "mock", "integration")
UPSTREAM_NAMES = ("gemini", "fake")
DRIFT_MODES = ("report", "fail", "strict")
RECORD_FAILED = ("discard", "keep")
STALE_MODES = ("warn", "fail")


@dataclass(frozen=True)
class Setting:
    name: str
    help: str
    default: Any
    choices: tuple[str, ...] | None = None
    kind: type = str
    mark_key: str | None = None  # the keyword on @pytest.mark.mock/integration that sets it per test
    minimum: int | None = None  # for int settings
    check: Callable[[Any], str | None] | None = None  # returns why a value is wrong (beyond choices)

    @property
    def cli(self) -> str:
        return "--bridge-" + self.name.replace("_", "-")

    @property
    def ini(self) -> str:
        return "bridge_" + self.name

    @property
    def env(self) -> str:
        return "DSPY_BRIDGE_" + self.name.upper()

    @property
    def dest(self) -> str:
        return "bridge_" + self.name

    def convert(self, raw: Any, source: str) -> Any:
        try:
            value = self.kind(raw)
        except (TypeError, ValueError):
            raise pytest.UsageError(f"{source}: {self.name} must be a {self.kind.__name__}, got {raw!r}") from None
        if self.choices is not None and value not in self.choices:
            raise pytest.UsageError(f"{source}: {self.name}={value!r} is not one of {', '.join(self.choices)}")
        if self.minimum is not None and value < self.minimum:
            raise pytest.UsageError(f"{source}: {self.name} must be at least {self.minimum}, got {value!r}")
        problem = self.check(value) if self.check is not None else None
        if problem:
            raise pytest.UsageError(f"{source}: {self.name}={value!r} {problem}")
        return value


def _upstream_problem(value: Any) -> str | None:
    """``gemini``, ``fake`` or an http(s) base URL (a gateway, a regional endpoint, another fake)."""
    if value in UPSTREAM_NAMES:
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(str(value))
    if parts.scheme in ("http", "https") and parts.hostname:
        return None
    return f"is neither {' nor '.join(UPSTREAM_NAMES)} nor an http(s) URL such as https://gateway.example/v1beta"


def _seconds_problem(value: Any) -> str | None:
    return None if value > 0 else "must be a positive number of seconds"


def _budget_problem(value: Any) -> str | None:
    from dspy_bridge._pytest._spend import parse_budget

    try:
        parse_budget(str(value))
    except ValueError as exc:
        return str(exc)
    return None


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting("mode", "auto: follow the marks; mock/integration: force every test onto that kind", "auto", MODES),
        Setting(
            "record", "cassette record mode (default none: never records)", "none", RECORD_MODES, mark_key="record"
        ),
        Setting("workers", "workers per pool", 2, kind=int, mark_key=None, minimum=1),
        Setting("cassette_dir", "root of cassettes (default: cassettes/ beside each test module)", None),
        Setting(
            "default_mark", "kind for unmarked tests that use the bridge fixtures", "mock", ("mock", "integration")
        ),
        Setting(
            "on_missing",
            "missing cassette or key in replay: fail (default) or skip, with the reason",
            "fail",
            ("fail", "skip"),
        ),
        Setting("start", "real-worker start strategy", "auto", ("auto", "spawn", "zygote")),
        Setting(
            "upstream",
            "where recording sends LM calls: 'gemini' (needs GEMINI_API_KEY), 'fake' (the bundled fake Gemini) "
            "or any http(s) base URL (a gateway, a regional endpoint)",
            "gemini",
            check=_upstream_problem,
        ),
        Setting(
            "drift",
            "what the drift check (--bridge-mode=integration on mock tests) does with differences: report "
            "them in the summary, fail the run on regressions (type, Literal value, missing field, tool calls), "
            "or strict: fail on any difference",
            "report",
            DRIFT_MODES,
        ),
        Setting(
            "record_failed",
            "new recordings of a test that failed: discard them (default; existing recordings stay as they were) "
            "or keep them",
            "discard",
            RECORD_FAILED,
        ),
        Setting(
            "upstream_timeout",
            "seconds the cassette proxy waits on the upstream per LM call while recording (DSPy's own client "
            "waits 600)",
            600.0,
            kind=float,
            check=_seconds_problem,
        ),
        Setting(
            "record_request_timeout",
            "seconds one bridge request on real workers may take in a run that records (replay runs keep the "
            "pool's 60 s): a program's calls to real Gemini take longer",
            900.0,
            kind=float,
            check=_seconds_problem,
        ),
        Setting(
            "prompts",
            "prompt lock files beside the cassettes: check (fail a test whose programs' prompts changed), update "
            "(write them), off",
            "off",
            ("off", "check", "update"),
        ),
        Setting(
            "record_budget",
            "stop recording once this pytest process recorded this much: calls:N and/or usd:X (e.g. calls:300,usd:2)",
            None,
            check=_budget_problem,
        ),
        Setting(
            "stale",
            "what the summary does with stale cassettes (recorded with another DSPy version or model, or older "
            "than stale_days): warn, or fail the run",
            "warn",
            STALE_MODES,
        ),
        Setting(
            "stale_days",
            "cassettes recorded more than this many days ago are stale (default: no age limit)",
            None,
            kind=float,
            minimum=0,
        ),
        Setting(
            "stale_model",
            "the model your tests use now: bridge cassettes recorded against another model are stale",
            None,
        ),
        Setting(
            "run_record",
            "where the run record read by 'dspy-bridge cassettes unused' is written, relative to the rootdir "
            "('off': not written)",
            ".dspy-bridge/last-run.json",
        ),
        Setting("secret_env", "more variable names never given to workers or the proxy (comma-separated)", ""),
        Setting(
            "allowed_hosts",
            "hosts real workers may connect to besides the cassette proxy: 'host:port' or 'host', comma-separated",
            None,
        ),
        Setting(
            "allowed_modules",
            "module-path prefixes real workers may import user modules from (comma-separated; default none)",
            "",
        ),
        Setting(
            "synthetic",
            "allow synthetic answers for unrecorded mock requests",
            "no",
            ("yes", "no"),
            mark_key="synthetic",
        ),
    )
}


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("dspy-bridge", "dspy-bridge: mock and real DSPy workers")
    for setting in SETTINGS.values():
        choices = f" ({'|'.join(setting.choices)})" if setting.choices else ""
        group.addoption(
            setting.cli,
            dest=setting.dest,
            default=None,
            choices=setting.choices,  # argparse refuses a typo at once, and --help lists them
            help=f"{setting.help}{choices}. Also ini '{setting.ini}' and env {setting.env}.",
        )
        parser.addini(setting.ini, f"dspy-bridge: {setting.help}", default=None)


def validate_all(config: pytest.Config) -> None:
    """Check every run-level setting (CLI, env, ini) at configure time, before anything is collected or started."""
    for name in SETTINGS:
        run_level(config, name)


def run_level(config: pytest.Config, name: str) -> tuple[Any, str]:
    """The run-wide value of a setting and where it came from (cli, env, ini or default)."""
    setting = SETTINGS[name]
    raw = config.getoption(setting.dest)
    if raw is not None:
        return setting.convert(raw, setting.cli), "cli"
    if os.environ.get(setting.env):
        return setting.convert(os.environ[setting.env], setting.env), "env"
    ini = config.getini(setting.ini)
    if ini not in (None, "", []):
        return setting.convert(ini, f"ini {setting.ini}"), "ini"
    return setting.default, "default"


MARK_KEYS = {
    "cassette",
    "record",
    "synthetic",
    "workers",
    "allow_repeats",
    "match_on",
    "live",
    "stream_chunks",  # replay recorded streams cut into N characters per chunk (both levels)
    # the HTTP level (the cassette proxy), merged over the http_cassette_config fixture
    "record_errors",
    "http_match_on",
    "http_ignore_body_fields",
    "http_allow_repeats",
    "http_near_match",
}
HTTP_MARK_KEYS = {key for key in MARK_KEYS if key.startswith("http_")} | {"record_errors"}


def _http_mark_problem(key: str, value: Any) -> str | None:
    if key in ("http_match_on", "http_ignore_body_fields"):
        if isinstance(value, str) or not all(isinstance(item, str) for item in value or ()):
            return "must be a list of strings"
    elif key == "http_near_match":
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
            return "must be a similarity in (0, 1], e.g. 0.9"
    elif not isinstance(value, bool):
        return "must be True or False"
    return None


def validate_mark(mark: pytest.Mark, nodeid: str) -> dict[str, Any]:
    """Check a mock/integration mark's keywords (like pytest-recording's validation.py)."""
    if mark.name == "scripted" and (mark.args or mark.kwargs):
        raise pytest.UsageError(
            f"{nodeid}: @pytest.mark.scripted takes no arguments; give the answers in the test with "
            "bridge.script({'predictor': {...}}, strict=True, auto=False)"
        )
    if mark.args:
        raise pytest.UsageError(f"{nodeid}: @pytest.mark.{mark.name} takes keywords only, got {mark.args!r}")
    unknown = sorted(set(mark.kwargs) - MARK_KEYS)
    if unknown:
        raise pytest.UsageError(
            f"{nodeid}: @pytest.mark.{mark.name} got unknown keywords {unknown}; known: {sorted(MARK_KEYS)}"
        )
    if "live" in mark.kwargs and mark.name != "integration":
        raise pytest.UsageError(
            f"{nodeid}: live=True belongs on @pytest.mark.integration (a mock test never reaches an LM)"
        )
    for key in HTTP_MARK_KEYS & set(mark.kwargs):
        problem = _http_mark_problem(key, mark.kwargs[key])
        if problem:
            raise pytest.UsageError(f"{nodeid}: @pytest.mark.{mark.name}({key}={mark.kwargs[key]!r}) {problem}")
    if "stream_chunks" in mark.kwargs:
        from dspy_bridge._exceptions import UsageError
        from dspy_bridge.cassettes._config import stream_chunk_size

        try:
            stream_chunk_size(mark.kwargs["stream_chunks"])
        except UsageError as exc:
            raise pytest.UsageError(f"{nodeid}: @pytest.mark.{mark.name}: {exc}") from None
    if "record" in mark.kwargs and mark.kwargs["record"] not in RECORD_MODES:
        raise pytest.UsageError(f"{nodeid}: record={mark.kwargs['record']!r} is not one of {', '.join(RECORD_MODES)}")
    return dict(mark.kwargs)
