"""What must stay cheap to import: the plugin costs a run with no bridge tests nothing (issue 14)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("pydantic", "yaml", "dspy_bridge.pool", "dspy_bridge.cassettes", "asyncio")


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    return [name for name in out if name.startswith(HEAVY)]


def test_the_plugin_and_the_proxy_control_client_import_nothing_heavy() -> None:
    # the plugin binds the control client at configure time when pytest-recording is installed
    assert _loaded_after("import dspy_bridge.pytest_plugin, dspy_bridge.proxy._control") == []


def test_proxy_scrub_helpers_still_load_on_first_use() -> None:
    from dspy_bridge.proxy import verify_http_cassette

    assert callable(verify_http_cassette)
