"""The dspy-bridge pytest plugin: mark a test ``mock`` or ``integration``, get a warm shared pool.

    @pytest.mark.mock                      # mock workers answer from cassettes/<module>/<test>.yaml
    def test_qa(bridge):
        bridge.configure_lm("gemini/gemini-2.5-flash")
        assert bridge.run("question -> answer", question="2+2?")["answer"]

Marks: ``mock`` and ``integration`` (keywords: cassette, record, synthetic, allow_repeats, match_on; for
the HTTP level record_errors, http_match_on, http_ignore_body_fields, http_allow_repeats, http_near_match), and
``scripted`` (real DSPy, no LM: ``bridge.script({...})`` answers each predictor).
Options (each also an ini key and an env var; precedence documented in docs/pytest-plugin.md):
``--bridge-mode``, ``--bridge-record``, ``--bridge-workers``, ``--bridge-cassette-dir``, and a few more.
Hook: ``pytest_dspy_bridge_configure(config, state)`` gets a ``BridgeSetup`` (workers, pool_env,
lm_defaults) before any pool starts.
Fixtures: ``bridge`` (per test: fresh session, this test's cassette), ``bridge_pool`` (the shared pool
of this test's kind), ``bridge_cassette`` (this test's cassette paths and replay settings),
``http_cassette_config`` (override it to configure HTTP cassettes per module or conftest).
Next to pytest-recording, its ``--block-network`` lets our tests reach the loopback proxy (``allowed_hosts``).
Heavy imports (pool, cassettes, proxy) happen inside fixtures, never at plugin load.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from dspy_bridge._pytest._plan import TestPlan, cassette_root, plan_for
from dspy_bridge._pytest._settings import add_options, validate_all, validate_mark
from dspy_bridge._pytest._setup import BridgeSetup
from dspy_bridge._pytest._state import CALL_FAILED, STATE_KEY, BridgeState
from dspy_bridge._pytest._summary import WORKEROUTPUT_KEY
from dspy_bridge._pytest._xdist import RUN_DIR_KEY

if TYPE_CHECKING:
    from dspy_bridge._client import Bridge
    from dspy_bridge.pool import SyncPool

__all__ = [
    "BridgeMarkWarning",
    "BridgeSetup",
    "bridge",
    "bridge_cassette",
    "bridge_pool",
    "bridge_proxy",
    "http_cassette_config",
]

_FIXTURES = {"bridge", "bridge_pool", "bridge_cassette", "bridge_proxy"}


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from dspy_bridge._pytest import _hooks

    pluginmanager.add_hookspecs(_hooks)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "mock(cassette=None, record=None, synthetic=None, allow_repeats=False, match_on=None): "
        "run on mock workers that answer from this test's bridge cassette",
    )
    config.addinivalue_line(
        "markers",
        "integration(cassette=None, record=None, live=False, record_errors=False, http_match_on=None, "
        "http_ignore_body_fields=None, http_allow_repeats=None, http_near_match=None): run on real DSPy workers; "
        "LM calls go through the cassette proxy (offline replay of the test's HTTP cassette unless recording); "
        "live=True: the test configures its own endpoint and is never replayed or recorded",
    )
    config.addinivalue_line(
        "markers",
        "scripted: run on real DSPy workers with no LM: the test's bridge.script({...}) answers each predictor's "
        "LM calls (formatted by the active adapter), so the module's code, loops and tools really run",
    )
    validate_all(config)  # a typo in any run-level setting is a usage error now, not inside every test
    if config.pluginmanager.hasplugin("recording"):
        # pytest-recording's vcrpy patches http.client while a vcr-marked test runs: bind the proxy's control
        # client to the real HTTPConnection now, so that no cassette of the user's ever sees our control calls.
        import dspy_bridge.proxy._control  # noqa: F401
    state = BridgeState(config)
    config.stash[STATE_KEY] = state
    config.hook.pytest_dspy_bridge_configure(config=config, state=BridgeSetup(state))


def _uses_bridge(item: pytest.Item) -> bool:
    return bool(_FIXTURES & set(getattr(item, "fixturenames", ())))


_OUR_MARKS = ("mock", "integration", "scripted")


class BridgeMarkWarning(pytest.PytestWarning):
    """A mark that looks like one of ours but is not (``@pytest.mark.integraton``): it silently does nothing."""


def _warn_misspelled_marks(item: pytest.Item) -> None:
    import difflib

    for mark in item.iter_markers():
        if mark.name in _OUR_MARKS:
            continue
        close = difflib.get_close_matches(mark.name, _OUR_MARKS, n=1, cutoff=0.75)
        if close:
            item.warn(
                BridgeMarkWarning(
                    f"@pytest.mark.{mark.name} looks like dspy-bridge's @pytest.mark.{close[0]}; as written it "
                    "does nothing (run with --strict-markers to make unknown marks errors)"
                )
            )


def _runs_no_tests(config: pytest.Config) -> bool:
    """--collect-only, --fixtures, --fixtures-per-test, --markers: nothing runs, so nothing may start."""
    option = config.option
    return bool(
        getattr(option, "collectonly", False)
        or getattr(option, "showfixtures", False)
        or getattr(option, "show_fixtures_per_test", False)
        or getattr(option, "markers", False)
    )


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Check every test's mark keywords before anything runs (a typo is a usage error, not a failing test)."""
    for item in items:
        _warn_misspelled_marks(item)
        for name in _OUR_MARKS:
            mark = item.get_closest_marker(name)
            if mark is not None:
                validate_mark(mark, item.nodeid)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Plan the selected tests (after -m/-k deselection) and warm a real pool if any needs one."""
    state = session.config.stash[STATE_KEY]
    if _runs_no_tests(session.config):
        return
    for item in session.items:
        if _uses_bridge(item):
            state.plans[item.nodeid] = plan_for(item)
    deselected = session.config.stash.get(DESELECTED, [])
    bridge = {item.nodeid for item in [*session.items, *deselected] if _uses_bridge(item)}
    state.report.usage.note_collection(session.config, session.items, deselected, bridge, cassette_root(session.config))
    if state.xdist.worker_id is not None:
        return  # an xdist worker collects every test but runs only some: it starts a pool when a test needs it
    if any(plan.real for plan in state.plans.values()) or (state.plans and state.prompts_mode != "off"):
        state.warm_real_pool()  # prompt locks are rendered by real workers, for mock tests too
    if any(not plan.real for plan in state.plans.values()):
        state.pools.warm("mock")  # ~0.1 s, overlapped with the first tests' own set-up


DESELECTED = pytest.StashKey[list[pytest.Item]]()


def pytest_deselected(items: list[pytest.Item]) -> None:
    """-k, -m, --deselect, --lf…: remember these tests, so the run record says their cassettes were not vouched
    for (``cassettes unused`` must not call them unused)."""
    if items:
        config = items[0].config
        config.stash.setdefault(DESELECTED, []).extend(items)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    state: BridgeState = item.config.stash[STATE_KEY]
    report = outcome.get_result()
    state.redact_report(report)
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed
    if call.excinfo is not None and report.failed:
        reason = state.missing_reason(call.excinfo.value)
        if reason is not None and state.on_missing == "skip":
            report.outcome = "skipped"
            report.longrepr = (str(item.path), item.location[1] or 0, f"dspy-bridge: {reason}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    """After a passing test body: ``--bridge-prompts=check|update`` on the programs it created."""
    result = yield
    state = item.config.stash.get(STATE_KEY, None)
    if state is not None:
        state.check_prompts(item)
    return result


#: What pytest-recording's --block-network must let through for our tests: the cassette proxy (and an
#: in-process fake Gemini) listen on loopback; they are never the network.
LOOPBACK_ALLOWED_HOSTS = (r"127\.0\.0\.1", "localhost")


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, Any, Any]:
    """pytest-recording decides blocked hosts in its ``allowed_hosts`` fixture (the block_network mark, else
    ``--allowed-hosts``, else ``vcr_config["allowed_hosts"]``); for a test using our fixtures, add loopback."""
    __tracebackhide__ = True  # a fixture's own error must not show this wrapper
    result = yield
    if (
        fixturedef.argname != "allowed_hosts"
        or not getattr(fixturedef.func, "__module__", "").startswith("pytest_recording")
        or not _uses_bridge(request.node)
    ):
        return result
    hosts = list(result) if isinstance(result, list | tuple) else [] if result is None else [str(result)]
    merged = [*hosts, *(host for host in LOOPBACK_ALLOWED_HOSTS if host not in hosts)]
    if fixturedef.cached_result is not None:  # what getfixturevalue (pytest-recording's block_network) returns
        fixturedef.cached_result = (merged, *fixturedef.cached_result[1:])
    return merged


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """An xdist worker hands its report to the controller; whoever prints the summary may fail on drift."""
    config = session.config
    state = config.stash.get(STATE_KEY, None)
    if state is None:
        return
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller prints the one summary
        state.finish()
        workeroutput[WORKEROUTPUT_KEY] = state.report.export()
        return
    if not _runs_no_tests(config):
        state.finish_run(int(session.exitstatus))
    if (state.drift_failed or state.stale_failed) and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: every worker process learns the run's directory (one zygote serves them all)."""
    state = node.config.stash.get(STATE_KEY, None)
    if state is not None:
        node.workerinput[RUN_DIR_KEY] = str(state.run_dir())


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: merge a finished worker's report into the run's."""
    data = getattr(node, "workeroutput", {}).get(WORKEROUTPUT_KEY)
    state = node.config.stash.get(STATE_KEY, None)
    if data is not None and state is not None:
        state.report.merge(data)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(STATE_KEY, None)
    if state is not None:
        state.write_summary(terminalreporter)


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(STATE_KEY, None)
    if state is not None:
        state.close()
        state.close_run_dir()


# -- fixtures ----------------------------------------------------------------------------------
def _plan(request: pytest.FixtureRequest) -> TestPlan:
    state: BridgeState = request.config.stash[STATE_KEY]
    node = request.node
    plan = state.plans.get(node.nodeid)
    if plan is None:  # e.g. the fixture was requested dynamically
        plan = state.plans[node.nodeid] = plan_for(node)
    return plan


@pytest.fixture
def bridge_cassette(request: pytest.FixtureRequest) -> TestPlan:
    """This test's plan: cassette paths, record mode, kind (mock/integration/scripted)."""
    return _plan(request)


