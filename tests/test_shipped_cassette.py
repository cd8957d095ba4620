"""The bridge cassette shipped in cassettes/sample (recorded from real DSPy workers against the fake
Gemini by scripts/record_sample_cassette.py) replays through a pool of mock workers, offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dspy_bridge import Bridge, HandlerError
from dspy_bridge.cassettes import verify
from dspy_bridge.pool import PoolConfig, SyncPool

SHIPPED = Path(__file__).resolve().parents[1] / "cassettes" / "sample" / "qa.yaml"


def test_the_shipped_cassette_says_what_it_was_recorded_against_and_holds_no_key() -> None:
    meta = yaml.safe_load(SHIPPED.read_text())["meta"]
    assert meta["recorded_against"] == "fake-gemini"
    assert meta["dspy_version"].startswith("3.4")
    verify([SHIPPED])


def test_a_mock_pool_replays_every_recorded_answer() -> None:
    interactions = yaml.safe_load(SHIPPED.read_text())["interactions"]
    executes = [i for i in interactions if i["request"]["command"] == "execute_program"]
    assert len(executes) >= 4
    with SyncPool(PoolConfig(mode="mock", size=2, retries=0)) as pool:
        bridge = Bridge(pool, context={"test_id": "shipped", "cassette": {"path": str(SHIPPED)}})
        bridge.configure_lm("gemini/gemini-2.5-flash")
        for interaction in executes:
            program = interaction["request"]["program"]
            program_id = bridge.create_program(program["signature"], program.get("program_type", "predict"))
            inputs = interaction["request"]["args"]["inputs"]
            response = interaction["response"]
            if response["ok"]:
                assert bridge.execute(program_id, **inputs) == response["result"]["outputs"]
            else:
                with pytest.raises(HandlerError) as caught:
                    bridge.execute(program_id, **inputs)
                assert caught.value.type == response["error"]["type"]
        assert bridge.outcomes["cassette"] >= 4
