"""The cassette file format: readable YAML, exact round trips, and clear errors for bad files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dspy_bridge import CassetteCorrupt
from dspy_bridge.cassettes import FORMAT_VERSION, Cassette
from dspy_bridge.cassettes._yamlio import SafeLoader

HYPOTHESIS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

EXECUTE = {
    "request": {
        "command": "execute_program",
        "session": "s1",
        "program": {"signature": "question -> answer", "program_type": "predict"},
        "model": "gemini/gemini-2.5-flash",
        "args": {"inputs": {"question": "What is 2+2?"}, "program_id": "prog_0123456789abcdef"},
    },
    "response": {"ok": True, "result": {"outputs": {"answer": "4"}, "usage": {"prompt_tokens": 12}}},
}
FAILED = {
    "request": {**EXECUTE["request"], "args": {"inputs": {"question": "slow?"}, "program_id": "prog_0123456789abcdef"}},
    "response": {
        "ok": False,
        "error": {"type": "lm_rate_limited", "message": "429", "retryable": True, "details": None},
    },
}

VALID = """\
version: 1
meta:
  created: '2026-01-01T00:00:00Z'
  dspy_bridge_version: 0.1.0
  recorded_against: fake-gemini
interactions:
- request:
    command: execute_program
    session: s1
    args:
      inputs:
        question: hi
  response:
    ok: true
    result:
      outputs:
        answer: hello
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cassette.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _corrupt(path: Path) -> CassetteCorrupt:
    with pytest.raises(CassetteCorrupt) as info:
        Cassette.load(path)
    assert str(path) in str(info.value)
    return info.value


# --- round trips --------------------------------------------------------------------------------


def test_save_then_load_gives_the_same_interactions_and_meta(tmp_path: Path) -> None:
    cassette = Cassette(
        tmp_path / "c.yaml",
        [EXECUTE, FAILED],
        {
            "created": "2026-01-01T00:00:00Z",
            "dspy_bridge_version": "0.1.0",
            "recorded_against": "fake-gemini",
            "model": "m/x",
        },
    )
    cassette.save()
    loaded = Cassette.load(tmp_path / "c.yaml")
    assert [item.as_dict() for item in loaded] == [EXECUTE, FAILED]
    assert loaded.meta["recorded_against"] == "fake-gemini"
    assert loaded.meta["created"] == "2026-01-01T00:00:00Z"  # a string, not a YAML timestamp
    lines = (tmp_path / "c.yaml").read_text().splitlines()
    assert lines[0].startswith("# dspy-bridge cassette:") and lines[1:3] == [f"version: {FORMAT_VERSION}", lines[2]]
    assert lines[2].startswith('meta: {"created": ') and lines[3] == "interactions:"
    # One line per request and per response: re-recording one answer changes one line of the diff.
    assert [line[:12] for line in lines[4:]] == ["- request: {", "  response: ", "- request: {", "  response: "]
    request = lines[4]
    assert (
        request.index('"command"') < request.index('"session"') < request.index('"program"') < request.index('"args"')
    )


def test_multi_line_text_stays_on_its_line_and_any_yaml_tool_reads_the_same_data(tmp_path: Path) -> None:
    answer = "line one\nline two\n  indented three \u00e9\u2028\x85\x7f\t"
    interaction = {**EXECUTE, "response": {"ok": True, "result": {"outputs": {"answer": answer, "tiny": 1e-05}}}}
    Cassette(tmp_path / "c.yaml", [interaction]).save()
    text = (tmp_path / "c.yaml").read_text()
    assert len(text.splitlines()) == 6 and "\u00e9" in text  # unicode stays readable
    assert "\\u2028" in text and "\\u0085" in text and "\\u007f" in text  # what YAML reads as a line break or refuses
    assert Cassette.load(tmp_path / "c.yaml")[0].response["result"]["outputs"] == {"answer": answer, "tiny": 1e-05}
    assert yaml.load(text, Loader=SafeLoader)["interactions"] == [interaction]  # PyYAML: YAML 1.1
    assert yaml.load(text, Loader=yaml.SafeLoader)["interactions"] == [interaction]  # the pure Python one


def test_the_c_loader_is_used_when_libyaml_is_present() -> None:
    assert yaml.__with_libyaml__, "PyYAML was built without libyaml here; big cassettes would load slowly"
    assert SafeLoader is yaml.CSafeLoader


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


