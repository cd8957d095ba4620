"""Keys never reach a worker: checked from the outside, the way an attacker on the machine would look.

The host's environment holds a Gemini key, another provider's key and a user-named secret (each a fresh
random value). Every other process we start is then read through ``/proc/<pid>/environ`` (the environment
block the kernel handed it at exec, which a forked child inherits from its zygote), ``/proc/<pid>/cmdline``
and, for workers, the variable *names* ``get_stats`` reports from the worker's own ``os.environ``. None of
them may hold a key or a secret's value — except the proxy's memory, which gets the key over stdin (and the
host's). Nothing here asks our own code whether it removed a key.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dspy_bridge._exceptions import HandlerError
from dspy_bridge.pool import PoolConfig, SyncPool
from dspy_bridge.pool._daemon import connect_daemon, daemon_start, daemon_stop
from dspy_bridge.pool._spawn import worker_environment
from dspy_bridge.pool._zygote import ZygoteLauncher
from dspy_bridge.protocol._rendezvous import RUNTIME_DIR_ENV
from dspy_bridge.proxy import ProxyProcess
from dspy_bridge.testing import FakeGemini
from test_zygote import PROBE, Conn

pytest_plugins = ["pytester"]

CUSTOM = "DSPYB_TEST_DEPLOY_SECRET"  # no key-like name: only secret_env makes it a secret
NAMES = ("GEMINI_API_KEY", "ANTHROPIC_API_KEY", CUSTOM)


@pytest.fixture
def host_keys(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The host's environment holds a key of each kind, every value fresh and random."""
    values = {name: f"leak-{name.lower()}-{secrets.token_hex(16)}" for name in NAMES}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DSPY_BRIDGE_DAEMON", "never")  # our own zygote, never a daemon someone left running
    return values


def assert_no_keys(pid: int, keys: dict[str, str], what: str) -> None:
    """Neither the environment block nor the command line of live process ``pid`` holds a key's value."""
    for view in ("environ", "cmdline"):
        data = Path(f"/proc/{pid}/{view}").read_bytes()
        assert data, f"{what} (pid {pid}) is gone or unreadable"
        for name, value in keys.items():
            assert value.encode() not in data, f"{what} (pid {pid}) holds {name} in /proc/{pid}/{view}"
    names = {entry.split(b"=", 1)[0] for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")}
    assert not names & {name.encode() for name in keys}, f"{what} (pid {pid}) has a key variable"


def assert_no_key_names(stats: dict[str, object], keys: dict[str, str], what: str) -> None:
    """The worker's own ``os.environ`` (names only, as ``get_stats`` reports them) holds no key variable."""
    names = stats["environ_names"]
    assert isinstance(names, list) and "PATH" in names, stats
    assert not set(keys) & set(names), f"{what}'s os.environ has {sorted(set(keys) & set(names))}"


def parent_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))


def test_mock_workers_and_the_proxy_never_hold_a_key(host_keys: dict[str, str]) -> None:
    with SyncPool(PoolConfig(mode="mock", size=1, secret_env=(CUSTOM,))) as pool:
        (pid,) = pool.worker_pids()
        assert_no_keys(pid, host_keys, "a spawned mock worker")
        assert_no_key_names(pool.request("get_stats"), host_keys, "a spawned mock worker")
    with ProxyProcess(secret_env=[CUSTOM]) as proxy:  # its key comes from our environment, over its stdin
        assert_no_keys(proxy.pid, host_keys, "the proxy")


def test_real_workers_their_zygote_and_its_children_never_hold_a_key(host_keys: dict[str, str]) -> None:
    config = PoolConfig(mode="real", size=1, secret_env=(CUSTOM,), start_timeout=120)
    with SyncPool(config.model_copy(update={"start_strategy": "zygote"})) as pool:
        (child,) = pool.worker_pids()
        zygote = parent_of(child)
        assert b"zygote" in Path(f"/proc/{zygote}/cmdline").read_bytes()  # really forked, not spawned
        assert_no_keys(zygote, host_keys, "the zygote")
        assert_no_keys(child, host_keys, "a forked real worker")
        assert_no_key_names(pool.request("get_stats"), host_keys, "a forked real worker")
    with SyncPool(config.model_copy(update={"start_strategy": "spawn"})) as pool, FakeGemini() as fake:
        (pid,) = pool.worker_pids()
        assert_no_keys(pid, host_keys, "a spawned real worker")
        assert_no_key_names(pool.request("get_stats"), host_keys, "a spawned real worker")
        # The key is in our environment, not the worker's: an LM configured without api_key says what to do.
        pool.configure_lm("gemini/gemini-2.5-flash", api_base=fake.base_url, cache=False, num_retries=0)
        program_id = pool.create_program("question -> answer")
        with pytest.raises(HandlerError) as failed:
            pool.execute(program_id, {"question": "q"})
        assert failed.value.type == "lm_auth"
        assert "api_key=" in str(failed.value) and "PoolConfig.env" in str(failed.value)
        assert fake.request_count == 0
        assert not any(value in str(failed.value) for value in host_keys.values())