@pytest.fixture
def bridge_pool(request: pytest.FixtureRequest) -> SyncPool:
    """The process-wide pool for this test's kind (one mock pool, one real pool), started lazily."""
    state: BridgeState = request.config.stash[STATE_KEY]
    return state.pool_for(_plan(request))


@pytest.fixture
def bridge_proxy(request: pytest.FixtureRequest) -> Any:
    """The cassette proxy real workers reach the LM through: ``inject_faults(Fault(status=429))`` etc."""
    state: BridgeState = request.config.stash[STATE_KEY]
    plan = _plan(request)
    if not plan.real:
        raise pytest.UsageError(f"{plan.nodeid}: bridge_proxy serves tests on real workers; mark it integration")
    return state.route().proxy


@pytest.fixture
def http_cassette_config() -> dict[str, Any]:
    """How integration tests' HTTP cassettes are used; override per conftest or module (like ``vcr_config``).

    Keys: match_on, ignore_body_fields, allow_repeats, record_errors, near_match, filter_headers,
    filter_query_parameters, filter_post_data_parameters. The mark's keywords win over it.
    """
    return {}


@pytest.fixture
def bridge(
    request: pytest.FixtureRequest, bridge_pool: SyncPool, http_cassette_config: dict[str, Any]
) -> Iterator[Bridge]:
    """A client bound to this test: a fresh session, its cassette, its mode (and recorder when recording)."""
    __tracebackhide__ = True
    state: BridgeState = request.config.stash[STATE_KEY]
    plan = _plan(request)
    state.check_preconditions(plan)
    started = time.perf_counter()
    with state.bridge_for(plan, bridge_pool, request.node, http_cassette_config) as client:
        yield client
    state.report.test_seconds += time.perf_counter() - started
