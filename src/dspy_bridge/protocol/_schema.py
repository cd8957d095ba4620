"""JSON Schemas of field values, without pydantic: derived from type text, checked, and generated.

The real worker reports every field's schema (``pydantic.TypeAdapter(t).json_schema()``) in the
``create_program`` result, and cassettes keep it, so a mock worker — which never imports pydantic,
DSPy or user code — can still refuse an answer real DSPy could never return and make up answers of
the right shape. For signature programs it can also derive the schema itself from the type text
(``schema_for_type``), in the same form pydantic writes.

The subset understood is what pydantic emits: ``type`` (a name or a list), ``properties``,
``required``, ``items``, ``prefixItems``, ``additionalProperties``, ``enum``, ``const``, ``anyOf`` /
``oneOf`` / ``allOf``, ``$defs`` + ``$ref`` (``#/$defs/Name``). ``format`` and numeric/length bounds are
not checked. Plain Python, no typing at import: the mock worker imports this on its request path.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself stays off the mock worker's start-up path
if TYPE_CHECKING:
    from typing import Any, Protocol

    class Randomness(Protocol):
        def next(self, bound: int) -> int: ...

        def word(self) -> str: ...


from dspy_bridge.protocol._signature import parse_type

__all__ = [
    "HISTORY_SCHEMA",
    "IMAGE_SCHEMA",
    "answer_mismatch",
    "describe",
    "generate",
    "json_type",
    "mismatch",
    "schema_for_node",
    "schema_for_type",
]

#: ``dspy.History`` as an input value: ``{"messages": [{field: value, ...}, ...]}``.
HISTORY_SCHEMA: dict[str, Any] = {
    "title": "History",
    "type": "object",
    "properties": {"messages": {"type": "array", "items": {"type": "object", "additionalProperties": True}}},
    "required": ["messages"],
    "additionalProperties": False,
}
#: ``dspy.Image`` as an input value: ``{"url": ...}`` or ``{"data": <base64>, "mime": ...}``
#: (and, in cassettes, ``{"image_sha256": ..., "mime": ...}`` in place of the bytes).
IMAGE_SCHEMA: dict[str, Any] = {
    "title": "Image",
    "anyOf": [
        {"type": "object", "properties": {"url": {"type": "string"}}, "required": ["url"]},
        {
            "type": "object",
            "properties": {"data": {"type": "string"}, "mime": {"type": "string"}},
            "required": ["data"],
        },
        {
            "type": "object",
            "properties": {"image_sha256": {"type": "string"}, "mime": {"type": "string"}},
            "required": ["image_sha256"],
        },
    ],
}
_JSON_TYPES = {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "null": "None"}
_JSON_TYPES.update({"array": "list", "object": "dict"})


# -- type text -> schema --------------------------------------------------------------------------
def schema_for_type(type_text: str, object_schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON Schema of a type text of the grammar, in the form pydantic writes it.

    A pydantic model by import path is unknown without its class: its part of the schema is ``{}``
    (anything), so only a recorded schema checks it. ``object`` fields use ``object_schema``.
    """
    return schema_for_node(parse_type(type_text), object_schema)


def schema_for_node(node: tuple[Any, ...], object_schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """``schema_for_type`` for an already parsed type (``_signature.parse_type``)."""
    kind = node[0]
    simple = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}
    if kind in simple:
        return {"type": simple[kind]}
    if kind == "list":
        return {"type": "array", "items": {} if node[1] is None else schema_for_node(node[1])}
    if kind == "dict":
        return {"type": "object", "additionalProperties": True if node[1] is None else schema_for_node(node[1])}
    if kind == "optional":
        return {"anyOf": [schema_for_node(node[1], object_schema), {"type": "null"}]}
    if kind == "literal":
        values = list(node[1])
        schema: dict[str, Any] = {"enum": values}
        kinds = {json_type(value) for value in values}
        if len(kinds) == 1:
            schema["type"] = kinds.pop()
        return schema
    if kind == "dspy.History":
        return HISTORY_SCHEMA
    if kind == "dspy.Image":
        return IMAGE_SCHEMA
    if kind == "object":
        return dict(object_schema) if object_schema else {"type": "object"}
    return {}  # a model by import path: unknown without pydantic and the user's code


