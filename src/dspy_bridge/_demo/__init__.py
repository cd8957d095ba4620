"""``dspy-bridge demo``: one small test suite run three ways, timed side by side.

    record once ─ real workers (zygote) ─▶ cassette proxy ─▶ fake Gemini     bridge + HTTP cassettes
    1 the seed's way    per test: 6 real workers started one at a time, 500 ms apart; LM = fake Gemini
    2 mock              one shared pool of mock workers answering from the bridge cassettes
    3 integration       one shared pool of zygote-forked real workers; LM HTTP replayed by the proxy

Every answer is compared with the recording's; any difference makes the demo exit 1. Everything runs
offline, in a temporary work dir that is removed at the end unless ``--keep``.
"""

from __future__ import annotations

from dspy_bridge._demo._run import SIZES, DemoSize, run_demo
from dspy_bridge._demo.suite import SUITE, DemoTest

__all__ = ["SIZES", "SUITE", "DemoSize", "DemoTest", "run_demo"]
