"""Python values and types on the real worker's side of the wire.

``python_type`` turns a field's type text (the protocol's grammar, ``protocol/_signature.py``) into
the type DSPy builds a signature with — pydantic models by import path through a ``resolve``
function that enforces the allowed module prefixes (``import_resolver``), JSON Schema ``object``
fields through ``model_from_schema``; ``field_dict`` / ``signature_dict`` describe a DSPy
signature's fields on the wire (type text + JSON Schema); ``wire_inputs`` turns wire inputs into
``dspy.History`` / ``dspy.Image`` / models; ``plain`` turns whatever a DSPy program returns into
msgpack/JSON-safe data (JSON mode: pydantic models → ``model_dump(mode="json")``); ``numbers`` keeps
the token counts of a usage map. Kept apart from the handler set so types grow without touching
how programs run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date, datetime, time
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal, Optional, Union

from dspy_bridge.protocol._schema import HISTORY_SCHEMA, IMAGE_SCHEMA
from dspy_bridge.protocol._signature import SignatureError, parse_type
from dspy_bridge.protocol._taxonomy import ErrorType
from dspy_bridge.worker._base import HandlerFailure

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "OBJECT_MARKER",
    "field_dict",
    "import_resolver",
    "model_from_schema",
    "needs_python_types",
    "numbers",
    "output_types",
    "plain",
    "python_type",
    "schema_of",
    "signature_dict",
    "type_text",
    "wire_inputs",
]

#: Set on models built from a structured field's JSON Schema: their type text is ``object``.
OBJECT_MARKER = "__bridge_object__"

_SCALARS: dict[str, Any] = {"str": str, "int": int, "float": float, "bool": bool}
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what msgpack can carry


def _invalid(message: str, **details: Any) -> HandlerFailure:
    return HandlerFailure(ErrorType.INVALID_REQUEST, message, details=details or None)


def import_resolver(allowed_prefixes: tuple[str, ...] | list[str]) -> Callable[[str], Any]:
    """A ``resolve`` for ``python_type``: imports ``pkg.module:Model`` only under ``allowed_prefixes``.

    A prefix allows the module itself and everything below it (``myapp`` allows ``myapp.models``,
    not ``myapplication``). The result must be a pydantic model class.
    """
    prefixes = tuple(prefix.strip().rstrip(".") for prefix in allowed_prefixes if prefix.strip())

    def resolve(path: str) -> Any:
        module_name, _, attribute = path.partition(":")
        if not any(module_name == prefix or module_name.startswith(prefix + ".") for prefix in prefixes):
            raise _invalid(
                f"type {path!r} names a module outside the allowed module prefixes "
                f"({', '.join(prefixes) or 'none are set'}); add its package to PoolConfig.allowed_modules "
                "(plugin ini bridge_allowed_modules)",
                argument="allowed_modules",
            )
        import importlib

        try:
            found: Any = importlib.import_module(module_name)
            for part in attribute.split("."):
                found = getattr(found, part)
        except (ImportError, AttributeError) as exc:
            raise _invalid(f"cannot import type {path!r}: {type(exc).__name__}: {exc}", argument="signature") from None
        return found

    return resolve


def _refuse_models(path: str) -> Any:
    raise _invalid(
        f"type {path!r} names a pydantic model, but this worker allows no modules; set PoolConfig.allowed_modules",
        argument="allowed_modules",
    )


def python_type(
    type_text: str,
    resolve: Callable[[str], Any] | None = None,
    *,
    schema: dict[str, Any] | None = None,
    name: str = "Field",
) -> Any:
    """The real Python type for a field's type text.

    ``resolve(path)`` imports a pydantic model named ``pkg.module:Model`` (``import_resolver``
    enforces the allowed prefixes; without one, models are refused). ``schema`` is the JSON
    Schema of an ``object`` field, built into a pydantic model called after ``name``.
    """
    try:
        node = parse_type(type_text)
    except SignatureError as exc:
        raise _invalid(f"unsupported field type {type_text!r}: {exc}", argument="signature") from None
    return _from_node(node, resolve or _refuse_models, schema, name)


def _from_node(node: tuple[Any, ...], resolve: Callable[[str], Any], schema: Any, name: str) -> Any:
    kind = node[0]
    if kind in _SCALARS:
        return _SCALARS[kind]
    if kind == "list":
        return list if node[1] is None else list[_from_node(node[1], resolve, schema, name)]  # type: ignore[misc]
    if kind == "dict":
        return dict if node[1] is None else dict[str, _from_node(node[1], resolve, schema, name)]  # type: ignore[misc]
    if kind == "optional":
        return Optional[_from_node(node[1], resolve, schema, name)]  # noqa: UP045 - built at run time
    if kind == "literal":
        return Literal[node[1]]
    if kind in ("dspy.History", "dspy.Image"):
        import dspy

        return getattr(dspy, kind.split(".")[1])
    if kind == "model":
        from pydantic import BaseModel

        found = resolve(node[1])
        if not (isinstance(found, type) and issubclass(found, BaseModel)):
            raise _invalid(f"type {node[1]!r} is not a pydantic model class (got {found!r})", argument="signature")
        return found
    if kind == "object":
        return model_from_schema(schema or {}, name)
    raise _invalid(f"unsupported field type {kind!r}", argument="signature")


# -- JSON Schema -> pydantic model (structured signature fields given as {"type": "object", "schema": ...}) --
def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.replace("-", "_").split("_") if part) or "Model"


def model_from_schema(schema: dict[str, Any], name: str) -> Any:
    """A pydantic model for an object JSON Schema, so DSPy's adapters ask for and parse that JSON.

    Understands the subset pydantic writes: properties/required, nested objects, ``$defs``/``$ref``,
    arrays, ``additionalProperties`` maps, enum/const, ``anyOf`` with null, descriptions.
    """
    built = _schema_type(schema, str(schema.get("title") or _camel(name)), dict(schema.get("$defs") or {}), {})
    if not (isinstance(built, type) and hasattr(built, "model_fields")):
        raise _invalid(f"the schema of field {name!r} must describe an object with properties", argument="signature")
    return built


def _schema_type(schema: Any, name: str, defs: dict[str, Any], made: dict[str, Any]) -> Any:
    if not isinstance(schema, dict) or not schema:
        return Any
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = ref.rsplit("/", 1)[-1]
        if target not in made:
            made[target] = _schema_type(defs.get(target, {}), target, defs, made)
        return made[target]
    if "const" in schema:
        return Literal[schema["const"]]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return Literal[tuple(schema["enum"])]
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            options = [_schema_type(option, name, defs, made) for option in schema[key]]
            return Union[tuple(options)]  # noqa: UP007 - built at run time
    kind = schema.get("type")
    if isinstance(kind, list):
        return Union[tuple(_schema_type({**schema, "type": k}, name, defs, made) for k in kind)]  # noqa: UP007
    simple = {"string": str, "integer": int, "number": float, "boolean": bool, "null": type(None)}
    if kind in simple:
        return simple[kind]
    if kind == "array":
        return list[_schema_type(schema.get("items"), f"{name}Item", defs, made)]  # type: ignore[misc]
    properties = schema.get("properties")
    if isinstance(properties, dict) and properties:
        return _model(schema, properties, name, defs, made)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict) and extra:
        return dict[str, _schema_type(extra, f"{name}Value", defs, made)]  # type: ignore[misc]
    return dict if kind == "object" else Any


def _model(schema: dict[str, Any], properties: dict[str, Any], name: str, defs: dict[str, Any], made: Any) -> Any:
    from pydantic import ConfigDict, Field, create_model

    required = set(schema.get("required") or ())
    fields: dict[str, Any] = {}
    for index, (key, sub) in enumerate(properties.items()):
        annotation = _schema_type(sub, _camel(key), defs, made)
        options: dict[str, Any] = {}
        if isinstance(sub, dict) and sub.get("description"):
            options["description"] = str(sub["description"])
        attribute = key if key.isidentifier() and not key.startswith("_") else f"field_{index}"
        if attribute != key:
            options["alias"] = key
        if key in required:
            fields[attribute] = (annotation, Field(**options))
        else:
            default = sub.get("default") if isinstance(sub, dict) else None
            fields[attribute] = (Optional[annotation], Field(default=default, **options))  # noqa: UP045
    config = ConfigDict(extra="forbid" if schema.get("additionalProperties") is False else "ignore")
    model = create_model(_camel(name), __config__=config, **fields)
    if schema.get("description"):
        model.__doc__ = str(schema["description"])
    setattr(model, OBJECT_MARKER, True)
    return model


# -- describing fields on the wire ------------------------------------------------------------
def type_text(annotation: Any) -> str:
    """The grammar's text for a Python type (``Optional[list[str]]``, ``myapp.models:Flight``, ``object``)."""
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation in (str, int, float, bool, list, dict):
        return str(annotation.__name__)
    if origin is Literal:
        return f"Literal[{', '.join(repr(arg) for arg in args)}]"
    if origin in (Union, getattr(__import__("types"), "UnionType", Union)) and type(None) in args:
        rest = [arg for arg in args if arg is not type(None)]
        if len(rest) == 1:
            return f"Optional[{type_text(rest[0])}]"
    if origin is list and len(args) == 1:
        return f"list[{type_text(args[0])}]"
    if origin is dict and len(args) == 2 and args[0] is str:
        return f"dict[str, {type_text(args[1])}]"
    if isinstance(annotation, type):
        module = annotation.__module__
        if module.startswith("dspy.") and annotation.__name__ in ("History", "Image"):
            return f"dspy.{annotation.__name__}"
        if getattr(annotation, OBJECT_MARKER, False):
            return "object"
        if hasattr(annotation, "model_json_schema"):
            return f"{module}:{annotation.__qualname__}"
        return annotation.__name__
    return repr(annotation).replace("typing.", "")


