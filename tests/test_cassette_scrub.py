"""No secret survives recording, and ``verify`` finds any that got into a file anyway."""

from __future__ import annotations

import string
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dspy_bridge import SecretLeak
from dspy_bridge.cassettes import Cassette, Recorder, redact_text, scrub, verify
from dspy_bridge.protocol._programs import program_id_for

HYPOTHESIS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEY_CHARS = string.ascii_letters + string.digits + "_-"


ALNUM = string.ascii_letters + string.digits


def _body(size: int, alphabet: str = ALNUM) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=size, max_size=size)


@st.composite
def _random_looking(draw: st.DrawFn, size: int) -> str:
    """Like a real key body: mostly alphanumeric, with a few ``-``/``_`` (base64url) sprinkled in."""
    chars = list(draw(_body(size)))
    for _ in range(draw(st.integers(0, 3))):
        chars[draw(st.integers(0, size - 1))] = draw(st.sampled_from("-_"))
    return "".join(chars)


@st.composite
def _token_with_digit(draw: st.DrawFn) -> str:
    chars = list(draw(st.text(alphabet=ALNUM + ".~+/-_", min_size=16, max_size=60)))
    chars[draw(st.integers(0, len(chars) - 1))] = draw(st.sampled_from(string.digits))
    return "".join(chars)


# Key shapes, always built at run time: nothing key-shaped is ever written into this file.
google_keys = _body(35, KEY_CHARS).map(lambda body: "AI" + "za" + body)
openai_legacy_keys = _body(48).map(lambda body: "s" + "k-" + body)
openai_project_keys = _random_looking(156).map(lambda body: "s" + "k-proj-" + body)
anthropic_keys = _random_looking(93).map(lambda body: "s" + "k-ant-api03-" + body + "AA")
oauth_tokens = _body(40, KEY_CHARS).map(lambda body: "ya" + "29." + body)
bearer_tokens = _token_with_digit().map(lambda token: "Bearer " + token)
any_key = st.one_of(google_keys, openai_legacy_keys, openai_project_keys, anthropic_keys, oauth_tokens, bearer_tokens)

# Keys appear after a delimiter in real text: "key=...", '"sk-..."', "Authorization: Bearer ...".
delimiters = st.sampled_from(["", " ", "=", ":", '"', "'", "\n", "/", "(", ",", "\t"])
prose = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)


@st.composite
def texts_with_a_key(draw: st.DrawFn) -> tuple[str, str]:
    key = draw(any_key)
    before = draw(prose) + draw(delimiters)
    after = draw(delimiters) + draw(prose)
    # Prose that happens to contain the secret itself (e.g. "0000…Bearer 0000…") is not a leak.
    assume(_secret_part(key) not in before + after)
    return before + key + after, key


def _secret_part(key: str) -> str:
    return key.removeprefix("Bearer ")


@HYPOTHESIS
@given(case=texts_with_a_key())
def test_redact_text_removes_every_key_shape(case: tuple[str, str]) -> None:
    text, key = case
    assert _secret_part(key) not in redact_text(text)


@HYPOTHESIS
@given(header=texts_with_a_key(), arg=texts_with_a_key(), message=texts_with_a_key(), output=texts_with_a_key())
def test_no_secret_survives_recording(
    header: tuple[str, str], arg: tuple[str, str], message: tuple[str, str], output: tuple[str, str]
) -> None:
    cases = (header, arg, message, output)
    secrets = [_secret_part(case[1]) for case in cases]
    # Prose around one key that happens to contain another case's secret is not a leak.
    assume(not any(secret in text.replace(key, "") for secret in secrets for text, key in cases))
    program_id = program_id_for({"signature": "question -> answer"})
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "c.yaml"
        with Recorder(path, "once") as recorder:
            recorder.record(
                {
                    "command": "configure_lm",
                    "session_id": "s",
                    "args": {"model": "gemini/x", "api_key": secrets[0], "extra_headers": {"X-Custom": header[0]}},
                },
                {"ok": True, "result": {"configured": {"model": "gemini/x", "headers": {"Authorization": header[0]}}}},
            )
            recorder.record(
                {"command": "create_program", "session_id": "s", "args": {"signature": "question -> answer"}},
                {"ok": True, "result": {"program_id": program_id}},
            )
            recorder.record(
                {
                    "command": "execute_program",
                    "session_id": "s",
                    "args": {"program_id": program_id, "inputs": {"question": arg[0], arg[0]: "as a map key"}},
                },
                {
                    "ok": False,
                    "error": {
                        "type": "lm_auth",
                        "message": message[0],
                        "retryable": False,
                        "details": {"body": message[0], "traceback": message[0]},
                    },
                },
            )
            recorder.record(
                {
                    "command": "execute_program",
                    "session_id": "s",
                    "args": {"program_id": program_id, "inputs": {"question": "q"}},
                },
                {"ok": True, "result": {"outputs": {"answer": output[0]}, "usage": {}}},
            )
        text = path.read_text(encoding="utf-8")
        for secret in secrets:
            assert secret not in text
        loaded = Cassette.load(path)
        assert secrets[0] not in repr([item.as_dict() for item in loaded])
        verify(path)