@HYPOTHESIS
@given(outputs=st.dictionaries(st.text(min_size=1, max_size=12), _values, max_size=5), question=st.text())
def test_any_plain_value_survives_a_round_trip_exactly(outputs: dict[str, Any], question: str) -> None:
    import tempfile

    interaction = {
        "request": {**EXECUTE["request"], "args": {"inputs": {"question": question}}},
        "response": {"ok": True, "result": {"outputs": outputs}},
    }
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "c.yaml"
        Cassette(path, [interaction]).save()
        assert Cassette.load(path)[0].as_dict() == interaction
        # and any YAML tool reads the same data from the file (YAML 1.1 floats, line breaks, escapes)
        assert yaml.load(path.read_text(encoding="utf-8"), Loader=SafeLoader)["interactions"] == [interaction]


# --- bad files ----------------------------------------------------------------------------------


def test_a_yaml_syntax_error_names_the_file_line_and_column(tmp_path: Path) -> None:
    broken = VALID.replace("        answer: hello", "        answer: [hello")
    error = _corrupt(_write(tmp_path, broken))
    assert error.details["line"] is not None and error.details["line"] >= 17
    assert f":{error.details['line']}:{error.details['column']}" in str(error)
    assert "rewrite" in str(error)  # what to do


def test_unsafe_python_tags_are_refused_and_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = VALID.replace("answer: hello", f"answer: !!python/object/apply:os.mkdir ['{marker}']")
    error = _corrupt(_write(tmp_path, text))
    assert "unsafe or unknown YAML tag" in str(error)
    assert error.details["line"] == 17
    assert not marker.exists()


