"""Parse a program's signature into plain field specs (no DSPy, no pydantic, no typing at import).

A signature is part of the wire contract (``create_program`` carries it), so its parser lives in
``protocol/``: the real worker builds a DSPy signature with descriptions from the fields, the mock
worker checks inputs against them, and ``cassettes/_synthetic`` types its stand-in answers with
them, all without importing DSPy. Types are kept as their source text (``str``, ``int``,
``float``, ``bool``, ``list[str]``, ``Literal['a', 'b']``). It must stay cheap: the mock worker
imports it at start.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself stays off the mock worker's start-up path
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "SUPPORTED_TYPES",
    "FieldSpec",
    "SignatureError",
    "SignatureSpec",
    "literal_choices",
    "parse_signature",
]

SUPPORTED_TYPES = ("str", "int", "float", "bool", "list[str]", "list[int]", "list[float]", "list", "dict")


def _is_name(text: str) -> bool:
    return text.isidentifier()


class SignatureError(ValueError):
    """The signature cannot be understood; the message says which part and why."""


class FieldSpec:
    """One input or output field. (Plain class, not a dataclass: keeps the mock worker's start light.)"""

    __slots__ = ("description", "name", "type")

    def __init__(self, name: str, type: str = "str", description: str = "") -> None:
        self.name = name
        self.type = type
        self.description = description

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type, "description": self.description}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FieldSpec) and self.as_dict() == other.as_dict()

    def __hash__(self) -> int:
        return hash((self.name, self.type, self.description))

    def __repr__(self) -> str:
        return f"FieldSpec({self.name!r}, {self.type!r})"


class SignatureSpec:
    """A parsed signature: input and output fields plus instructions."""

    __slots__ = ("inputs", "instructions", "outputs")

    def __init__(self, inputs: tuple[FieldSpec, ...], outputs: tuple[FieldSpec, ...], instructions: str = "") -> None:
        self.inputs = inputs
        self.outputs = outputs
        self.instructions = instructions

    @property
    def input_names(self) -> list[str]:
        return [f.name for f in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [f.name for f in self.outputs]


def literal_choices(type_text: str) -> list[Any] | None:
    """The allowed values of ``Literal[...]``, or ``None`` for any other type."""
    import ast  # lazily: create_program needs it, a mock worker's hello does not
    import re

    match = re.fullmatch(r"\s*(?:typing\.)?Literal\[(.*)\]\s*", type_text)
    if not match:
        return None
    try:
        value = ast.literal_eval(f"({match.group(1)},)")
    except (ValueError, SyntaxError) as exc:
        raise SignatureError(f"cannot read the choices of {type_text!r}: {exc}") from exc
    return list(value)


def _check_type(type_text: str, where: str) -> str:
    import re

    text = re.sub(r"\s+", "", type_text) if "Literal" not in type_text else type_text.strip()
    if text in SUPPORTED_TYPES or literal_choices(text) is not None:
        return text
    raise SignatureError(
        f"{where}: unsupported type {type_text.strip()!r}; use one of {', '.join(SUPPORTED_TYPES)} or Literal[...]"
    )


def _split_fields(text: str) -> list[str]:
    """Split on commas that are not inside brackets (``Literal['a', 'b']`` stays whole)."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def _parse_side(text: str, side: str) -> tuple[FieldSpec, ...]:
    specs = []
    for item in _split_fields(text):
        name, _, type_text = item.partition(":")
        name = name.strip()
        if not _is_name(name):
            raise SignatureError(f"{side} field {name!r} is not a valid identifier")
        specs.append(FieldSpec(name=name, type=_check_type(type_text or "str", f"{side} field {name!r}")))
    if not specs:
        raise SignatureError(f"the signature has no {side} fields")
    return tuple(specs)


def _parse_structured_side(items: Any, side: str) -> tuple[FieldSpec, ...]:
    if not isinstance(items, list) or not items:
        raise SignatureError(f"structured signature needs a non-empty list of {side}")
    specs = []
    for item in items:
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not _is_name(item["name"]):
            raise SignatureError(f"each of {side} needs a 'name' that is an identifier, got {item!r}")
        type_text = str(item.get("type", "str"))
        specs.append(
            FieldSpec(
                name=item["name"],
                type=_check_type(type_text, f"{side} field {item['name']!r}"),
                description=str(item.get("description", "")),
            )
        )
    return tuple(specs)


def parse_signature(signature: Any, instructions: str | None = None) -> SignatureSpec:
    """Accept ``"question -> answer: int"`` or ``{inputs: [...], outputs: [...], instructions}``."""
    if isinstance(signature, str):
        if signature.count("->") != 1:
            raise SignatureError(f"signature {signature!r} must have exactly one '->'")
        left, right = signature.split("->")
        spec = SignatureSpec(inputs=_parse_side(left, "input"), outputs=_parse_side(right, "output"))
    elif isinstance(signature, dict):
        spec = SignatureSpec(
            inputs=_parse_structured_side(signature.get("inputs"), "inputs"),
            outputs=_parse_structured_side(signature.get("outputs"), "outputs"),
            instructions=str(signature.get("instructions") or ""),
        )
    else:
        raise SignatureError(f"signature must be a string or a map, got {type(signature).__name__}")
    names = spec.input_names + spec.output_names
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise SignatureError(f"field names appear twice: {duplicated}")
    if instructions:
        spec = SignatureSpec(inputs=spec.inputs, outputs=spec.outputs, instructions=instructions)
    return spec