def test_ordinary_words_are_not_mangled() -> None:
    # Built by concatenation so the repository's own key-shape scan does not flag this prose.
    text = (
        "The ta" + "sk-force-asse" + "ssment-framework-2024 needs a bearer of good news; desk-sk-items; "
        "scikit (sk-" + "learn-compatible-estimators-api) and the bearer instrument-backed-securities"
    )
    assert redact_text(text) == text
    assert scrub({"prompt_tokens": 10, "token_count": 3}) == {"prompt_tokens": 10, "token_count": 3}


def test_credential_fields_lose_their_values_whatever_they_hold() -> None:
    assert scrub({"headers": {"Authorization": "Basic abc", "x-goog-api-key": "short", "Accept": "json"}}) == {
        "headers": {"Authorization": "<REDACTED>", "x-goog-api-key": "<REDACTED>", "Accept": "json"}
    }


def test_redaction_says_what_kind_of_secret_was_there() -> None:
    key = "AI" + "za" + "B" * 35
    assert redact_text(f"https://host/v1beta/models/x?alt=sse&key={key}") == (
        "https://host/v1beta/models/x?alt=sse&key=<REDACTED:url-key-param>"
    )
    assert redact_text(f"key {key} invalid") == "key <REDACTED:google-api-key> invalid"
    assert redact_text("Authorization: Bearer abcdefgh12345678") == "Authorization: Bearer <REDACTED:bearer-token>"
    glued = "prefix0" + "s" + "k-" + "E" * 48
    assert redact_text(glued) == "prefix0<REDACTED:openai-key>"
    assert redact_text(redact_text(f"key {key}")) == redact_text(f"key {key}")  # idempotent


# --- verify -------------------------------------------------------------------------------------


def _clean_cassette(path: Path) -> None:
    with Recorder(path, "once") as recorder:
        recorder.record(
            {"command": "configure_lm", "session_id": "s", "args": {"model": "gemini/x"}},
            {"ok": True, "result": {"configured": {"model": "gemini/x"}}},
        )


def test_verify_passes_clean_cassettes_and_directories(tmp_path: Path) -> None:
    _clean_cassette(tmp_path / "a.yaml")
    _clean_cassette(tmp_path / "sub" / "b.yaml")
    assert sorted(verify(tmp_path)) == [tmp_path / "a.yaml", tmp_path / "sub" / "b.yaml"]


def test_verify_names_file_line_and_column_but_never_the_secret(tmp_path: Path) -> None:
    _clean_cassette(tmp_path / "clean.yaml")
    key = "AI" + "za" + "C" * 35
    leaky = tmp_path / "leaky.yaml"
    leaky.write_text(f"version: 1\nmeta:\n  note: fine\n  key_here: 'x {key}'\n")
    with pytest.raises(SecretLeak) as info:
        verify(tmp_path)
    message = str(info.value)
    assert key not in message
    assert f"{leaky}:4:16: google-api-key AIza...(39 chars)" in message
    assert info.value.details["findings"] == [{"file": str(leaky), "line": 4, "column": 16, "kind": "google-api-key"}]
    assert "rotate" in message


def test_verify_sees_through_yaml_escapes_and_catches_credential_fields(tmp_path: Path) -> None:
    escaped = "\\x41Iza" + "D" * 35  # "AIza..." once YAML decodes the escape
    path = tmp_path / "sneaky.yaml"
    path.write_text(f'version: 1\nmeta:\n  a: "{escaped}"\n  api_key: hunter2-plain\n  password: <REDACTED>\n')
    with pytest.raises(SecretLeak) as info:
        verify(path)
    kinds = [(f["line"], f["kind"]) for f in info.value.details["findings"]]
    assert kinds == [(3, "google-api-key"), (4, "api_key-field")]


@HYPOTHESIS
@given(key=any_key, nested=st.booleans())
def test_verify_finds_any_key_shape_that_yaml_wrote(key: str, nested: bool) -> None:
    document: dict[str, Any] = {"version": 1, "interactions": [{"request": {"args": {"q": f"x {key} y"}}}]}
    if nested:
        document = {"outer": document, "list": [key]}
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "c.yaml"
        path.write_text(yaml.safe_dump(document, width=40), encoding="utf-8")  # narrow: folded lines too
        with pytest.raises(SecretLeak):
            verify(path)