# -- the daemon, and a zygote started by hand ------------------------------------------------------------


@pytest.fixture
def probe_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A short private runtime directory (socket paths are short) and the probe module on PYTHONPATH."""
    path = Path(tempfile.mkdtemp(prefix="dbk-"))
    (path / "probe").mkdir()
    (path / "probe" / "zygote_probe.py").write_text(PROBE)
    monkeypatch.setenv(RUNTIME_DIR_ENV, str(path / "rt"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(path / "probe"), *(p for p in sys.path if p)]))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def _check_a_forked_child(launcher: ZygoteLauncher, keys: dict[str, str], what: str) -> None:
    env = worker_environment(PoolConfig(mode="mock", secret_env=(CUSTOM,)))
    process = await launcher.launch("w-keys", "mock", "msgpack", env)
    conn = Conn(process)
    await conn.hello()
    assert parent_of(process.pid) == launcher.zygote_pid
    assert_no_keys(process.pid, keys, what)
    assert_no_key_names(await conn.call("get_stats"), keys, what)
    process.stdin.close()
    assert await conn.wait() == 0


async def test_the_daemon_and_its_children_never_hold_a_key(
    host_keys: dict[str, str], probe_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``dspy-bridge daemon start`` run in a shell that holds keys."""
    info = daemon_start(preload=["zygote_probe"], idle_timeout=300, secret_env=[CUSTOM])
    try:
        assert info.running and info.pid is not None, str(info)
        assert_no_keys(info.pid, host_keys, "the daemon")
        monkeypatch.setenv("DSPY_BRIDGE_DAEMON", "require")
        launcher, reason = await connect_daemon()
        assert launcher is not None, reason
        try:
            await _check_a_forked_child(launcher, host_keys, "a worker forked by the daemon")
        finally:
            await launcher.aclose()
    finally:
        daemon_stop()


async def test_a_zygote_started_by_hand_with_a_key_sheds_it_before_forking(
    host_keys: dict[str, str], probe_path: Path
) -> None:
    """Someone runs the zygote directly from a shell holding a key: it re-executes itself without it."""
    path = probe_path / "z.sock"
    read_end, write_end = os.pipe()
    argv = [sys.executable, "-m", "dspy_bridge.worker.zygote", "--listen", str(path), "--preload", "zygote_probe"]
    zygote = subprocess.Popen(
        [*argv, "--ready-fd", str(write_end), "--log-level", "ERROR"], pass_fds=(write_end,), env=dict(os.environ)
    )
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as ready:
            assert ready.readline().startswith(b"ready"), "the zygote never became ready"
        # Only the known key names are shed here: the user's own secret names are the host's business.
        known = {name: value for name, value in host_keys.items() if name != CUSTOM}
        assert_no_keys(zygote.pid, known, "a zygote started with a key")
        launcher = await ZygoteLauncher.connect(path)
        try:
            await _check_a_forked_child(launcher, known, "a worker forked by that zygote")
        finally:
            await launcher.aclose()
    finally:
        zygote.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            zygote.wait(60)
        if zygote.returncode is None:
            zygote.kill()
            zygote.wait()


# -- the pytest plugin ------------------------------------------------------------------------------------

PLUGIN_TEST = f"""
from pathlib import Path
import pytest

@pytest.mark.mock
def test_workers_hold_no_secret(bridge_pool):
    names = bridge_pool.request("get_stats")["environ_names"]
    assert "PATH" in names and not {{"GEMINI_API_KEY", "{CUSTOM}"}} & set(names)
    for pid in bridge_pool.worker_pids():
        block = Path(f"/proc/{{pid}}/environ").read_bytes()
        assert b"GEMINI_API_KEY" not in block and b"{CUSTOM}" not in block
"""


def test_the_plugin_reads_more_secret_names_from_its_ini_option(
    pytester: pytest.Pytester, host_keys: dict[str, str]
) -> None:
    pytester.makeini(f"[pytest]\nbridge_secret_env = OTHER_NAME, {CUSTOM}\n")
    pytester.makepyfile(PLUGIN_TEST)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


@pytest.mark.slow
def test_a_key_given_in_configure_lm_never_comes_back_in_an_error_reply() -> None:
    """The worker scrubs every reply with the keys it holds: here a user module's error quotes the key."""
    from dspy_bridge import Bridge, HandlerError
    from dspy_bridge.pool import PoolConfig, SyncPool
    from dspy_bridge.testing import FakeGemini

    key = "zz-" + secrets.token_hex(12)
    config = PoolConfig(size=1, mode="real", start_strategy="spawn", allowed_modules=("usermods",))
    with FakeGemini() as gemini, SyncPool(config) as pool:
        bridge = Bridge(pool)
        bridge.configure_lm("gemini/gemini-2.5-flash", api_base=gemini.base_url, api_key=key, cache=False)
        with pytest.raises(HandlerError) as refused:
            bridge.create_program(module="usermods.boom:Boom", kwargs={"token": key})
    text = str(refused.value) + repr(refused.value.error_details)
    assert "cannot use token" in text and key not in text
