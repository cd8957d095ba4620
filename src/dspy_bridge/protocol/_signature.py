"""Parse a program's signature into plain field specs (no DSPy, no pydantic, no typing at import).

A signature is part of the wire contract (``create_program`` carries it), so its parser lives in
``protocol/``: the real worker builds a DSPy signature with descriptions from the fields, the mock
worker checks inputs against them, and ``cassettes/_synthetic`` types its stand-in answers with
them, all without importing DSPy. It must stay cheap: the mock worker imports it at start.

Types are kept as text in one canonical spelling (``check_type``), from this grammar::

    type    := "str" | "int" | "float" | "bool"
             | "list" ["[" type "]"] | "dict" ["[" "str" "," type "]"]      (also List, Dict)
             | "Optional[" type "]" | type "|" "None" | "Union[" type ", None]"   -> Optional[type]
             | "Literal[" literal ("," literal)* "]"                        (str, int, float, bool, None)
             | "dspy.History" | "dspy.Image"                               (inputs only)
             | "pkg.module:Model"                                          (a pydantic model by import path)
             | "object"                                                    (structured fields with a "schema")

``parse_type`` gives the tree (tuples: ``("list", item)``, ``("optional", inner)``, ...), which
``protocol/_schema.py`` turns into a JSON Schema and the real worker into a Python type.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself stays off the mock worker's start-up path
if TYPE_CHECKING:
    from typing import Any

    #: A parsed type: ``("str",)``, ``("list", item | None)``, ``("dict", value | None)``,
    #: ``("optional", inner)``, ``("literal", (values...))``, ``("dspy.History",)``, ``("dspy.Image",)``,
    #: ``("model", "pkg.mod:Name")``, ``("object",)``.
    TypeNode = tuple[Any, ...]
else:
    TypeNode = tuple

__all__ = [
    "GRAMMAR_HINT",
    "INPUT_ONLY_TYPES",
    "SUPPORTED_TYPES",
    "FieldSpec",
    "SignatureError",
    "SignatureSpec",
    "TypeNode",
    "check_type",
    "format_type",
    "literal_choices",
    "parse_signature",
    "parse_type",
]

SUPPORTED_TYPES = ("str", "int", "float", "bool", "list[str]", "list[int]", "list[float]", "list", "dict")
#: Types only an input may have (DSPy takes them in; no LM ever answers one).
INPUT_ONLY_TYPES = ("dspy.History", "dspy.Image")
GRAMMAR_HINT = (
    "use str, int, float, bool, list[T], dict[str, T], Optional[T] (or T | None), Literal[...], "
    "dspy.History, dspy.Image, a pydantic model by import path ('pkg.module:Model'), or in a structured "
    "signature {'type': 'object', 'schema': <JSON Schema>}"
)
_SCALARS = ("str", "int", "float", "bool")
_ALIASES = {"List": "list", "Dict": "dict", "typing.List": "list", "typing.Dict": "dict", "History": "dspy.History"}
_ALIASES["Image"] = "dspy.Image"


def _is_name(text: str) -> bool:
    return text.isidentifier()


class SignatureError(ValueError):
    """The signature cannot be understood; the message says which part and why."""


class FieldSpec:
    """One input or output field. (Plain class, not a dataclass: keeps the mock worker's start light.)"""

    __slots__ = ("description", "name", "prefix", "schema", "type")

    def __init__(
        self,
        name: str,
        type: str = "str",
        description: str = "",
        *,
        prefix: str = "",
        schema: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.type = type
        self.description = description
        self.prefix = prefix  # DSPy's field prefix ("" = DSPy's default)
        self.schema = schema  # the JSON Schema of an ``object`` field (structured signatures only)

    def as_dict(self) -> dict[str, Any]:
        """``{name, type, description}``, plus ``prefix`` and ``schema`` when the field has them."""
        data: dict[str, Any] = {"name": self.name, "type": self.type, "description": self.description}
        if self.prefix:
            data["prefix"] = self.prefix
        if self.schema is not None:
            data["schema"] = self.schema
        return data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FieldSpec) and self.as_dict() == other.as_dict()

    def __hash__(self) -> int:
        return hash((self.name, self.type, self.description, self.prefix))

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
    """The allowed values of a top-level ``Literal[...]``, or ``None`` for any other type."""
    import ast  # lazily: create_program needs it, a mock worker's hello does not
    import re

    match = re.fullmatch(r"\s*(?:typing\.)?Literal\[(.*)\]\s*", type_text, re.DOTALL)
    if not match:
        return None
    try:
        value = ast.literal_eval(f"({match.group(1)},)")
    except (ValueError, SyntaxError) as exc:
        raise SignatureError(f"cannot read the choices of {type_text!r}: {exc}") from exc
    return list(value)


def check_type(type_text: str, where: str = "field") -> str:
    """The canonical text of a type in the grammar (``Optional[str]`` for ``str | None``), else ``SignatureError``."""
    try:
        return format_type(parse_type(type_text))
    except SignatureError as exc:
        raise SignatureError(f"{where}: unsupported type {type_text.strip()!r} ({exc}); {GRAMMAR_HINT}") from None


def _tokens(text: str) -> list[str]:
    import re

    pattern = (
        r"""\s*('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|[A-Za-z_][\w.]*|[\[\],|:]|\S)"""
    )
    found: list[str] = re.findall(pattern, text)  # the last alternative (any non-space) leaves nothing unread
    return found


class _Reader:
    """A recursive-descent reader over the tokens of one type text."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.at = 0

    def peek(self) -> str | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise SignatureError(f"expected {expected or 'a type'} but found {token or 'the end'}")
        self.at += 1
        return token

    def type(self) -> TypeNode:
        node = self.single()
        options = [node]
        while self.peek() == "|":
            self.take("|")
            options.append(self.single())
        return _union(options)

    def single(self) -> TypeNode:
        name = self.take()
        if name == "None":
            return ("none",)
        name = _ALIASES.get(name, name)
        if self.peek() == ":":  # pkg.module:Model
            self.take(":")
            attribute = self.take()
            if not all(part.isidentifier() for part in [*name.split("."), *attribute.split(".")]):
                raise SignatureError(f"{name}:{attribute} is not an import path 'package.module:Model'")
            return ("model", f"{name}:{attribute}")
        if name in _SCALARS or name in ("object", *INPUT_ONLY_TYPES):
            return (name,)
        if name in ("list", "dict", "Optional", "typing.Optional", "Union", "typing.Union"):
            return self.generic(name)
        if name in ("Literal", "typing.Literal"):
            return ("literal", self.literals())
        raise SignatureError(f"{name!r} is not a type of the grammar")

    def generic(self, name: str) -> TypeNode:
        if self.peek() != "[":
            if name in ("list", "dict"):
                return (name, None)
            raise SignatureError(f"{name} needs [...]")
        self.take("[")
        args = [self.type()]
        while self.peek() == ",":
            self.take(",")
            args.append(self.type())
        self.take("]")
        if name == "list" and len(args) == 1:
            return ("list", args[0])
        if name == "dict" and len(args) == 2:
            if args[0] != ("str",):
                raise SignatureError("dict keys must be str (JSON object keys are strings)")
            return ("dict", args[1])
        if name.endswith("Optional") and len(args) == 1:
            return _union([args[0], ("none",)])
        if name.endswith("Union"):
            return _union(args)
        raise SignatureError(f"{name} takes {'one type' if name == 'list' else 'str and a value type'}")

    def literals(self) -> tuple[Any, ...]:
        import ast

        self.take("[")
        values = []
        while True:
            token = self.take()
            try:
                value = ast.literal_eval(token)
            except (ValueError, SyntaxError):
                raise SignatureError(f"Literal choice {token} is not a string, number, bool or None") from None
            if not (value is None or isinstance(value, str | int | float | bool)):
                raise SignatureError(f"Literal choice {token} is not a string, number, bool or None")
            values.append(value)
            if self.peek() != ",":
                break
            self.take(",")
        self.take("]")
        return tuple(values)


def _union(options: list[TypeNode]) -> TypeNode:
    if len(options) == 1:
        return options[0]
    real = [option for option in options if option != ("none",)]
    if len(real) == 1 and len(options) == 2:
        return real[0] if real[0][0] == "optional" else ("optional", real[0])
    raise SignatureError("only T | None (Optional[T]) unions are supported")


def parse_type(type_text: str) -> TypeNode:
    """The tree of one type text; ``SignatureError`` says what is wrong."""
    reader = _Reader(type_text)
    node = reader.type()
    if reader.peek() is not None:
        raise SignatureError(f"unexpected {reader.peek()!r} after the type")
    if node == ("none",):
        raise SignatureError("None alone is not a field type")
    return node


def format_type(node: TypeNode) -> str:
    """The canonical text of a parsed type (``parse_type(format_type(n)) == n``)."""
    kind = str(node[0])
    if kind in ("list", "dict") and node[1] is None:
        return kind
    if kind == "list":
        return f"list[{format_type(node[1])}]"
    if kind == "dict":
        return f"dict[str, {format_type(node[1])}]"
    if kind == "optional":
        return f"Optional[{format_type(node[1])}]"
    if kind == "literal":
        return f"Literal[{', '.join(repr(value) for value in node[1])}]"
    if kind == "model":
        return str(node[1])
    if kind == "none":
        raise SignatureError("None alone is not a field type")
    return str(kind)


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
        specs.append(FieldSpec(name=name, type=check_type(type_text or "str", f"{side} field {name!r}")))
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
        schema = item.get("schema")
        type_text = str(item.get("type", "object" if schema is not None else "str"))
        where = f"{side} field {item['name']!r}"
        type_text = check_type(type_text, where)
        if (schema is not None) != (type_text == "object"):
            raise SignatureError(f"{where}: give a JSON Schema map as 'schema' exactly when 'type' is 'object'")
        if schema is not None and not (isinstance(schema, dict) and schema):
            raise SignatureError(f"{where}: 'schema' must be a non-empty JSON Schema map, got {schema!r}")
        specs.append(
            FieldSpec(
                name=item["name"],
                type=type_text,
                description=str(item.get("description", "")),
                prefix=str(item.get("prefix") or ""),
                schema=schema,
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
    for field in spec.outputs:
        if field.type in INPUT_ONLY_TYPES:
            raise SignatureError(f"output field {field.name!r}: {field.type} is an input type; no LM answers one")
    if isinstance(signature, str) and "object" in [f.type for f in (*spec.inputs, *spec.outputs)]:
        raise SignatureError("the type 'object' needs a JSON Schema: use a structured signature field with 'schema'")
    names = spec.input_names + spec.output_names
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise SignatureError(f"field names appear twice: {duplicated}")
    if instructions:
        spec = SignatureSpec(inputs=spec.inputs, outputs=spec.outputs, instructions=instructions)
    return spec
