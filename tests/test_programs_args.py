"""Programs as users write them, without an LM: identity, strict arguments, per-call options in the
cassette key, module programs on mock workers (which import neither DSPy nor user code), and the options
that carry ``allowed_modules`` to workers. The real-worker half is tests/test_programs_real.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from dspy_bridge import Result, UsageError
from dspy_bridge.cassettes import Matcher, make_request
from dspy_bridge.pool import PoolConfig, worker_environment
from dspy_bridge.protocol import _commands as commands
from dspy_bridge.protocol._constants import ALLOWED_MODULES_ENV
from dspy_bridge.protocol._programs import canonical_program, program_id_for, state_digest
from workerproc import WorkerProc

VECTORS = Path(__file__).parent / "vectors" / "program_ids.json"
NO_HEAVY_IMPORTS = (
    "import sys\nfor _name in ('dspy', 'litellm', 'pydantic', 'usermods'):\n    sys.modules[_name] = None"
)
STATE = {"generate.predict": {"demos": [{"question": "q", "answer": "a"}], "traces": [], "train": []}}


@pytest.fixture
def worker() -> Iterator[WorkerProc]:
    with WorkerProc("mock", prelude=NO_HEAVY_IMPORTS) as proc:
        yield proc


# --- identity ----------------------------------------------------------------------------------------


def test_ids_of_programs_without_the_new_keys_are_unchanged() -> None:
    vectors = json.loads(VECTORS.read_text())
    cases = vectors["cases"] if isinstance(vectors, dict) else vectors
    assert cases
    for case in cases:
        assert program_id_for(case["args"]) == case["program_id"], case


def test_demos_state_and_a_non_default_adapter_change_a_signature_programs_id() -> None:
    base = {"signature": "question -> answer"}
    ids = {
        program_id_for(base),
        program_id_for({**base, "demos": [{"question": "q", "answer": "a"}]}),
        program_id_for({**base, "state": STATE}),
        program_id_for({**base, "adapter": "json"}),
        program_id_for(
            {**base, "signature": {"inputs": [{"name": "question", "prefix": "Q:"}], "outputs": ["answer"]}}
        ),
    }
    assert len(ids) == 5
    assert program_id_for({**base, "adapter": "chat"}) == program_id_for(base)  # the default is no change
    assert program_id_for({**base, "demos": []}) == program_id_for(base)


def test_a_module_programs_identity_is_module_kwargs_state_digest_and_adapter() -> None:
    args = {"module": "myapp.rag:RAG", "kwargs": {"k": 3}, "state": STATE, "adapter": "json"}
    assert canonical_program(args) == {
        "module": "myapp.rag:RAG",
        "kwargs": {"k": 3},
        "state_digest": state_digest(STATE),
        "adapter": "json",
    }
    changed = json.loads(json.dumps(STATE))
    changed["generate.predict"]["demos"][0]["answer"] = "b"
    assert program_id_for({**args, "state": changed}) != program_id_for(args)
    assert program_id_for({**args, "kwargs": {"k": 4}}) != program_id_for(args)
    assert program_id_for(dict(reversed(list(args.items())))) == program_id_for(args)
    recorded = make_request("create_program", args)
    assert "state" not in recorded["args"] and recorded["args"]["state_digest"] == state_digest(STATE)


# --- strict arguments: host builders ------------------------------------------------------------------


def test_builders_refuse_what_no_worker_would_accept(tmp_path: Path) -> None:
    with pytest.raises(commands.CommandError, match="n is a per-call option"):
        commands.configure_lm_args("gemini/gemini-2.5-flash", n=3)
    with pytest.raises(commands.CommandError, match=r"unknown argument.*'top_k'.*known: model"):
        commands.configure_lm_args("gemini/gemini-2.5-flash", top_k=3)
    with pytest.raises(commands.CommandError, match="exactly one of a signature or a module"):
        commands.create_program_args("q -> a", module="m:C")
    with pytest.raises(commands.CommandError, match="exactly one"):
        commands.create_program_args()
    with pytest.raises(commands.CommandError, match=r"package\.module:Attribute"):
        commands.create_program_args(module="myapp.RAG")
    with pytest.raises(commands.CommandError, match=r"unknown argument.*'top_p'"):
        commands.execute_args("prog_x", {}, config={"top_p": 0.5})
    with pytest.raises(commands.CommandError, match="adapter must be one of chat, json"):
        commands.execute_args("prog_x", {}, adapter="xml")
    with pytest.raises(commands.CommandError, match="cannot read saved state"):
        commands.create_program_args(module="m:C", state=tmp_path / "missing.json")
    saved = tmp_path / "state.json"
    saved.write_text(json.dumps(STATE))
    assert commands.create_program_args(module="m:C", state=saved)["state"] == STATE
    assert commands.create_program_args(module="m:C", state=str(saved))["state"] == STATE


def test_the_pool_and_bridge_turn_builder_errors_into_usage_errors() -> None:
    from dspy_bridge import Bridge
    from dspy_bridge.pool import SyncPool

    with SyncPool(PoolConfig(size=1, mode="mock")) as pool:
        bridge = Bridge(pool)
        with pytest.raises(UsageError, match="per-call"):
            bridge.configure_lm("gemini/gemini-2.5-flash", n=2)
        with pytest.raises(UsageError, match="unknown"):
            bridge.create_program("q -> a", prefix="Q:")
        with pytest.raises(UsageError, match="unknown"):
            pool.create_program("q -> a", tools=["search"])
        with pytest.raises(UsageError, match="config"):
            bridge.execute("prog_x", config={"stop": ["x"]}, q="1")


# --- strict arguments: the worker ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "args", "named"),
    [
        ("create_program", {"signature": "q -> a", "tools": ["search"]}, "'tools'"),
        ("create_program", {"signature": "q -> a", "config": {"n": 2}}, "'config'"),
        ("configure_lm", {"model": "gemini/gemini-2.5-flash", "n": 3}, "config={'n': 3}"),
        ("configure_lm", {"model": "gemini/gemini-2.5-flash", "top_k": 3}, "'top_k'"),
        ("create_program", {"signature": "q -> a", "module": "m:C"}, "exactly one"),
        ("create_program", {"module": "m:C", "demos": []}, "signature programs"),
        ("create_program", {"module": "m:C", "state": "/host/path.json"}, "workers never"),
        ("create_program", {"signature": "q -> a", "adapter": "xml"}, "adapter"),
    ],
)
def test_the_worker_refuses_unknown_or_misplaced_arguments(
    worker: WorkerProc, command: str, args: dict[str, object], named: str
) -> None:
    error = worker.error(command, args)
    assert error["type"] == "invalid_request"
    assert named in error["message"]


def test_execute_refuses_unknown_keys_and_bad_config(worker: WorkerProc) -> None:
    worker.call("configure_lm", {"model": "gemini/gemini-2.5-flash"})
    program = worker.call("create_program", {"signature": "q -> a"})["program_id"]
    for args, named in (
        ({"inputs": {"q": "1"}, "demos": []}, "'demos'"),
        ({"inputs": {"q": "1"}, "config": {"stop": "x"}}, "'stop'"),
        ({"inputs": {"q": "1"}, "config": {"n": "3"}}, "'n'"),
        ({"inputs": {"q": "1"}, "trace": "yes"}, "trace"),
    ):
        error = worker.error("execute_program", {"program_id": program, **args})
        assert error["type"] == "invalid_request" and named in error["message"], error


# --- module programs on a mock worker -----------------------------------------------------------------


def test_a_mock_worker_creates_module_programs_without_importing_them(worker: WorkerProc) -> None:
    args = {"module": "usermods.rag:RAG", "kwargs": {"k": 1}, "state": STATE}
    created = worker.call("create_program", args)
    assert created["program_id"] == program_id_for(args)
    assert created["kind"] == "module" and created["inputs"] is None and created["predictors"] == []
    worker.call("configure_lm", {"model": "gemini/gemini-2.5-flash"})
    worker.call("stub_program", {"program_id": created["program_id"], "outputs": {"answer": "Paris"}})
    result = worker.call("execute_program", {"program_id": created["program_id"], "inputs": {"anything": "goes"}})
    assert result["outputs"] == {"answer": "Paris"} and result["source"] == "stub"
    info = worker.call("get_program_info", {"program_id": created["program_id"]})
    assert info["kind"] == "module" and info["definition"]["state_digest"] == state_digest(STATE)
    listed = worker.call("list_programs")
    assert listed["details"] == [{"program_id": created["program_id"], "kind": "module", "module": "usermods.rag:RAG"}]


def test_a_signature_program_reports_its_predictor_with_prefixes_and_demo_count(worker: WorkerProc) -> None:
    signature = {"inputs": [{"name": "question", "prefix": "Q:"}], "outputs": [{"name": "answer", "type": "int"}]}
    created = worker.call("create_program", {"signature": signature, "demos": [{"question": "1+1", "answer": 2}]})
    assert created["kind"] == "signature" and created["inputs"] == ["question"]
    [predictor] = created["predictors"]
    assert predictor["demos"] == 1
    assert predictor["signature"]["inputs"][0] == {"name": "question", "type": "str", "description": "", "prefix": "Q:"}


# --- per-call options are part of the cassette key ----------------------------------------------------


def test_config_and_adapter_are_matched_by_default() -> None:
    matcher = Matcher()
    base = make_request("execute_program", {"program_id": "p", "inputs": {"q": "1"}}, program={"signature": "q -> a"})
    n3 = make_request(
        "execute_program",
        {"program_id": "p", "inputs": {"q": "1"}, "config": {"n": 3}},
        program={"signature": "q -> a"},
    )
    as_json = make_request(
        "execute_program", {"program_id": "p", "inputs": {"q": "1"}, "adapter": "json"}, program={"signature": "q -> a"}
    )
    assert len({matcher.key(base), matcher.key(n3), matcher.key(as_json)}) == 3
    assert [d.field for d in matcher.diff(n3, base) if not d.same] == ["args.config"]
    assert "args.config" not in [d.field for d in matcher.diff(base, base)]  # absent on both sides: not shown


# --- allowed modules travel to every worker -----------------------------------------------------------


def test_allowed_modules_reach_the_worker_environment_and_only_from_the_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ALLOWED_MODULES_ENV, "everything")
    assert worker_environment(PoolConfig(allowed_modules=("myapp", "lib.agents")))[ALLOWED_MODULES_ENV] == (
        "myapp,lib.agents"
    )
    assert worker_environment(PoolConfig())[ALLOWED_MODULES_ENV] == ""  # the host's variable never leaks in
    with pytest.raises(ValueError, match="not module paths"):
        PoolConfig(allowed_modules=("my app",))


def test_the_plugin_has_a_bridge_allowed_modules_ini_option() -> None:
    from dspy_bridge._pytest._pools import BridgePools
    from dspy_bridge._pytest._settings import SETTINGS

    assert SETTINGS["allowed_modules"].ini == "bridge_allowed_modules"
    pools = BridgePools(1, "spawn", allowed_modules="usermods, myapp")
    assert pools._config("integration").allowed_modules == ("usermods", "myapp")


def test_allowed_prefixes_match_whole_package_names() -> None:
    from dspy_bridge.worker._modules import allowed_prefixes, is_allowed

    prefixes = allowed_prefixes({ALLOWED_MODULES_ENV: "myapp, lib.agents."})
    assert prefixes == ("myapp", "lib.agents")
    assert is_allowed("myapp", prefixes) and is_allowed("myapp.rag", prefixes) and is_allowed("lib.agents.x", prefixes)
    assert not is_allowed("myapp_evil", prefixes) and not is_allowed("lib", prefixes)


def test_a_result_reads_a_full_answer_and_an_old_recording() -> None:
    full = Result.from_response(
        {
            "outputs": {"answer": "a"},
            "completions": [{"answer": "a"}, {"answer": "b"}],
            "usage": {"gemini/x": {"total_tokens": 3}},
            "cost": None,
            "lm_calls": 1,
            "tool_calls": [{"tool": "search", "args": {}, "observation": "o"}],
            "source": "cassette",
        }
    )
    assert full["answer"] == "a" and len(full.completions) == 2 and full.lm_calls == 1 and full.trace is None
    old = Result.from_response({"outputs": {"answer": "a"}, "usage": {}})
    assert old.tool_calls == [] and old.completions == [] and old.source == "lm"