def json_type(value: Any) -> str:
    """A value's JSON Schema type name: ``null``, ``boolean``, ``integer``, ``number``, ``string``, ``array``, ``object``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _resolve(schema: Any, defs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Follow ``$ref`` (to ``#/$defs/...`` or ``#/definitions/...``) and collect ``$defs`` on the way."""
    for _ in range(64):
        if not isinstance(schema, dict):
            return schema, defs
        for key in ("$defs", "definitions"):
            if isinstance(schema.get(key), dict):
                defs = {**defs, **schema[key]}
        ref = schema.get("$ref")
        if not isinstance(ref, str):
            return schema, defs
        name = ref.rsplit("/", 1)[-1]
        if name not in defs:
            return {}, defs  # an unknown reference checks nothing rather than refusing everything
        schema = defs[name]
    return {}, defs


# -- checking -------------------------------------------------------------------------------------
def describe(schema: Any, defs: dict[str, Any] | None = None, depth: int = 0) -> str:
    """A short human name for what ``schema`` accepts (``number``, ``list of string``, ``Flight object``)."""
    schema, defs = _resolve(schema, dict(defs or {}))
    if not isinstance(schema, dict) or not schema or depth > 4:
        return "any value"
    if "const" in schema:
        return repr(schema["const"])
    if isinstance(schema.get("enum"), list):
        return "one of " + ", ".join(repr(value) for value in schema["enum"])
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            return " or ".join(describe(option, defs, depth + 1) for option in schema[key])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " or ".join(str(k) for k in kind)
    if kind == "array":
        items = schema.get("items")
        return f"list of {describe(items, defs, depth + 1)}" if items else "list"
    if kind == "object" or "properties" in schema:
        title = schema.get("title")
        if isinstance(schema.get("properties"), dict):
            return f"{title} object" if title else "object with " + ", ".join(schema["properties"])
        extra = schema.get("additionalProperties")
        return f"map of {describe(extra, defs, depth + 1)}" if isinstance(extra, dict) else "map"
    if "allOf" in schema:
        return " and ".join(describe(option, defs, depth + 1) for option in schema["allOf"])
    return str(kind) if kind else "any value"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _same(a: Any, b: Any) -> bool:
    """JSON equality: ``True`` is not ``1``; ``1`` is ``1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    numbers = isinstance(a, int | float), isinstance(b, int | float)
    if any(numbers):
        return all(numbers) and a == b
    return bool(a == b)


def _has_type(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    found = json_type(value)
    return found == kind


def mismatch(value: Any, schema: Any, where: str = "value", defs: dict[str, Any] | None = None) -> str | None:
    """``None`` if ``value`` (plain JSON data) fits ``schema``; else one line naming where and what was expected."""
    schema, defs = _resolve(schema, dict(defs or {}))
    if not isinstance(schema, dict) or not schema:
        return None
    if "const" in schema and not _same(value, schema["const"]):
        return f"{where}: expected {schema['const']!r}, got {_show(value)}"
    if isinstance(schema.get("enum"), list) and not any(_same(value, choice) for choice in schema["enum"]):
        return f"{where}: expected {describe(schema, defs)}, got {_show(value)}"
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            found = [mismatch(value, option, where, defs) for option in options]
            if all(found):
                fitting = [p for p in found if p and not p.startswith(f"{where}: expected")]
                if len(fitting) == 1:  # the value has the right shape for one option: its problem is the news
                    return fitting[0]
                return f"{where}: expected {describe({key: options}, defs)}, got {_show(value)}"
    for option in schema.get("allOf") or ():
        problem = mismatch(value, option, where, defs)
        if problem:
            return problem
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_has_type(value, str(k)) for k in kinds):
            actual = _JSON_TYPES.get(json_type(value), json_type(value))
            shown = "None" if value is None else f"{actual} {_show(value)}"
            return f"{where}: expected {describe(schema, defs)}, got {shown}"
    if isinstance(value, list):
        return _array_mismatch(value, schema, where, defs)
    if isinstance(value, dict):
        return _object_mismatch(value, schema, where, defs)
    return None


def _array_mismatch(value: list[Any], schema: dict[str, Any], where: str, defs: dict[str, Any]) -> str | None:
    prefix = schema.get("prefixItems")
    items = schema.get("items")
    for index, item in enumerate(value):
        if isinstance(prefix, list) and index < len(prefix):
            problem = mismatch(item, prefix[index], f"{where}[{index}]", defs)
        elif isinstance(prefix, list) and items is False:
            problem = f"{where}: expected at most {len(prefix)} items, got {len(value)}"
        else:
            problem = mismatch(item, items, f"{where}[{index}]", defs) if isinstance(items, dict) else None
        if problem:
            return problem
    if isinstance(prefix, list) and len(value) < len(prefix) and schema.get("minItems", len(prefix)):
        return f"{where}: expected {len(prefix)} items, got {len(value)}"
    return None


def _object_mismatch(value: dict[str, Any], schema: dict[str, Any], where: str, defs: dict[str, Any]) -> str | None:
    found = schema.get("properties")
    properties: dict[str, Any] = found if isinstance(found, dict) else {}
    missing = [name for name in schema.get("required") or () if name not in value]
    if missing:
        return f"{where}: missing {', '.join(repr(name) for name in missing)} (required by {describe(schema, defs)})"
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        if key in properties:
            problem = mismatch(item, properties[key], f"{where}.{key}", defs)
        elif extra is False:
            problem = f"{where}: unexpected key {key!r} (allowed: {', '.join(properties) or 'none'})"
        else:
            problem = mismatch(item, extra, f"{where}.{key}", defs) if isinstance(extra, dict) else None
        if problem:
            return problem
    return None


# -- generating -----------------------------------------------------------------------------------
_DEEP = 3  # below this many levels, stop where the schema allows (empty lists, None, required keys only)
_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "12:00:00",
    "email": "synthetic@example.com",
    "uri": "https://example.com/synthetic",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def generate(schema: Any, rand: Randomness, name: str = "value", defs: dict[str, Any] | None = None) -> Any:
    """A value that fits ``schema`` (``mismatch`` finds nothing), drawn from ``rand`` (deterministic)."""
    return _generate(schema, rand, name, dict(defs or {}), 0)


def _generate(schema: Any, rand: Randomness, name: str, defs: dict[str, Any], depth: int) -> Any:
    schema, defs = _resolve(schema, defs)
    if not isinstance(schema, dict) or not schema:
        return f"synthetic {name} {rand.word()}"
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][rand.next(len(schema["enum"]))]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            real = [option for option in options if _resolve(option, defs)[0] != {"type": "null"}]
            if depth > _DEEP and len(real) < len(options):
                return None  # deep in a recursive model: stop where the schema allows
            return _generate((real or options)[0], rand, name, defs, depth + 1)
    if isinstance(schema.get("allOf"), list) and schema["allOf"]:
        return _generate(schema["allOf"][0], rand, name, defs, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "string":
        fmt = schema.get("format")
        return _FORMATS[fmt] if fmt in _FORMATS else f"synthetic {name} {rand.word()}"
    if kind == "integer":
        return rand.next(100)
    if kind == "number":
        return rand.next(10_000) / 100
    if kind == "boolean":
        return rand.next(2) == 1
    if kind == "null":
        return None
    if kind == "array":
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list):
            return [_generate(item, rand, f"{name} item", defs, depth + 1) for item in prefix]
        count = 0 if depth > _DEEP else 2 + rand.next(2)
        return [_generate(schema.get("items"), rand, f"{name} item", defs, depth + 1) for _ in range(count)]
    return _generate_object(schema, rand, name, defs, depth)


def _generate_object(schema: dict[str, Any], rand: Randomness, name: str, defs: dict[str, Any], depth: int) -> Any:
    properties = schema.get("properties")
    if isinstance(properties, dict) and properties:
        required = set(schema.get("required") or ())
        return {
            key: _generate(sub, rand, key, defs, depth + 1)
            for key, sub in properties.items()
            if depth <= _DEEP or key in required
        }
    extra = schema.get("additionalProperties", True)
    if extra is False or depth > _DEEP:
        return {}
    if isinstance(extra, dict) and extra:
        return {f"key_{rand.word()}": _generate(extra, rand, f"{name} value", defs, depth + 1)}
    return {f"key_{rand.word()}": f"value {rand.word()}"}


# -- whole answers ----------------------------------------------------------------------------------
def answer_mismatch(outputs: Any, schemas: dict[str, Any], names: list[str] | None = None) -> dict[str, Any] | None:
    """``None`` if ``outputs`` is an answer a program with these output ``schemas`` could return; else
    ``{"message", "field", "expected"}``. ``names``: the complete list of output fields (every one
    must be there and no other), or ``None`` when only the fields present are known."""
    if not isinstance(outputs, dict):
        return {"message": f"outputs must be a map of field → value, got {_show(outputs)}", "field": None}
    if names:
        missing = [name for name in names if name not in outputs]
        unknown = [name for name in outputs if name not in names]
        if missing or unknown:
            return {
                "message": f"the outputs are {', '.join(names)}; missing {missing}, unknown {unknown}",
                "field": (missing or unknown)[0],
                "expected": None,
            }
    for name, value in outputs.items():
        schema = schemas.get(name)
        problem = mismatch(value, schema, name) if schema else None
        if problem:
            return {"message": problem, "field": name, "expected": describe(schema)}
    return None
