"""Per-process plugin state: plans, pools, the LM route for real workers, counters, the summary."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from dspy_bridge._exceptions import BridgeError, CassetteMiss, HandlerError
from dspy_bridge._pytest._plan import TestPlan
from dspy_bridge._pytest._pools import BridgePools, env_names, parse_hosts
from dspy_bridge._pytest._settings import run_level
from dspy_bridge._pytest._spend import budget_problem, count_spend, parse_budget
from dspy_bridge._pytest._summary import RunReport
from dspy_bridge._pytest._xdist import xdist_identity
from dspy_bridge._secrets import api_key_from_env, key_env_hint, redact_values, secret_values

if TYPE_CHECKING:
    from dspy_bridge._client import Bridge
    from dspy_bridge._pytest._lm_route import LMRoute
    from dspy_bridge.pool import SyncPool

__all__ = ["BRIDGE_CLIENT", "CALL_FAILED", "STATE_KEY", "BridgeState"]


class BridgeState:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.started = time.perf_counter()
        self.workers = int(run_level(config, "workers")[0])
        self.strategy = str(run_level(config, "start")[0])
        self.upstream = str(run_level(config, "upstream")[0])
        self.on_missing = str(run_level(config, "on_missing")[0])
        self.pool_env: dict[str, str] = {}
        self.lm_defaults: dict[str, Any] = {}
        self.plans: dict[str, TestPlan] = {}
        self._pools: BridgePools | None = None
        self._run_dir: Path | None = None
        self._route: LMRoute | None = None
        self.xdist = xdist_identity(config)
        self.worker_label = self.xdist.label
        self.report = RunReport(self.worker_label)
        self.counts = self.report.counts
        self.drift_mode = str(run_level(config, "drift")[0])
        self.record_failed = str(run_level(config, "record_failed")[0])
        self.prompts_mode = str(run_level(config, "prompts")[0])
        self.record_budget = parse_budget(run_level(config, "record_budget")[0])  # checked by validate_all
        self.run_record = str(run_level(config, "run_record")[0])  # "off": no record, no cassette_report calls
        # Every secret of the host's environment, removed by exact match from test reports and cassettes.
        self.secrets = secret_values(os.environ, env_names(run_level(config, "secret_env")[0]))

    # -- pools ----------------------------------------------------------------------------
    @property
    def pools(self) -> BridgePools:
        if self._pools is None:
            self._pools = BridgePools(
                self.workers,
                self.strategy,
                self.pool_env,
                worker_id_prefix=self.xdist.worker_id_prefix,
                secret_env=run_level(self.config, "secret_env")[0],
                allowed_hosts=parse_hosts(run_level(self.config, "allowed_hosts")[0]),
                run_dir=Path(self.xdist.run_dir) if self.xdist.run_dir else None,
                allowed_modules=run_level(self.config, "allowed_modules")[0],
                request_timeout=self.record_request_timeout(),
            )
        return self._pools

    def record_request_timeout(self) -> float | None:
        """A run in which some test records gives real workers ``record_request_timeout`` per request."""
        if any(plan.records for plan in self.plans.values()):
            return float(run_level(self.config, "record_request_timeout")[0])
        return None

    def warm_real_pool(self) -> None:
        self.pools.warm("integration")
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"dspy-bridge: warming {self.workers} real DSPy workers in the background "
                f"(strategy {self.strategy}) while other tests run"
            )

    def pool_for(self, plan: TestPlan) -> SyncPool:
        kind = plan.pool_kind
        if self.pools.is_warming(kind):
            reporter = self.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(f"dspy-bridge: waiting for the {kind} pool to finish warming…")
        return self.pools.get(kind)

    # -- real workers reach the LM through the proxy -----------------------------------------
    def route(self) -> LMRoute:
        if self._route is None:
            from dspy_bridge._pytest._lm_route import LMRoute

            self._route = LMRoute(
                self.upstream,
                self.api_key(),
                run_level(self.config, "secret_env")[0],
                self.secrets,
                upstream_timeout=float(run_level(self.config, "upstream_timeout")[0]),
            )
            self.pools.allow_hosts([self._route.allowed_host])  # the connect guard lets workers reach the proxy
        return self._route

    @staticmethod
    def api_key() -> str | None:
        return api_key_from_env(os.environ)

    def check_preconditions(self, plan: TestPlan) -> None:
        """A real-worker test that would need the network without a key or cassette fails before it starts,
        with the command that fixes it (and nothing of the plugin's own frames in the report)."""
        __tracebackhide__ = True
        if plan.live or not plan.real or plan.kind == "scripted":
            return
        spent = (
            budget_problem(self.record_budget, self.counts["spend"], "--bridge-record-budget") if plan.records else None
        )
        if spent:
            raise BridgeError(
                f"{plan.nodeid} was not recorded: {spent}. What was recorded is kept; record the rest in another "
                f"run (once records only what is missing): {plan.record_command('once')}"
            )
        if plan.records and self.upstream == "gemini" and self.api_key() is None:
            raise CassetteMiss(
                f"{plan.nodeid} would record against real Gemini, but no key is set. Export {key_env_hint()} "
                f"and run: {plan.record_command(plan.record)} — or record against the "
                "bundled fake with --bridge-upstream=fake"
            )
        # A mock test moved onto real workers (drift check) may never have called an LM: no HTTP cassette
        # is then fine, and any LM call it does make fails in the proxy with vcrpy's explanation.
        if not plan.records and plan.marked == "integration" and not plan.http_cassette.exists():
            raise CassetteMiss(
                f"{plan.nodeid} runs on real workers offline, but its HTTP cassette {plan.http_cassette} does "
                f"not exist, so its LM calls would need the network. Record it once with a key: "
                f"GEMINI_API_KEY=… {plan.record_command('once')}"
            )

    # -- one test -------------------------------------------------------------------------
    @contextlib.contextmanager
    def bridge_for(
        self,
        plan: TestPlan,
        pool: SyncPool,
        item: pytest.Item | None = None,
        http_config: dict[str, Any] | None = None,
    ) -> Iterator[Bridge]:
        from dspy_bridge._client import Bridge

        records = plan.records  # now: once the cassettes are saved, `once` no longer records
        recorder = None
        lm_defaults = dict(self.lm_defaults)
        context: dict[str, Any] = {"test_id": plan.nodeid}
        route = None
        drift = None
        pinned: dict[str, Any] = {}
        if plan.real and plan.marked == "mock" and not plan.records:
            from dspy_bridge._pytest._drift import DriftCheck

            drift = DriftCheck(plan.nodeid, plan.bridge_cassette)
        if plan.live:
            context["live"] = True  # its own endpoint, on purpose: no proxy, no cassette, no connect guard
        elif plan.kind == "scripted":
            pass  # real workers, no LM: no proxy, no cassette; the script answers (an empty one until given)
        elif plan.real:
            route = self.route()
            pinned = route.activate(plan, http_config)
            lm_defaults.update(pinned)
            pinned.pop("cache", None)  # a test may turn DSPy's cache on; it may not leave the proxy
            if plan.records:
                candidate = self._recorder(plan)
                recorder = candidate if candidate.recording else None  # e.g. once: only the HTTP level is new
        else:
            context = plan.mock_context()
        client = Bridge(
            pool,
            context=context,
            recorder=recorder,
            lm_defaults=lm_defaults,
            mode=plan.kind,
            host_stubs=plan.real,
            observer=drift.observe if drift is not None else None,
            pinned_lm=pinned,
            pinned_reason=_pinned_reason(plan),
        )
        if item is not None:
            item.stash[BRIDGE_CLIENT] = client  # the prompt lock check reads what it created
        if plan.kind == "scripted":
            client.script({})  # strict and empty: an LM call before the test's bridge.script(...) fails clearly
        try:
            yield client
        finally:
            keep = self.run_record.lower() not in ("off", "none", "")
            played = _played(plan, pool, client) if keep and not plan.real else None
            with contextlib.suppress(Exception):  # the session may already be gone with its worker
                client.close()
            call_failed = item is not None and item.stash.get(CALL_FAILED, False)
            unfinished = item is not None and CALL_FAILED not in item.stash  # Ctrl-C, or a later fixture failed
            discard = plan.records and (call_failed or unfinished) and self.record_failed == "discard"
            report = route.deactivate(save=not discard) if route is not None else None
            self.report.usage.note_test(plan, played, report)
            unsaved = self._recording_policy(plan, report, call_failed)
            if recorder is not None and unsaved:  # the more specific reason (e.g. an unreachable upstream)
                self.report.notes.append({"nodeid": plan.nodeid, "kind": "not recorded", "message": unsaved})
            elif discard:
                self._note_discarded(plan, report, recorder, "failed" if call_failed else "did not finish")
            elif recorder is not None:
                self.counts[plan.kind]["recorded"] += recorder.pending
                recorder.save()
            if drift is not None:
                self.report.drifts.extend(item.as_dict() for item in drift.drifts)
                self.report.drift_compared += drift.compared
            counts = self.counts[plan.kind]
            counts["tests"] += 1
            counts["live"] += plan.live
            counts["requests"] += client.requests
            counts.update(client.outcomes)
            count_spend(self.counts["spend"], records=records, live=plan.live, client=client)
            if report is not None:
                counts["http_hits"] += report.replayed
                counts["http_recorded"] += report.forwarded if report.saved else 0
            if report is not None and report.unreachable:
                message = (
                    f"{plan.nodeid}: {report.not_recorded[0]}. {unsaved} Check the upstream "
                    f"(--bridge-upstream, the network, a proxy) and record again: {plan.record_command(plan.record)}"
                )
                _report_once(item, call_failed, BridgeError(message))
            if report is not None and report.misses:
                counts["http_misses"] += report.misses
                message = (
                    f"{plan.nodeid}: {report.misses} LM call(s) had no recording in {plan.http_cassette} "
                    f"(even if the program handled the error). vcrpy said: {report.miss_messages[0]} — "
                    f"re-record with: {plan.record_command('new_episodes')}"
                )
                _report_once(item, call_failed, CassetteMiss(message))

    def _recording_policy(self, plan: TestPlan, report: Any, call_failed: bool) -> str:
        """Note what the proxy left out (and near matches) for the summary; say why the bridge cassette is
        not saved either, or return "" when it may be."""
        if report is None:
            return ""
        for message in report.near_matches:
            self.report.notes.append({"nodeid": plan.nodeid, "kind": "near match", "message": message})
        for message in report.rate_limits:
            self.report.notes.append({"nodeid": plan.nodeid, "kind": "rate limited", "message": message})
        if report.quota_spent:  # the summary names the quota once, with the tests it stopped
            self.report.notes.append({"nodeid": plan.nodeid, "kind": "quota spent", "message": report.quota_spent})
        errors = [m for m in report.not_recorded if not m.startswith("upstream unreachable")]
        for message in errors:
            self.report.notes.append({"nodeid": plan.nodeid, "kind": "not recorded", "message": message})
        if report.unreachable:
            return (
                f"Nothing was recorded: neither {plan.http_cassette.name} nor {plan.bridge_cassette.name} was written."
            )
        if errors and call_failed:
            return (
                f"{plan.bridge_cassette.name} was not written: the test failed after the upstream answered with an "
                "error, which is recorded only with @pytest.mark.integration(record_errors=True)."
            )
        return ""

    def _note_discarded(self, plan: TestPlan, report: Any, recorder: Any, why: str) -> None:
        """A recording test failed or was interrupted: nothing new of it is written
        (``--bridge-record-failed=discard``); say so."""
        new = []
        if report is not None and report.forwarded:
            new.append(f"{report.forwarded} LM call(s) for {plan.http_cassette.name}")
        if recorder is not None and recorder.pending:
            new.append(f"{recorder.pending} answer(s) for {plan.bridge_cassette.name}")
        what = f"its new recordings ({', '.join(new)}) were discarded" if new else "its cassettes were not written"
        self.report.notes.append(
            {
                "nodeid": plan.nodeid,
                "kind": "not recorded",
                "message": f"the test {why}, so {what}; cassettes saved before are untouched. To keep a failed "
                f"test's recordings: {plan.record_command(plan.record)} --bridge-record-failed=keep",
            }
        )

    def _recorder(self, plan: TestPlan) -> Any:
        from dspy_bridge.cassettes import Recorder

        recorded_against = {"fake": "fake-gemini", "gemini": "gemini"}.get(self.upstream, self.upstream)
        return Recorder(
            plan.bridge_cassette,
            plan.record,
            meta={"recorded_against": recorded_against},
            run_id=self.xdist.run_id,
            secrets=self.secrets,
        )

    def redact_report(self, report: pytest.TestReport) -> None:
        """A failing test's report (traceback, locals, captured output) loses every secret of the host.

        A test may well hold the key in a local or an input; the terminal, ``-l`` and CI logs must not show it.
        """
        if not self.secrets:
            return
        if report.longrepr is not None:
            text = str(report.longrepr)
            if any(secret in text for secret in self.secrets):
                report.longrepr = redact_values(text, self.secrets)
        report.sections = [(title, redact_values(body, self.secrets)) for title, body in report.sections]

    @staticmethod
    def missing_reason(exc: BaseException) -> str | None:
        if isinstance(exc, CassetteMiss):
            return exc.message
        if isinstance(exc, HandlerError) and exc.type == "cassette_miss":
            return exc.message
        return None

    def check_prompts(self, item: pytest.Item) -> None:
        """``--bridge-prompts``: render the programs this test created on a real worker; check or update its lock."""
        __tracebackhide__ = True
        client = item.stash.get(BRIDGE_CLIENT, None)
        plan = self.plans.get(item.nodeid)
        if self.prompts_mode == "off" or client is None or plan is None:
            return
        from dspy_bridge._pytest._prompts import after_test

        pool = self.pools.get("integration")
        after_test(self.prompts_mode, plan.nodeid, plan.bridge_cassette, client.created, pool, self.counts["prompts"])

    # -- end of run -------------------------------------------------------------------------
    def close(self) -> None:
        if self._pools is not None:
            self._pools.close_all()
        if self._route is not None:
            self._route.close()

    # -- xdist controller: run-wide resources ----------------------------------------------------
    def run_dir(self) -> Path:
        """The controller's private directory (0700) for resources every xdist process shares."""
        if self._run_dir is None:
            import tempfile

            self._run_dir = Path(tempfile.mkdtemp(prefix="dspy-bridge-run-"))
        return self._run_dir

    def close_run_dir(self) -> None:
        """Stop the run-wide zygote (if a worker started one) and remove the directory."""
        if self._run_dir is None:
            return
        import shutil

        from dspy_bridge.protocol._rendezvous import socket_path

        if socket_path(self._run_dir).exists():
            from dspy_bridge.pool._daemon import daemon_stop

            daemon_stop(self._run_dir)
        shutil.rmtree(self._run_dir, ignore_errors=True)
        self._run_dir = None

    def finish(self) -> None:
        """Close pools and the route, and put what they did into the report (once)."""
        self.close()
        if self._pools is not None and self._pools.records:
            self.report.add_pools(list(self._pools.records.values()))
            self._pools.records.clear()

    def write_summary(self, reporter: Any) -> None:
        self.finish()
        self.report.write(reporter)

    # -- the run record and stale cassettes (controller, or a run without xdist) ----------------------
    def finish_run(self, exitstatus: int) -> None:
        """Flag stale cassettes among those the run used, and write the run record ``cassettes unused`` reads."""
        self.report.stale_mode = str(run_level(self.config, "stale")[0])
        self.report.stale = self._stale_cassettes()
        written = self.report.usage.write(self.config, exitstatus, self.run_record)
        self.report.record_path = _shown(written, self.config.rootpath) if written is not None else None

    def _stale_cassettes(self) -> list[dict[str, Any]]:
        from dspy_bridge.cassettes import _inventory as inventory

        days = run_level(self.config, "stale_days")[0]
        model = run_level(self.config, "stale_model")[0]
        found = []
        for path, used in sorted(self.report.usage.cassettes.items()):
            entry = inventory.header_entry(Path(path)) if used["level"] == "bridge" else None
            if entry is None and (used["level"] == "bridge" or days is not None or model):
                entry = inventory.read_entry(Path(path))  # HTTP cassettes carry no versions: age and models
            reasons = inventory.stale_reasons(entry, stale_days=days, model=model) if entry else []
            if reasons:
                found.append({"path": _shown(Path(path), self.config.rootpath), "reasons": reasons})
        return found

    @property
    def stale_failed(self) -> bool:
        """``--bridge-stale=fail`` and some cassette the run used is stale."""
        return self.report.stale_mode == "fail" and bool(self.report.stale)

    @property
    def drift_failed(self) -> bool:
        """``--bridge-drift=fail`` and a regression (``strict``: any difference) between recorded and real answers."""
        from dspy_bridge._pytest._drift import drift_fails_run

        return drift_fails_run(self.drift_mode, self.report.drifts)


def _shown(path: Path, rootdir: Path) -> str:
    """A path relative to the rootdir when it is inside it (shorter summary lines)."""
    try:
        return str(path.relative_to(rootdir))
    except ValueError:
        return str(path)


def _played(plan: TestPlan, pool: SyncPool, client: Bridge) -> list[int] | None:
    """Which interactions of its bridge cassette a mock test played (asked of its worker before the session
    goes); ``None`` when that cannot be known (the worker is gone, the cassette is not there)."""
    if client.requests == 0:
        return []
    if not plan.bridge_cassette.exists():
        return None
    try:
        future = pool.submit(
            "cassette_report",
            {"path": str(plan.bridge_cassette)},
            session_id=client.session_id,
            context=client.context,
        )
        answer = future.result(timeout=30)
    except Exception:  # a crashed worker took the replay state with it: unknown, so nothing gets pruned
        return None
    return [int(index) for index in answer.get("played") or []] if isinstance(answer, dict) else None


def _report_once(item: pytest.Item | None, call_failed: bool, error: BridgeError) -> None:
    """A problem found at teardown: if the test already failed (most likely of it), one report, with the
    diagnosis beside it as a section; else the teardown fails with it."""
    if item is not None and call_failed:
        item.add_report_section("teardown", "dspy-bridge", error.message)
        return
    raise error


def _pinned_reason(plan: TestPlan) -> str:
    return (
        f"{plan.nodeid} is an integration test, so its LM calls go through the cassette proxy (offline replay, "
        "recording, keys kept out of workers and cassettes); the plugin sets api_base and api_key. Leave them out "
        "of configure_lm, or mark the test @pytest.mark.integration(live=True) to call your own endpoint on "
        "purpose (a live test is never replayed or recorded)."
    )


STATE_KEY = pytest.StashKey[BridgeState]()
CALL_FAILED = pytest.StashKey[bool]()  # set by the plugin's makereport hook for the call phase
BRIDGE_CLIENT = pytest.StashKey["Bridge"]()  # this test's client, for checks after its call phase
