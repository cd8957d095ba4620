"""Every plugin setting, and the one precedence rule they all follow.

Low to high: built-in default < the test's mark < ini file < environment variable < command line.
A run-level setting (ini, env, CLI) is an explicit choice for the whole run, so it beats what a
mark asks for; that is how ``--bridge-mode=integration`` forces every test onto real workers and
how CI guarantees ``--bridge-record=none``. Documented with worked examples in docs/pytest-plugin.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pytest

from dspy_bridge._modes import RECORD_MODES

__all__ = ["RECORD_MODES", "SETTINGS", "Setting", "add_options", "run_level", "validate_mark"]

MODES = ("auto", "mock", "integration")


@dataclass(frozen=True)
class Setting:
    name: str
    help: str
    default: Any
    choices: tuple[str, ...] | None = None
    kind: type = str
    mark_key: str | None = None  # the keyword on @pytest.mark.mock/integration that sets it per test

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
        return value


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting("mode", "auto: follow the marks; mock/integration: force every test onto that kind", "auto", MODES),
        Setting(
            "record", "cassette record mode (default none: never records)", "none", RECORD_MODES, mark_key="record"
        ),
        Setting("workers", "workers per pool", 2, kind=int, mark_key=None),
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
            "where recording sends LM calls: 'gemini' (needs GEMINI_API_KEY) or 'fake'",
            "gemini",
            ("gemini", "fake"),
        ),
        Setting("secret_env", "more variable names never given to workers or the proxy (comma-separated)", ""),
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
            help=f"{setting.help}{choices}. Also ini '{setting.ini}' and env {setting.env}.",
        )
        parser.addini(setting.ini, f"dspy-bridge: {setting.help}", default=None)


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


MARK_KEYS = {"cassette", "record", "synthetic", "workers", "allow_repeats", "match_on", "live"}


def validate_mark(mark: pytest.Mark, nodeid: str) -> dict[str, Any]:
    """Check a mock/integration mark's keywords (like pytest-recording's validation.py)."""
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
    if "record" in mark.kwargs and mark.kwargs["record"] not in RECORD_MODES:
        raise pytest.UsageError(f"{nodeid}: record={mark.kwargs['record']!r} is not one of {', '.join(RECORD_MODES)}")
    return dict(mark.kwargs)
