"""Record the sample bridge cassette from real DSPy workers, then prove a mock pool replays it.

    python scripts/record_sample_cassette.py [cassettes/sample/qa.yaml]

Real Gemini is unreachable in CI, so the real workers talk to the bundled fake Gemini (the
cassette's ``meta.recorded_against`` says ``fake-gemini``). The flow is the one the pytest plugin
uses: a ``Recorder`` on the host sees every request/response of a real ``Pool``; afterwards a
``mock`` pool answers the same requests from the file, offline, and the outputs must be identical.
The script refuses to overwrite an existing cassette (``RecordMode.ONCE``): delete it to re-record.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import uuid
from pathlib import Path
from typing import Any

from dspy_bridge import HandlerError
from dspy_bridge.cassettes import Cassette, Recorder, RecordMode, error_response, verify
from dspy_bridge.cassettes._config import cassette_context
from dspy_bridge.pool import Pool, PoolConfig
from dspy_bridge.testing import Fail, FakeGemini

MODEL = "gemini/gemini-2.5-flash"
PROGRAMS: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"signature": "question -> answer"}, {"question": "What is the capital of France?"}),
    ({"signature": "question -> answer", "program_type": "chain_of_thought"}, {"question": "Why is the sky blue?"}),
    (
        {"signature": "review -> sentiment: Literal['positive', 'negative', 'neutral'], score: float, tags: list[str]"},
        {"review": "Fast shipping, but the box was damaged."},
    ),
    ({"signature": "a: int, b: int -> total: int, is_even: bool"}, {"a": 19, "b": 23}),
]


async def _exchange(pool: Pool, recorder: Recorder, session_id: str, command: str, args: dict[str, Any]) -> Any:
    request = {"command": command, "args": args, "session_id": session_id}
    try:
        result = await pool.request(command, args, session_id=session_id)
    except HandlerError as exc:
        recorder.record(request, error_response(exc))
        return exc
    recorder.record(request, {"ok": True, "result": result})
    return result


async def record(path: Path) -> list[Any]:
    key = "fake-" + secrets.token_hex(16)  # the fake checks it; the recorder must drop it
    session_id = f"rec-{uuid.uuid4().hex[:8]}"
    recorder = Recorder(path, RecordMode.ONCE, meta={"recorded_against": "fake-gemini"})
    if not recorder.recording:
        raise SystemExit(f"{path} exists; delete it to record it again")
    answers: list[Any] = []
    with FakeGemini(expected_key=key) as fake:
        # retries=0: the pool would otherwise retry the scripted 429 and record the retry's success.
        config = PoolConfig(size=1, mode="real", start_timeout=120, request_timeout=120, retries=0)
        async with Pool(config) as pool:
            lm = {"model": MODEL, "api_key": key, "api_base": fake.base_url, "cache": False, "num_retries": 0}
            await _exchange(pool, recorder, session_id, "configure_lm", lm)
            program_ids = []
            for definition, inputs in PROGRAMS:
                created = await _exchange(pool, recorder, session_id, "create_program", definition)
                program_ids.append(created["program_id"])
                args = {"program_id": created["program_id"], "inputs": inputs}
                answers.append(await _exchange(pool, recorder, session_id, "execute_program", args))
            fake.enqueue(Fail(429, retry_after=0))  # one recorded error path: rate limited
            args = {"program_id": program_ids[0], "inputs": {"question": "Are you busy?"}}
            answers.append(await _exchange(pool, recorder, session_id, "execute_program", args))
    recorder.save()
    verify(path)
    return answers


def _create_kwargs(definition: dict[str, Any]) -> dict[str, Any]:
    return {"signature": definition["signature"], "program_type": definition.get("program_type", "predict")}


async def replay(path: Path) -> list[Any]:
    session_id = f"replay-{uuid.uuid4().hex[:8]}"
    context = {"cassette": cassette_context(path)}
    answers: list[Any] = []
    # retries=0: a replayed retryable error would otherwise be retried and use up the next recording.
    async with Pool(PoolConfig(size=1, mode="mock", retries=0)) as pool:
        await pool.request("configure_lm", {"model": MODEL}, session_id=session_id)
        program_ids = [await pool.create_program(**_create_kwargs(d), session_id=session_id) for d, _ in PROGRAMS]
        for program_id, (_, inputs) in zip(program_ids, PROGRAMS, strict=True):
            answers.append(await pool.execute(program_id, inputs, session_id=session_id, context=context))
        try:
            busy = await pool.execute(
                program_ids[0], {"question": "Are you busy?"}, session_id=session_id, context=context
            )
        except HandlerError as exc:
            answers.append(exc)
        else:
            answers.append(busy)
    return answers


def main() -> int:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "cassettes/sample/qa.yaml").resolve()
    recorded = asyncio.run(record(path))
    replayed = asyncio.run(replay(path))
    for original, again in zip(recorded, replayed, strict=True):
        if isinstance(original, HandlerError):
            assert isinstance(again, HandlerError) and (again.type, again.message) == (original.type, original.message)
        else:
            assert again["outputs"] == original["outputs"], (original, again)
    print(f"recorded {len(Cassette.load(path))} interactions into {path}; a mock pool replays them identically")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
