"""Real DSPy workers from both start strategies pass the same checks through the pool and the fake Gemini.

Each zygote imports DSPy once (~1-3 s here), so this module starts one pool per strategy and keeps its
checks together. ``cache=False`` everywhere: DSPy's cache would otherwise skip the fake server.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from dspy_bridge.pool._config import PoolConfig
from dspy_bridge.pool._pool import Pool
from dspy_bridge.pool._spawn import Launcher, SpawnLauncher
from dspy_bridge.pool._zygote import ZygoteLauncher
from dspy_bridge.testing import FakeGemini, Reply

pytestmark = pytest.mark.slow

KEY = "bridge-zygote-" + secrets.token_hex(8)  # not key-shaped on purpose
FLASH = "gemini/gemini-2.5-flash"


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    with FakeGemini(expected_key=KEY) as fake:
        yield fake


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


@pytest.mark.parametrize("strategy", ["spawn", "zygote"])
async def test_real_workers_answer_the_same_through_the_fake_gemini(strategy: str, gemini: FakeGemini) -> None:
    gemini.reset()
    config = PoolConfig.model_validate({"mode": "real", "size": 2, "start_strategy": strategy})
    launcher: Launcher = ZygoteLauncher(config, daemon="never") if strategy == "zygote" else SpawnLauncher(config)
    async with Pool(config, launcher=launcher) as pool:
        workers = pool.workers()
        assert len(workers) == 2
        expected_parent = launcher.zygote_pid if isinstance(launcher, ZygoteLauncher) else os.getpid()
        assert all(parent_of(w.pid) == expected_parent for w in workers if w.pid is not None)
        ping = await pool.ping()
        assert ping["status"] == "ok" and ping["mode"] == "real" and ping["versions"]["dspy"].startswith("3.4")
        for session in ("s-a", "s-b"):  # two sessions, each with its own LM
            await pool.configure_lm(
                FLASH, session_id=session, api_key=KEY, api_base=gemini.base_url, cache=False, num_retries=0
            )
            program_id = await pool.create_program("question -> answer", session_id=session)
            gemini.enqueue(Reply({"answer": f"answer for {session}"}))
            result = await pool.execute(program_id, {"question": "What is 2 + 2?"}, session_id=session)
            assert result["outputs"] == {"answer": f"answer for {session}"}
            assert result["usage"][FLASH]["total_tokens"] > 0
        assert len(gemini.requests) == 2 and all(r.api_key == KEY for r in gemini.requests)
        if isinstance(launcher, ZygoteLauncher):
            assert launcher.stats()["forked"] == 2 and launcher.source == "own"
            info = launcher.zygote_info
            assert "dspy" in info["preloaded"] and info["preload_failed"] == {}
            assert info["stray_fds"] == []  # importing DSPy opened nothing (its disk cache stays unbuilt)
