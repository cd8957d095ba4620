"""How real workers in a test run reach an LM: always through one cassette proxy per pytest process.

The proxy replays the test's HTTP cassette (offline) or, when the test records, forwards to the
upstream — real Gemini (the host's key is injected by the proxy; workers only see a placeholder), the
bundled fake Gemini (``--bridge-upstream=fake``), which this route then starts in-process, or any http(s)
base URL (``--bridge-upstream=https://gateway.example``).

How a test's HTTP cassette is used merges, low to high: the proxy's defaults < the ``http_cassette_config``
fixture (override it in a conftest or module, like pytest-recording's ``vcr_config``) < the mark's keywords
(``allow_repeats`` < ``http_allow_repeats``, ``http_match_on``, ``http_ignore_body_fields``,
``http_near_match``, ``record_errors``). The plugin's own policy is not configurable: an integration
test's recording without LM calls still writes its (empty) HTTP cassette, and a recording during which
the upstream was unreachable is discarded whole.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dspy_bridge._pytest._plan import TestPlan
    from dspy_bridge.proxy import ProxyProcess
    from dspy_bridge.testing.fake_gemini import FakeGemini

__all__ = ["HTTP_CONFIG_KEYS", "LMRoute", "http_cassette_options"]

#: Keys of the ``http_cassette_config`` fixture (``ProxyProcess.use_cassette`` options).
HTTP_CONFIG_KEYS = (
    "match_on",
    "ignore_body_fields",
    "allow_repeats",
    "record_errors",
    "near_match",
    "filter_headers",
    "filter_query_parameters",
    "filter_post_data_parameters",
)
#: Mark keyword → config key, in increasing precedence (``http_allow_repeats`` beats ``allow_repeats``).
_FROM_MARK = (
    ("allow_repeats", "allow_repeats"),
    ("http_allow_repeats", "allow_repeats"),
    ("http_match_on", "match_on"),
    ("http_ignore_body_fields", "ignore_body_fields"),
    ("http_near_match", "near_match"),
    ("record_errors", "record_errors"),
)


def http_cassette_options(plan: TestPlan, config: dict[str, Any] | None) -> dict[str, Any]:
    """The fixture's config with the mark's keywords over it; unknown fixture keys are a usage error."""
    from dspy_bridge._exceptions import UsageError

    config = dict(config or {})
    unknown = sorted(set(config) - set(HTTP_CONFIG_KEYS))
    if unknown:
        raise UsageError(
            f"{plan.nodeid}: http_cassette_config has unknown keys {unknown}; known: {', '.join(HTTP_CONFIG_KEYS)}"
        )
    for mark_key, key in _FROM_MARK:
        if mark_key in plan.http_mark:
            config[key] = plan.http_mark[mark_key]
    return config


_FAKE_UPSTREAM_KEY = "fake-upstream-key"  # the bundled fake accepts any key; never a real one


class LMRoute:
    def __init__(
        self,
        upstream: str,
        api_key: str | None,
        secret_env: str | tuple[str, ...] | None = None,
        secrets: tuple[str, ...] = (),
        *,
        upstream_timeout: float | None = None,
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
        from dspy_bridge.proxy import DEFAULT_UPSTREAM_TIMEOUT

        self.proxy: ProxyProcess = ProxyProcess(
            upstream=target,
            api_key=key,
            secret_env=env_names(secret_env),
            extra_secrets=secrets,
            upstream_timeout=DEFAULT_UPSTREAM_TIMEOUT if upstream_timeout is None else upstream_timeout,
        ).start()
        self.reports: list[Any] = []

    @property
    def allowed_host(self) -> str:
        """The one address real workers need for the LM: the proxy's (the connect guard allows it)."""
        return f"127.0.0.1:{self.proxy.port}"

    def activate(self, plan: TestPlan, http_config: dict[str, Any] | None = None) -> dict[str, Any]:
        """Point the proxy at this test's HTTP cassette; return the LM settings workers must use."""
        from dspy_bridge.proxy import DEFAULT_MATCH_ON

        options = http_cassette_options(plan, http_config)
        record_mode = plan.record if plan.records else "none"
        near = options.get("near_match")
        self.proxy.use_cassette(
            plan.http_cassette,
            record_mode=record_mode,
            match_on=tuple(options.get("match_on") or DEFAULT_MATCH_ON),
            ignore_body_fields=tuple(options.get("ignore_body_fields") or ()),
            allow_playback_repeats=bool(options.get("allow_repeats", False)),
            record_errors=bool(options.get("record_errors", False)),
            near_match=float(near) if near is not None else None,
            filter_headers=tuple(options.get("filter_headers") or ()),
            filter_query_parameters=tuple(options.get("filter_query_parameters") or ()),
            filter_post_data_parameters=tuple(options.get("filter_post_data_parameters") or ()),
            record_empty=plan.marked == "integration",  # its replay needs the file even without LM calls
            keep_partial=False,  # an unreachable upstream: nothing of this test is written
            stream_chunks=plan.stream_chunks,
        )
        return {**self.proxy.lm_kwargs(), "cache": False}

    def deactivate(self, *, save: bool = True) -> Any:
        """Eject the test's HTTP cassette, saving it unless told not to (the file then stays as it was);
        returns the proxy's report of what happened."""
        self.proxy.clear_faults()  # faults a test queued but did not use must not hit the next test
        report = self.proxy.eject(save=save)
        self.reports.append(report)
        return report

    def close(self) -> None:
        self.proxy.close()
        if self.fake is not None:
            self.fake.close()
