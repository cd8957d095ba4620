"""google-genai calls made by user code in a real worker go through the cassette proxy, like DSPy's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dspy_bridge import Bridge
from dspy_bridge._secrets import PLACEHOLDER_KEY
from dspy_bridge.pool import PoolConfig, SyncPool
from dspy_bridge.proxy import ProxyProcess, verify_http_cassette
from dspy_bridge.testing import FakeGemini
from dspy_bridge.worker._genai import BASE_URL_ENV, route_google_genai

KEY = "AIza" + "g" * 35  # built at run time: never a real-looking key in the tree


def run_direct(bridge: Bridge, proxy: ProxyProcess) -> dict[str, object]:
    bridge.configure_lm("gemini/gemini-2.5-flash", cache=False, num_retries=0, **proxy.lm_kwargs())
    program = bridge.create_program(module="usermods.genai_direct:DirectGemini")
    return dict(bridge.execute(program, question="Capital of France?"))


@pytest.mark.slow
def test_user_code_calling_google_genai_is_recorded_then_replayed_offline(tmp_path: Path) -> None:
    cassette = tmp_path / "http" / "direct.yaml"
    upstream = FakeGemini(expected_key=KEY)
    config = PoolConfig(size=1, mode="real", allowed_modules=("usermods",))
    with upstream, ProxyProcess(upstream=upstream.base_url, api_key=KEY) as proxy, SyncPool(config) as pool:
        bridge = Bridge(pool)
        proxy.use_cassette(cassette, record_mode="once")
        recorded = run_direct(bridge, proxy)
        assert proxy.eject().forwarded == 2  # the SDK's call and DSPy's
        upstream.close()  # from here on, any upstream call would fail

        proxy.use_cassette(cassette, record_mode="none")
        replayed = run_direct(bridge, proxy)
        report = proxy.eject()
    assert replayed == recorded and recorded["note"]
    assert (report.replayed, report.forwarded, report.misses) == (2, 0, 0)
    clients = [seen.headers.get("x-goog-api-client", "") for seen in upstream.requests]
    assert any("google-genai-sdk" in client for client in clients), clients  # the SDK's own request
    assert all(seen.api_key == KEY for seen in upstream.requests)  # the proxy put the host's key in
    verify_http_cassette(cassette, secrets=[KEY])


def test_only_a_loopback_proxy_for_a_gemini_model_is_routed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BASE_URL_ENV, raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", "unchanged")
    assert not route_google_genai("gemini/gemini-2.5-flash", "https://generativelanguage.googleapis.com/v1beta", KEY)
    assert not route_google_genai("openai/gpt-4o", "http://127.0.0.1:9/v1beta", PLACEHOLDER_KEY)
    # A real key, even with a loopback base URL, never lands in the environment (a keyless session would use it).
    assert not route_google_genai("gemini/gemini-2.5-flash", "http://127.0.0.1:9/v1beta", KEY)
    assert BASE_URL_ENV not in os.environ and os.environ["GEMINI_API_KEY"] == "unchanged"
    monkeypatch.setenv("GOOGLE_API_KEY", "would-win")
    assert route_google_genai("gemini/gemini-2.5-flash", "http://127.0.0.1:9/v1beta", PLACEHOLDER_KEY)
    assert os.environ[BASE_URL_ENV] == "http://127.0.0.1:9/"
    assert os.environ["GEMINI_API_KEY"] == PLACEHOLDER_KEY and "GOOGLE_API_KEY" not in os.environ
