"""Internals of the pytest plugin (``dspy_bridge.pytest_plugin`` is the face users touch)."""
