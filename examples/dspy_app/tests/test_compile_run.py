"""An optimizer run inside a worker, recorded once and replayed offline: BootstrapFewShot, then COPRO.

The run is one program (``dspy_app.compile_run:CompileRAG``); its LM calls — the task LM (gemini-2.5-flash)
and COPRO's prompt model (gemini-2.5-pro) — land in one HTTP cassette, each keyed by its own model, so a real
worker replays the whole compile deterministically, call for call.
"""

from __future__ import annotations

import json
from pathlib import Path

import dspy_app
import yaml
from helpers import MOCK_AND_REAL, MODEL

ROWS = json.loads((Path(dspy_app.__file__).parent / "trainset.json").read_text(encoding="utf-8"))[:4]


@MOCK_AND_REAL
def test_an_optimizer_run_replays_offline_with_both_of_its_lms(bridge, bridge_cassette, lm_answers, kind):
    # Recording against the fake: the answers a capable model gives to the four training questions.
    lm_answers(*({"reasoning": f"The context says {row['answer']}.", "answer": row["answer"]} for row in ROWS))
    bridge.configure_lm(MODEL)
    program = bridge.create_program(module="dspy_app.compile_run:CompileRAG")

    result = bridge.execute(program, rows=ROWS, question="What is the capital of Japan?")

    assert result["demos"] == 2  # BootstrapFewShot kept two traces that passed the metric
    assert result["instruction"] and isinstance(result["answer"], str)  # COPRO chose an instruction
    if kind == "integration" and not bridge_cassette.records:  # one cassette, both LMs, each under its own model
        http = yaml.safe_load(bridge_cassette.http_cassette.read_text(encoding="utf-8"))
        models = {entry["request"]["uri"].rsplit("/", 1)[-1].split(":")[0] for entry in http["interactions"]}
        assert models == {"gemini-2.5-flash", "gemini-2.5-pro"}
