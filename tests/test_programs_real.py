"""What DSPy users actually write, run on real workers against the fake Gemini, then replayed by mock workers.

User modules come from ``tests/usermods`` (importable through the pool's sys.path), allowed by prefix. Each
scenario records its exchanges with a host-side ``Recorder`` around a ``Bridge`` on real workers, then a mock
pool replays the cassette and must give the same values. Slow: one real pool (two workers) for the module.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from dspy_bridge import Bridge, CassetteMiss, HandlerError, Result
from dspy_bridge.cassettes import Recorder
from dspy_bridge.pool import PoolConfig, SyncPool
from dspy_bridge.testing import FakeGemini, Reply

pytestmark = pytest.mark.slow

KEY = "programs-test-" + secrets.token_hex(8)
MODEL = "gemini/gemini-2.5-flash"


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    with FakeGemini(expected_key=KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def real_pool() -> Iterator[SyncPool]:
    config = PoolConfig(
        size=2, mode="real", start_strategy="spawn", allowed_modules=("usermods",), start_timeout=120, retries=0
    )
    with SyncPool(config) as pool:
        yield pool


@pytest.fixture(scope="module")
def mock_pool() -> Iterator[SyncPool]:
    with SyncPool(PoolConfig(size=1, mode="mock", retries=0)) as pool:
        yield pool


def _real(pool: SyncPool, gemini: FakeGemini, recorder: Recorder | None = None) -> Bridge:
    bridge = Bridge(pool, recorder=recorder, mode="real")
    bridge.configure_lm(MODEL, api_key=KEY, api_base=gemini.base_url, cache=False, num_retries=0)
    return bridge


def _replayer(pool: SyncPool, path: Path) -> Bridge:
    bridge = Bridge(pool, context={"test_id": "programs", "cassette": {"path": str(path)}})
    bridge.configure_lm(MODEL)
    return bridge


def _last_prompt(gemini: FakeGemini) -> str:
    return json.dumps(gemini.requests[-1].body, ensure_ascii=False)


@pytest.fixture
def saved_state(tmp_path: Path) -> Path:
    """A RAG state as ``module.save(path)`` writes it, with one demo (what an optimizer leaves behind)."""
    import dspy

    from usermods.rag import RAG

    module = RAG()
    module.generate.predict.demos = [
        dspy.Example(context=["Oslo is in Norway."], question="Oslo?", reasoning="It says so.", answer="Norway")
    ]
    path = tmp_path / "rag.json"
    module.save(str(path))
    return path


def test_a_rag_module_with_a_local_retriever_runs_then_replays(
    real_pool: SyncPool, mock_pool: SyncPool, gemini: FakeGemini, tmp_path: Path
) -> None:
    path = tmp_path / "rag.yaml"
    with Recorder(path, "once") as recorder:
        bridge = _real(real_pool, gemini, recorder)
        info = bridge.request("create_program", {"module": "usermods.rag:RAG", "kwargs": {"k": 1}})
        assert info["kind"] == "module" and info["inputs"] is None and info["outputs"] is None
        [predictor] = info["predictors"]
        assert predictor["name"] == "generate.predict" and predictor["demos"] == 0
        assert [f["name"] for f in predictor["signature"]["inputs"]] == ["context", "question"]
        assert predictor["signature"]["inputs"][1]["prefix"] == "Question:"
        program = info["program_id"]
        full = bridge.execute(program, full=True, question="What is the capital of France?")
        assert isinstance(full, Result) and full.source == "lm"
        assert set(full.outputs) == {"reasoning", "answer"} and full.outputs["answer"]
        assert full.lm_calls == 1 and full.usage[MODEL]["total_tokens"] > 0
        assert "Paris is the capital of France." in _last_prompt(gemini)
        listed = bridge.request("list_programs")
        assert {"program_id": program, "kind": "module", "module": "usermods.rag:RAG"} in listed["details"]
    text = path.read_text()
    assert "usermods.rag:RAG" in text

    replay = _replayer(mock_pool, path)
    again = replay.create_program(module="usermods.rag:RAG", kwargs={"k": 1})
    assert again == program  # the mock computes the same id without importing anything
    replayed = replay.execute(again, full=True, question="What is the capital of France?")
    assert replayed.outputs == full.outputs and replayed.usage == full.usage and replayed.source == "cassette"


def test_saved_state_reaches_the_module_changes_the_id_and_a_stale_replay_names_state_digest(
    real_pool: SyncPool, mock_pool: SyncPool, gemini: FakeGemini, tmp_path: Path, saved_state: Path
) -> None:
    path = tmp_path / "state.yaml"
    with Recorder(path, "once") as recorder:
        bridge = _real(real_pool, gemini, recorder)
        plain_id = bridge.create_program(module="usermods.rag:RAG")
        program = bridge.create_program(module="usermods.rag:RAG", state=saved_state)  # a host path, read here
        assert program != plain_id
        info = bridge.request("get_program_info", {"program_id": program})
        assert info["predictors"][0]["demos"] == 1
        assert len(info["definition"]["state_digest"]) == 16 and "state" not in info["definition"]
        answer = bridge.execute(program, question="Capital of Italy?")
        assert "Oslo is in Norway." in _last_prompt(gemini)  # the demo reached the prompt
    assert "Oslo is in Norway" not in path.read_text()  # the cassette holds the digest, never the state

    replay = _replayer(mock_pool, path)
    assert replay.create_program(module="usermods.rag:RAG", state=json.loads(saved_state.read_text())) == program
    assert replay.execute(program, question="Capital of Italy?") == answer

    reoptimised = json.loads(saved_state.read_text())
    reoptimised["generate.predict"]["demos"][0]["answer"] = "Norway!"
    stale = _replayer(mock_pool, path)
    new_id = stale.create_program(module="usermods.rag:RAG", state=reoptimised)
    assert new_id != program
    with pytest.raises(CassetteMiss) as caught:  # what a Bridge (a test) sees of a replay miss
        stale.execute(new_id, question="Capital of Italy?")
    assert "DIFF  program.state_digest" in str(caught.value)
    assert "--bridge-record=rewrite" in str(caught.value)  # the program changed: its old recordings are dead weight
    differing = [d["field"] for d in caught.value.details["closest"]["diff"] if not d["same"]]
    assert differing == ["program.state_digest"]


def test_a_react_agent_calls_its_tools_and_the_trajectory_replays(
    real_pool: SyncPool, mock_pool: SyncPool, gemini: FakeGemini, tmp_path: Path
) -> None:
    gemini.enqueue(
        Reply({"next_thought": "look it up", "next_tool_name": "search", "next_tool_args": {"query": "Paris"}}),
        Reply({"next_thought": "how many", "next_tool_name": "population", "next_tool_args": {"city": "Paris"}}),
        Reply({"next_thought": "done", "next_tool_name": "finish", "next_tool_args": {}}),
    )
    path = tmp_path / "agent.yaml"
    with Recorder(path, "once") as recorder:
        bridge = _real(real_pool, gemini, recorder)
        program = bridge.create_program(module="usermods.agent:Agent", kwargs={"max_iters": 4})
        full = bridge.execute(program, full=True, question="How big is Paris?")
    assert [(c["tool"], c["args"], c["observation"]) for c in full.tool_calls[:2]] == [
        ("search", {"query": "Paris"}, "encyclopedia: Paris is a city"),
        ("population", {"city": "Paris"}, 2100),
    ]
    assert full.tool_calls[2]["tool"] == "finish"
    assert full.outputs["trajectory"]["tool_name_1"] == "population" and full.outputs["answer"]
    assert full.lm_calls == 4  # three ReAct steps and the extraction

    replay = _replayer(mock_pool, path)
    assert replay.create_program(module="usermods.agent:Agent", kwargs={"max_iters": 4}) == program
    replayed = replay.execute(program, full=True, question="How big is Paris?")
    assert replayed.outputs == full.outputs and replayed.tool_calls == full.tool_calls


def test_per_call_n_gives_completions_and_n3_never_answers_n1(
    real_pool: SyncPool, mock_pool: SyncPool, gemini: FakeGemini, tmp_path: Path
) -> None:
    path = tmp_path / "n.yaml"
    with Recorder(path, "once") as recorder:
        bridge = _real(real_pool, gemini, recorder)
        program = bridge.create_program("question -> answer")
        three = bridge.execute(program, full=True, config={"n": 3, "temperature": 1.0}, question="Pick a word")
        assert len(three.completions) == 3 and all("answer" in c for c in three.completions)
        traced = bridge.execute(program, full=True, trace=True, adapter="json", question="Pick a word")
        assert traced.trace is not None
        assert [step["predictor"] for step in traced.trace] == ["self"]
        assert traced.trace[0]["outputs"] == traced.outputs
        assert "completions" not in traced.raw

    replay = _replayer(mock_pool, path)
    replay.create_program("question -> answer")
    again = replay.execute(program, full=True, config={"n": 3, "temperature": 1.0}, question="Pick a word")
    assert (again.outputs, again.completions, again.usage) == (three.outputs, three.completions, three.usage)
    with pytest.raises(CassetteMiss) as caught:
        replay.execute(program, config={"n": 1, "temperature": 1.0}, question="Pick a word")
    assert "args.config" in str(caught.value)
    with pytest.raises(CassetteMiss):  # without the json adapter the traced recording does not answer either
        replay.execute(program, trace=True, question="Pick a word")


def test_demos_and_field_prefixes_reach_dspy(real_pool: SyncPool, gemini: FakeGemini) -> None:
    bridge = _real(real_pool, gemini)
    signature = {
        "inputs": [{"name": "question", "type": "str", "prefix": "Query Text:"}],
        "outputs": [{"name": "answer", "type": "str", "description": "short"}],
    }
    demos = [{"question": "Capital of Peru?", "answer": "Lima"}]
    info = bridge.request("create_program", {"signature": signature, "demos": demos})
    assert info["kind"] == "signature" and info["inputs"] == ["question"]
    assert info["predictors"][0]["demos"] == 1
    assert info["predictors"][0]["signature"]["inputs"][0]["prefix"] == "Query Text:"
    bridge.execute(info["program_id"], question="Capital of Chile?")
    prompt = _last_prompt(gemini)
    assert "Capital of Peru?" in prompt and "Lima" in prompt


def test_async_modules_run_with_acall_and_factories_are_accepted(real_pool: SyncPool, gemini: FakeGemini) -> None:
    bridge = _real(real_pool, gemini)
    program = bridge.create_program(module="usermods.rag:AsyncRAG")
    assert bridge.execute(program, question="Rome?")["ran"] == "aforward"
    factory = bridge.create_program(module="usermods.rag:make_rag")
    assert set(bridge.execute(factory, question="Rome?")) == {"reasoning", "answer"}


def test_a_module_outside_the_allowed_prefixes_is_refused_naming_the_option(
    real_pool: SyncPool, gemini: FakeGemini
) -> None:
    bridge = _real(real_pool, gemini)
    with pytest.raises(HandlerError) as caught:
        bridge.create_program(module="os.path:join")
    assert caught.value.type == "invalid_request"
    assert "allowed_modules" in str(caught.value) and "bridge_allowed_modules" in str(caught.value)
    with SyncPool(PoolConfig(size=1, mode="real", start_strategy="spawn", start_timeout=120)) as closed:
        nobody = _real(closed, gemini)
        with pytest.raises(HandlerError, match="allowed now: none"):
            nobody.create_program(module="usermods.rag:RAG")


def test_configure_lm_refuses_n_with_a_hint(real_pool: SyncPool, gemini: FakeGemini) -> None:
    bridge = _real(real_pool, gemini)
    with pytest.raises(HandlerError) as caught:
        bridge.request("configure_lm", {"model": MODEL, "n": 3})
    assert caught.value.type == "invalid_request" and "config={'n': 3}" in str(caught.value)


async def test_a_zygote_preloads_user_modules_and_its_forked_workers_may_run_them(gemini: FakeGemini) -> None:
    from dspy_bridge.pool import Pool
    from dspy_bridge.pool._zygote import ZygoteLauncher

    config = PoolConfig(
        size=1,
        mode="real",
        start_strategy="zygote",
        allowed_modules=("usermods",),
        preload_modules=("usermods.rag",),
        start_timeout=120,
    )
    launcher = ZygoteLauncher(config, daemon="never")
    async with Pool(config, launcher=launcher) as pool:
        assert "usermods.rag" in launcher.zygote_info["preloaded"] and launcher.source == "own"
        await pool.configure_lm(MODEL, api_key=KEY, api_base=gemini.base_url, cache=False, num_retries=0)
        program = await pool.create_program(module="usermods.rag:RAG")
        result = Result.from_response(await pool.execute(program, {"question": "Tokyo?"}))
        assert result.outputs["answer"] and result.lm_calls == 1
