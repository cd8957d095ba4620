"""The top-level leaf modules every layer shares: record modes, secret names, the version."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import dspy_bridge
from dspy_bridge import cassettes
from dspy_bridge._exceptions import UsageError
from dspy_bridge._modes import RECORD_MODES, RecordMode
from dspy_bridge._secrets import (
    KEY_ENV_VARS,
    PROVIDER_KEY_ENV_VARS,
    api_key_from_env,
    is_secret_env_name,
    key_env_hint,
)
from dspy_bridge._version import __version__


def test_one_record_mode_type_everywhere() -> None:
    assert dspy_bridge.RecordMode is cassettes.RecordMode is RecordMode
    assert cassettes.RECORD_MODES is RECORD_MODES
    assert dspy_bridge.__version__ == __version__


def test_once_records_while_any_cassette_file_is_missing(tmp_path: Path) -> None:
    present, missing = tmp_path / "bridge.yaml", tmp_path / "http.yaml"
    present.write_text("")
    assert RecordMode.ONCE.records(present, missing)
    assert not RecordMode.ONCE.records(present)
    assert not RecordMode.NONE.records(missing)
    assert all(RecordMode(mode).records(present) for mode in ("new_episodes", "all", "rewrite"))


def test_a_misspelt_mode_lists_the_valid_ones() -> None:
    with pytest.raises(UsageError, match=", ".join(RECORD_MODES)):
        RecordMode.parse("sometimes")


def test_the_key_comes_from_the_first_non_empty_variable() -> None:
    assert KEY_ENV_VARS == ("GEMINI_API_KEY", "GOOGLE_API_KEY")
    assert api_key_from_env({"GEMINI_API_KEY": "", "GOOGLE_API_KEY": "g"}) == "g"
    assert api_key_from_env({"GEMINI_API_KEY": "a", "GOOGLE_API_KEY": "g"}) == "a"
    assert api_key_from_env({"OPENAI_API_KEY": "o"}) is None
    assert key_env_hint() == "GEMINI_API_KEY (or GOOGLE_API_KEY)"


@pytest.mark.parametrize("name", [*KEY_ENV_VARS, *PROVIDER_KEY_ENV_VARS, "SOME_VENDOR_API_KEY", "openai_api_key"])
def test_secret_names(name: str) -> None:
    assert is_secret_env_name(name)


@pytest.mark.parametrize("name", ["PATH", "HOME", "GITHUB_TOKEN_URL", "DSPY_BRIDGE_RECORD", "API_KEY_FILE"])
def test_not_secret_names(name: str) -> None:
    assert not is_secret_env_name(name)


def test_the_leaves_are_cheap_enough_for_the_plugin_to_import() -> None:
    code = (
        "import sys; import dspy_bridge._modes, dspy_bridge._secrets, dspy_bridge._version; "
        "print(','.join(m for m in ('pydantic', 'yaml', 'dspy', 'msgpack') if m in sys.modules))"
    )
    env = {"PYTHONPATH": ":".join(p for p in sys.path if p)}
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == ""
