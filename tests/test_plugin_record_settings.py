"""The recording settings (timeouts, a failed test's recordings) without starting pytest or a pool."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dspy_bridge._pytest._pools import BridgePools
from dspy_bridge._pytest._settings import SETTINGS
from dspy_bridge.proxy._session import CassetteOptions, CassetteSession
from dspy_bridge.proxy._upstream import Upstream
from dspy_bridge.testing import FakeGemini
from test_proxy import GENERATE, gemini_body
from test_proxy_upstream import KEY, _NoRelay


@pytest.mark.parametrize(
    ("name", "raw", "problem"),
    [
        ("upstream_timeout", "0", "upstream_timeout=0.0 must be a positive number of seconds"),
        ("upstream_timeout", "ten", "upstream_timeout must be a float, got 'ten'"),
        ("record_request_timeout", "-5", "record_request_timeout=-5.0 must be a positive number of seconds"),
        ("record_failed", "maybe", "record_failed='maybe' is not one of discard, keep"),
    ],
)
def test_bad_recording_settings_are_usage_errors(name: str, raw: str, problem: str) -> None:
    setting = SETTINGS[name]
    with pytest.raises(pytest.UsageError, match=problem):
        setting.convert(raw, setting.cli)


def test_recording_settings_have_the_usual_four_names_and_defaults() -> None:
    assert [(SETTINGS[n].cli, SETTINGS[n].ini, SETTINGS[n].env, SETTINGS[n].default) for n in (
        "upstream_timeout", "record_request_timeout", "record_failed")] == [
        ("--bridge-upstream-timeout", "bridge_upstream_timeout", "DSPY_BRIDGE_UPSTREAM_TIMEOUT", 600.0),
        ("--bridge-record-request-timeout", "bridge_record_request_timeout", "DSPY_BRIDGE_RECORD_REQUEST_TIMEOUT",
         900.0),
        ("--bridge-record-failed", "bridge_record_failed", "DSPY_BRIDGE_RECORD_FAILED", "discard"),
    ]  # fmt: skip
    assert SETTINGS["upstream_timeout"].convert("1200", "ini") == 1200.0


def test_a_recording_run_gives_real_workers_the_longer_request_timeout() -> None:
    recording = BridgePools(1, "spawn", request_timeout=900.0)
    replaying = BridgePools(1, "spawn")
    assert recording._config("integration").request_timeout == 900.0
    assert replaying._config("integration").request_timeout == 60.0  # the pool's default
    assert recording._config("mock").request_timeout == 60.0  # mock workers never reach an LM


def test_a_discarded_recording_leaves_the_existing_cassette_byte_for_byte(tmp_path: Path) -> None:
    """What ``--bridge-record-failed=discard`` does at the HTTP level: eject without saving."""
    cassette = tmp_path / "kept.yaml"
    with FakeGemini(expected_key=KEY) as fake:
        for question, save in (("first?", True), ("second?", False)):
            session = CassetteSession(
                CassetteOptions(str(cassette), record_mode="new_episodes"), upstream=Upstream.parse(fake.base_url),
                api_key=KEY, timeout=30.0,
            )  # fmt: skip
            session.open()
            body = json.dumps(gemini_body(question)).encode()
            assert session.exchange("POST", GENERATE, {}, body, _NoRelay()).kind == "forwarded"
            report = session.close(save=save)
            if save:
                before = cassette.read_bytes()
    assert report["forwarded"] == 1 and not report["saved"]
    assert cassette.read_bytes() == before and b"second?" not in before