def schema_of(annotation: Any) -> dict[str, Any]:
    """The JSON Schema of a field's values (``TypeAdapter(t).json_schema()``; the wire forms of History/Image)."""
    text = type_text(annotation)
    if text == "dspy.History":
        return HISTORY_SCHEMA
    if text == "dspy.Image":
        return IMAGE_SCHEMA
    from pydantic import TypeAdapter

    try:
        schema: dict[str, Any] = TypeAdapter(annotation).json_schema()
    except Exception:  # a type pydantic cannot describe: nothing to check against
        return {}
    return schema


def field_dict(name: str, field: Any) -> dict[str, Any]:
    """One field of a DSPy signature as the wire carries it: ``{name, type, description, prefix, schema}``."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    description = str(extra.get("desc") or field.description or "")
    return {
        "name": name,
        "type": type_text(field.annotation),
        "description": "" if description == f"${{{name}}}" else description,  # DSPy's placeholder: none given
        "prefix": str(extra.get("prefix") or ""),
        "schema": schema_of(field.annotation),
    }


def signature_dict(signature: Any) -> dict[str, Any]:
    """A DSPy signature as ``{inputs: [field], outputs: [field], instructions}`` (for create_program results)."""
    return {
        "inputs": [field_dict(name, field) for name, field in signature.input_fields.items()],
        "outputs": [field_dict(name, field) for name, field in signature.output_fields.items()],
        "instructions": str(signature.instructions or ""),
    }


def output_types(signature: Any) -> dict[str, str]:
    """``{output field: type text}`` of a DSPy signature (``Result.output_types``)."""
    return {name: type_text(field.annotation) for name, field in signature.output_fields.items()}


def needs_python_types(type_texts: list[str]) -> bool:
    """Whether a signature names types only ``python_type`` builds (models, ``object``): DSPy's own
    string parser handles the rest."""
    return any(":" in text or text == "object" or "object]" in text for text in type_texts)


def wire_inputs(signature: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    """Inputs as DSPy wants them: ``{"messages"}`` → ``dspy.History``, ``{"url"}``/``{"data", "mime"}`` →
    ``dspy.Image``, maps → pydantic models, for fields of those types (others pass through untouched)."""
    converted = dict(inputs)
    for name, field in signature.input_fields.items():
        if name not in inputs or not _rich(field.annotation):
            continue
        value = _image_source(inputs[name]) if type_text(field.annotation).endswith("dspy.Image") else inputs[name]
        from pydantic import TypeAdapter, ValidationError

        try:
            converted[name] = TypeAdapter(field.annotation).validate_python(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in (name, *first["loc"]))
            raise _invalid(
                f"input {where}: {first['msg']} (field {name!r} is {type_text(field.annotation)})",
                argument="inputs",
                field=name,
            ) from None
    return converted


def _rich(annotation: Any) -> bool:
    text = type_text(annotation)
    return ":" in text or "dspy." in text or "object" in text


def _image_source(value: Any) -> Any:
    if isinstance(value, dict) and "data" in value and "url" not in value:
        return {"url": f"data:{value.get('mime') or 'image/png'};base64,{value['data']}"}
    return value


def plain(value: Any) -> Any:
    """A msgpack/JSON-safe copy of ``value``: pydantic models, enums, tuples and dates become plain data."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value) if _INT_MIN <= value <= _INT_MAX else str(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return str(value)  # str subclasses (DSPy's Reasoning, str enums) become plain str
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, Enum):
        return plain(value.value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump):  # pydantic models, without importing pydantic here
        return plain(model_dump(mode="json"))
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(item) for item in value]
    return str(value)


def numbers(usage: Mapping[str, Any]) -> dict[str, int | float]:
    """Token counts only (DSPy also reports ``None`` detail fields and nested dicts)."""
    return {
        key: value for key, value in usage.items() if isinstance(value, int | float) and not isinstance(value, bool)
    }
