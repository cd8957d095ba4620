"""How real workers in a test run reach an LM: always through one cassette proxy per pytest process.

The proxy replays the test's HTTP cassette (offline) or, when the test records, forwards to the
upstream — real Gemini (the host's key is injected by the proxy; workers only see a placeholder), the
bundled fake Gemini (``--bridge-upstream=fake``), which this route then starts in-process, or any http(s)
base URL (``--bridge-upstream=https://gateway.example``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dspy_bridge._pytest._plan import TestPlan
    from dspy_bridge.proxy import ProxyProcess
    from dspy_bridge.testing.fake_gemini import FakeGemini

__all__ = ["LMRoute"]

_FAKE_UPSTREAM_KEY = "fake-upstream-key"  # the bundled fake accepts any key; never a real one


class LMRoute:
    def __init__(
        self,
        upstream: str,
        api_key: str | None,
        secret_env: str | tuple[str, ...] | None = None,
        secrets: tuple[str, ...] = (),
    ) -> None:
        from dspy_bridge._pytest._pools import env_names
        from dspy_bridge.proxy import DEFAULT_UPSTREAM, ProxyProcess

        self.fake: FakeGemini | None = None
        if upstream == "fake":
            from dspy_bridge.testing.fake_gemini import FakeGemini

            self.fake = FakeGemini().start()
            target, key = f"http://127.0.0.1:{self.fake.port}", _FAKE_UPSTREAM_KEY
        elif upstream == "gemini":
            target, key = DEFAULT_UPSTREAM, api_key  # type: ignore[assignment]
        else:  # any http(s) base URL: a gateway, a regional endpoint, another fake
            target, key = upstream, api_key  # type: ignore[assignment]
        self.proxy: ProxyProcess = ProxyProcess(
            upstream=target, api_key=key, secret_env=env_names(secret_env), extra_secrets=secrets
        ).start()
        self.reports: list[Any] = []

    @property
    def allowed_host(self) -> str:
        """The one address real workers need for the LM: the proxy's (the connect guard allows it)."""
        return f"127.0.0.1:{self.proxy.port}"

    def activate(self, plan: TestPlan) -> dict[str, Any]:
        """Point the proxy at this test's HTTP cassette; return the LM settings workers must use."""
        record_mode = plan.record if plan.records else "none"
        self.proxy.use_cassette(plan.http_cassette, record_mode=record_mode)
        return {**self.proxy.lm_kwargs(), "cache": False}

    def deactivate(self) -> Any:
        """Eject and save the test's HTTP cassette; returns the proxy's report of what happened."""
        self.proxy.clear_faults()  # faults a test queued but did not use must not hit the next test
        report = self.proxy.eject(save=True)
        self.reports.append(report)
        return report

    def close(self) -> None:
        self.proxy.close()
        if self.fake is not None:
            self.fake.close()
