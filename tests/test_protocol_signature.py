"""The signature parser in ``protocol/``: what it accepts, and how it explains what it refuses."""

from __future__ import annotations

import pytest

from dspy_bridge.protocol._signature import FieldSpec, SignatureError, literal_choices, parse_signature


def test_string_signature_fields_and_types() -> None:
    spec = parse_signature("question, k: int -> answer: Literal['a', 'b']")
    assert spec.input_names == ["question", "k"]
    assert spec.inputs[1] == FieldSpec("k", "int")
    assert literal_choices(spec.outputs[0].type) == ["a", "b"]


def test_unsupported_type_is_quoted_as_written() -> None:
    with pytest.raises(SignatureError) as caught:
        parse_signature("question -> answer: complex")
    assert "unsupported type 'complex'" in str(caught.value)
    assert "Optional[T]" in str(caught.value)  # the message lists the grammar
