"""Entry point: ``python -m dspy_bridge.worker --mode real|mock``."""

from dspy_bridge.worker._main import main

main()