def test_a_newer_format_version_says_to_upgrade(tmp_path: Path) -> None:
    error = _corrupt(_write(tmp_path, VALID.replace("version: 1", "version: 2")))
    assert "format version 2 is newer" in str(error)
    assert "pip install -U dspy-bridge" in str(error)
    assert (error.details["line"], error.details["column"]) == (1, 10)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "empty"),
        ("- just\n- a list\n", "top level must be a map"),
        (VALID.replace("version: 1\n", ""), "'version' must be 1"),
        (VALID.replace("version: 1", "version: one"), "'version' must be 1"),
    ],
)
def test_files_that_are_not_cassettes_say_why(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in str(_corrupt(_write(tmp_path, text)))


def test_a_schema_error_points_at_the_offending_node(tmp_path: Path) -> None:
    text = VALID.replace("    ok: true\n    result:\n      outputs:\n        answer: hello\n", "    ok: false\n")
    error = _corrupt(_write(tmp_path, text))
    assert "interactions.0.response" in str(error)
    assert "needs an error" in str(error)
    assert error.details["line"] == 14  # the response map (its first key, "ok")


def test_an_unknown_error_type_and_a_misspelt_field_are_caught(tmp_path: Path) -> None:
    bad_type = VALID.replace(
        "    ok: true\n    result:\n      outputs:\n        answer: hello\n",
        "    ok: false\n    error:\n      type: lm_exploded\n      message: boom\n",
    )
    error = _corrupt(_write(tmp_path, bad_type))
    assert "interactions.0.response.error.type" in str(error)
    assert error.details["line"] == 16
    misspelt = VALID.replace("    session: s1", "    sesion: s1")
    assert "sesion" in str(_corrupt(_write(tmp_path, misspelt)))


def test_bytes_that_are_not_utf8_are_a_corrupt_cassette(tmp_path: Path) -> None:
    path = tmp_path / "cassette.yaml"
    path.write_bytes(VALID.encode() + b"\xff\xfe")
    assert "not UTF-8" in str(_corrupt(path))


def test_a_missing_file_is_not_corrupt_it_is_absent(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Cassette.load(tmp_path / "nope.yaml")


# --- the parse cache for big cassettes ----------------------------------------------------------


def _big(tmp_path: Path) -> Cassette:
    interaction = {**EXECUTE, "response": {"ok": True, "result": {"outputs": {"answer": "y" * 2000}}}}
    cassette = Cassette(tmp_path / "big.yaml", [interaction] * 150)
    cassette.save()
    assert (tmp_path / "big.yaml").stat().st_size >= 256 * 1024
    return cassette


def test_big_cassettes_are_cached_by_content_and_reload_identically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSPY_BRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    _big(tmp_path)
    first = Cassette.load(tmp_path / "big.yaml")
    [entry] = (tmp_path / "cache" / "cassettes").glob("*.msgpack")
    again = Cassette.load(tmp_path / "big.yaml")
    assert [i.as_dict() for i in again] == [i.as_dict() for i in first] and again.meta == first.meta
    # An edit is a new key: the cache can never serve the old content.
    (tmp_path / "big.yaml").write_text(
        (tmp_path / "big.yaml").read_text().replace('"answer": "yyy', '"answer": "zzz', 1)
    )
    assert Cassette.load(tmp_path / "big.yaml")[0].response["result"]["outputs"]["answer"].startswith("zzz")
    assert len(list((tmp_path / "cache" / "cassettes").glob("*.msgpack"))) == 2
    # A damaged cache entry is ignored, not trusted.
    entry.write_bytes(b"\xc1garbage")
    (tmp_path / "big.yaml").write_text(
        (tmp_path / "big.yaml").read_text().replace('"answer": "zzz', '"answer": "yyy', 1)
    )
    assert Cassette.load(tmp_path / "big.yaml")[0].response["result"]["outputs"]["answer"].startswith("yyy")


def test_small_cassettes_and_a_disabled_cache_write_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSPY_BRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    Cassette(tmp_path / "small.yaml", [EXECUTE]).save()
    Cassette.load(tmp_path / "small.yaml")
    monkeypatch.setenv("DSPY_BRIDGE_CASSETTE_CACHE", "0")
    _big(tmp_path)
    Cassette.load(tmp_path / "big.yaml")
    assert not (tmp_path / "cache").exists()


# --- the hand check agrees with the pydantic models (it may doubt, never wrongly accept) ---------------
def _valid_cassette() -> dict[str, Any]:
    return {
        "version": 1,
        "meta": {"created": "2026-01-01T00:00:00Z", "dspy_bridge_version": "0.1.0", "extra": 1},
        "interactions": [
            {
                "request": {"command": "execute_program", "session": "s", "args": {"program_id": "p"}},
                "response": {"ok": True, "result": {"outputs": {"a": 1}}, "chunks": [{"field": "a", "text": "1"}]},
            },
            {
                "request": {"command": "create_program", "program": {"signature": "q -> a"}, "model": None},
                "response": {"ok": False, "error": {"type": "lm_error", "message": "m", "retryable": True}},
            },
        ],
    }


_MUTATIONS: list[tuple[str, Any]] = [
    ("version", "1"),
    ("version", True),
    ("meta", None),
    ("meta.created", 5),
    ("meta.dspy_version", 3),
    ("meta.recorded_against", None),
    ("interactions", None),
    ("interactions", {}),
    ("interactions.0", []),
    ("interactions.0.extra", 1),
    ("interactions.0.request.command", ""),
    ("interactions.0.request.command", 7),
    ("interactions.0.request.session", 1),
    ("interactions.0.request.args", None),
    ("interactions.0.request.args", {1: "x"}),
    ("interactions.0.request.other", 1),
    ("interactions.1.request.program", "p"),
    ("interactions.0.response.ok", "true"),
    ("interactions.0.response.ok", 1),
    ("interactions.0.response.error", {"type": "lm_error", "message": "m"}),
    ("interactions.0.response.chunks", [{"field": "a"}]),
    ("interactions.0.response.chunks", [{"field": "a", "text": 1}]),
    ("interactions.0.response.chunks", "x"),
    ("interactions.1.response.error", None),
    ("interactions.1.response.error.type", "nonsense"),
    ("interactions.1.response.error.retryable", "yes"),
    ("interactions.1.response.error.retryable", 1),
    ("interactions.1.response.error.details", "d"),
    ("interactions.1.response.error.more", 1),
    ("interactions.1.response.extra", 1),
    ("extra", 1),
]


def _mutated(dotted: str, value: Any) -> dict[str, Any]:
    data = _valid_cassette()
    *parents, last = dotted.split(".")
    target: Any = data
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return data


@pytest.mark.parametrize(("dotted", "value"), _MUTATIONS)
def test_the_hand_check_never_accepts_what_the_models_reject(dotted: str, value: Any) -> None:
    from pydantic import ValidationError

    from dspy_bridge.cassettes._models import CassetteModel
    from dspy_bridge.cassettes._shape import well_formed

    data = _mutated(dotted, value)
    try:
        CassetteModel.model_validate(data)
        models_accept = True
    except ValidationError:
        models_accept = False
    assert not (well_formed(data) and not models_accept)


def test_the_hand_check_accepts_a_valid_cassette() -> None:
    from dspy_bridge.cassettes._models import CassetteModel
    from dspy_bridge.cassettes._shape import well_formed

    data = _valid_cassette()
    CassetteModel.model_validate(data)
    assert well_formed(data)
