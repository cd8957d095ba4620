"""Read a DSPy prompt out of a Gemini request body and write a parseable answer.

No I/O here: the fake server hands a parsed ``generateContent`` body to
:func:`read_prompt` and renders the reply with :func:`render_answer`.  The answer
is deterministic per prompt (a SHA-256 of the prompt text seeds every value) and
valid for the type each output field declares, so DSPy's adapters parse it.

Where the field list comes from, most precise first:

1. ``generationConfig.responseJsonSchema`` / ``responseSchema`` (JSONAdapter
   with structured outputs): the schema itself.
2. The system instruction's ``Your output fields are:`` list: names and the
   Python type strings DSPy printed, refined by the ``# note: the value you
   produce ...`` lines (JSON schema, enum choices).
3. The last user turn's reminder (``Respond with the corresponding output
   fields, starting with the field `[[ ## x ## ]]` ...``).

The output mode follows the adapter that wrote the prompt: ``[[ ## field ## ]]``
sections (ChatAdapter), one JSON object (JSONAdapter or ``responseMimeType:
application/json``), flat XML tags (XMLAdapter), or a plain sentence when the
prompt names no output fields.
"""

from __future__ import annotations

import ast
import enum
import hashlib
import json
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

__all__ = [
    "OutputField",
    "OutputMode",
    "PromptSpec",
    "answer_values",
    "read_prompt",
    "render_answer",
    "schema_for_type",
    "value_for_schema",
]

JsonSchema = dict[str, Any]

_WORDS = (
    "amber", "basil", "cedar", "delta", "ember", "fjord", "grove", "harbor", "indigo", "juniper",
    "kelp", "lumen", "maple", "nectar", "onyx", "pebble", "quartz", "river", "saffron", "tundra",
    "umber", "violet", "willow", "xenon", "yarrow", "zephyr",
)  # fmt: skip


class OutputMode(enum.Enum):
    """How the prompt asked for its answer to be laid out."""

    CHAT = "chat"  # [[ ## field ## ]] sections ending with [[ ## completed ## ]]
    JSON = "json"  # one JSON object
    XML = "xml"  # <field>value</field> per field
    PLAIN = "plain"  # no output fields found: one sentence


@dataclass(frozen=True, slots=True)
class OutputField:
    """One output field the prompt asks for, with a JSON schema its value must satisfy."""

    name: str
    type_str: str
    schema: JsonSchema


@dataclass(frozen=True, slots=True)
class PromptSpec:
    """What a request asks for: the layout, the fields, and the text that seeds the answer."""

    mode: OutputMode
    fields: tuple[OutputField, ...]
    prompt_text: str
    defs: JsonSchema  # "$defs" of a response schema, for "$ref" resolution


# ─── Reading the request ────────────────────────────────────────────────────


def _get(mapping: Mapping[str, Any], camel: str) -> Any:
    """A field by its camelCase name or its snake_case twin, as Gemini accepts both."""
    if camel in mapping:
        return mapping[camel]
    snake = re.sub(r"(?<!^)([A-Z])", r"_\1", camel).lower()
    return mapping.get(snake)


def _parts_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, Mapping):
        return ""
    parts = content.get("parts")
    if not isinstance(parts, list):
        return ""
    return "".join(str(p.get("text", "")) for p in parts if isinstance(p, Mapping))


def _turns(body: Mapping[str, Any]) -> list[tuple[str, str]]:
    contents = body.get("contents")
    if isinstance(contents, Mapping):  # a single Content is accepted as well as a list
        contents = [contents]
    if not isinstance(contents, list):
        return []
    return [(str(c.get("role") or "user") if isinstance(c, Mapping) else "user", _parts_text(c)) for c in contents]


def read_prompt(body: Mapping[str, Any]) -> PromptSpec:
    """Find the layout and output fields a ``generateContent`` body asks for."""
    system = _parts_text(_get(body, "systemInstruction"))
    turns = _turns(body)
    last_user = next((text for role, text in reversed(turns) if role != "model"), "")
    prompt_text = system + "\n\x00\n" + "\n\x00\n".join(f"{role}:{text}" for role, text in turns)

    config = _get(body, "generationConfig")
    config = config if isinstance(config, Mapping) else {}
    mime = str(_get(config, "responseMimeType") or "")
    schema = _get(config, "responseJsonSchema") or _get(config, "responseSchema")

    if isinstance(schema, Mapping) and isinstance(schema.get("properties"), Mapping):
        defs = schema.get("$defs") if isinstance(schema.get("$defs"), Mapping) else {}
        fields = tuple(
            OutputField(name=str(name), type_str="", schema=dict(sub) if isinstance(sub, Mapping) else {})
            for name, sub in schema["properties"].items()
        )
        return PromptSpec(OutputMode.JSON, fields, prompt_text, dict(defs or {}))

    fields = _fields_from_system(system) or _fields_from_reminder(last_user)
    if mime == "application/json" or "Respond with a JSON object" in last_user:
        mode = OutputMode.JSON
    elif "wrapped in XML tags" in last_user:
        mode = OutputMode.XML
    elif fields:
        mode = OutputMode.CHAT
    else:
        mode = OutputMode.PLAIN
    return PromptSpec(mode, fields, prompt_text, {})


_FIELD_LINE = re.compile(r"^\d+\. `(\w+)` \(", re.MULTILINE)
_NOTE = re.compile(r"^\{(\w+)\}\s+# note: the value you produce (.*)$")
_JSON_NOTE_LINE = re.compile(r'^\s*"(\w+)": (".*")\s*,?\s*$')


def _balanced(text: str, start: int) -> str:
    """The text from ``start`` up to the ``)`` that closes the ``(`` just before it."""
    depth = 1
    for i in range(start, len(text)):
        if text[i] in "([{":
            depth += 1
        elif text[i] in ")]}":
            depth -= 1
            if depth == 0:
                return text[start:i]
    return text[start:]


def _notes(system: str) -> dict[str, str]:
    """``# note: the value you produce ...`` per field, from Chat, XML and JSON layouts."""
    notes: dict[str, str] = {}
    for line in system.splitlines():
        candidate = line
        quoted = _JSON_NOTE_LINE.match(line)
        if quoted:  # JSONAdapter writes the note inside a JSON string
            try:
                candidate = str(json.loads(quoted.group(2)))
            except json.JSONDecodeError:
                continue
        match = _NOTE.match(candidate.strip())
        if match:
            notes[match.group(1)] = match.group(2)
    return notes


def _fields_from_system(system: str) -> tuple[OutputField, ...]:
    start = system.find("Your output fields are:")
    if start < 0:
        return ()
    end = system.find("All interactions will be structured", start)
    section = system[start : end if end >= 0 else len(system)]
    notes = _notes(system)
    fields = []
    for match in _FIELD_LINE.finditer(section):
        name = match.group(1)
        type_str = _balanced(section, match.end())
        fields.append(OutputField(name, type_str, _field_schema(type_str, notes.get(name, ""))))
    return tuple(fields)


_CHAT_REMINDER = re.compile(r"`\[\[ ## (\w+) ## \]\]`(?: \(must be formatted as a valid Python ([^`]+?)\))?(?=, |$)")
_JSON_REMINDER = re.compile(r"`(\w+)`(?: \(must be formatted as a valid Python ([^`]+?)\))?(?=, then |\.$|$)")
_XML_REMINDER = re.compile(r"`<(\w+)>`")


def _fields_from_reminder(user: str) -> tuple[OutputField, ...]:
    """Fallback when no system instruction lists the fields: the user turn's reminder."""
    found: list[tuple[str, str]] = []
    for line in user.splitlines():
        if line.startswith("Respond with the corresponding output fields, starting"):
            found = [(m.group(1), m.group(2) or "str") for m in _CHAT_REMINDER.finditer(line)]
            found = [(n, t) for n, t in found if n != "completed"]
        elif line.startswith("Respond with a JSON object in the following order of fields:"):
            found = [(m.group(1), m.group(2) or "str") for m in _JSON_REMINDER.finditer(line)]
        elif line.startswith("Respond with the corresponding output fields wrapped in XML tags"):
            found = [(m.group(1), "str") for m in _XML_REMINDER.finditer(line)]
    return tuple(OutputField(n, t, _field_schema(t, "")) for n, t in found)


# ─── Types to schemas ───────────────────────────────────────────────────────


def _field_schema(type_str: str, note: str) -> JsonSchema:
    marker = "must adhere to the JSON schema: "
    if marker in note:
        try:
            loaded = json.loads(note[note.index(marker) + len(marker) :])
        except json.JSONDecodeError:
            loaded = None
        if isinstance(loaded, dict):
            return loaded
    schema = schema_for_type(type_str)
    choices_marker = "one of: "
    if "enum" not in schema and choices_marker in note:  # an Enum class: DSPy lists its values
        choices = [c.strip() for c in note[note.index(choices_marker) + len(choices_marker) :].split(";")]
        return {"type": "string", "enum": [c for c in choices if c]}
    return schema


_ARRAY_NAMES = {"list", "List", "Sequence", "set", "Set", "frozenset", "FrozenSet", "Iterable"}
_DICT_NAMES = {"dict", "Dict", "Mapping", "MutableMapping"}
_SCALARS: dict[str, JsonSchema] = {
    "str": {"type": "string"},
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "bool": {"type": "boolean"},
    "None": {"type": "null"},
    "NoneType": {"type": "null"},
}


def schema_for_type(type_str: str) -> JsonSchema:
    """A JSON schema for a Python type string as DSPy prints it (``list[str]``, ``Literal['a', 'b']``)."""
    try:
        node = ast.parse(type_str.strip() or "str", mode="eval").body
    except SyntaxError:
        return {"type": "string"}
    return _schema_for_node(node)


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Constant) and node.value is None:
        return "None"
    return ""


def _schema_for_node(node: ast.expr) -> JsonSchema:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _union([node.left, node.right])
    if isinstance(node, ast.Subscript):
        head = _name(node.value)
        args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        if head == "Literal":
            values = [a.value for a in args if isinstance(a, ast.Constant)]
            return {"enum": values} if values else {"type": "string"}
        if head in ("Optional", "Union"):
            return _union(args)
        if head in _ARRAY_NAMES:
            return {"type": "array", "items": _schema_for_node(args[0])}
        if head in ("tuple", "Tuple"):
            if len(args) == 2 and isinstance(args[1], ast.Constant) and args[1].value is Ellipsis:
                return {"type": "array", "items": _schema_for_node(args[0])}
            return {"type": "array", "prefixItems": [_schema_for_node(a) for a in args]}
        if head in _DICT_NAMES:
            value = _schema_for_node(args[1]) if len(args) > 1 else {"type": "string"}
            return {"type": "object", "additionalProperties": value}
        return {"type": "string"}
    name = _name(node)
    if name in _SCALARS:
        return dict(_SCALARS[name])
    if name in _ARRAY_NAMES:
        return {"type": "array", "items": {"type": "string"}}
    if name in _DICT_NAMES:
        return {"type": "object", "additionalProperties": {"type": "string"}}
    return {"type": "string"}


def _union(nodes: list[ast.expr]) -> JsonSchema:
    options = [_schema_for_node(n) for n in nodes]
    return {"anyOf": options}


# ─── Values ─────────────────────────────────────────────────────────────────


def _rng(spec: PromptSpec, field: str, seed: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}\x00{spec.prompt_text}\x00{field}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _phrase(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def value_for_schema(schema: Any, rng: random.Random, defs: Mapping[str, Any], *, depth: int = 0) -> Any:
    """A value valid for ``schema`` (the subset DSPy and pydantic emit), drawn from ``rng``."""
    if not isinstance(schema, Mapping) or depth > 8:
        return _phrase(rng, 2)
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = defs.get(ref.rsplit("/", 1)[-1])
        return value_for_schema(target, rng, defs, depth=depth + 1)
    local_defs = {**defs, **schema.get("$defs", {})} if isinstance(schema.get("$defs"), Mapping) else defs
    if "const" in schema:
        return schema["const"]
    enum_values = schema.get("enum")
    if isinstance(enum_values, list) and enum_values:
        return rng.choice(enum_values)
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            usable = [o for o in options if not (isinstance(o, Mapping) and o.get("type") == "null")]
            return value_for_schema((usable or options)[0], rng, local_defs, depth=depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    kind = str(kind).lower() if kind is not None else ("object" if "properties" in schema else "string")
    if kind == "string":
        return _string_value(schema, rng)
    if kind == "integer":
        low, high = _bounds(schema, 0, 100)
        return rng.randint(int(low), int(max(low, high)))
    if kind == "number":
        low, high = _bounds(schema, 0.0, 100.0)
        return round(rng.uniform(low, max(low, high)), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "array":
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list):
            return [value_for_schema(s, rng, local_defs, depth=depth + 1) for s in prefix]
        low = int(schema.get("minItems", 0))
        high = int(schema.get("maxItems", max(low, 3)))
        count = max(low, min(high, rng.randint(2, 3)))
        return [value_for_schema(schema.get("items"), rng, local_defs, depth=depth + 1) for _ in range(count)]
    if kind == "object":
        props = schema.get("properties")
        if isinstance(props, Mapping) and props:
            return {str(k): value_for_schema(v, rng, local_defs, depth=depth + 1) for k, v in props.items()}
        extra = schema.get("additionalProperties", True)
        if extra is False:
            return {}
        value_schema = extra if isinstance(extra, Mapping) else {"type": "string"}
        return {rng.choice(_WORDS): value_for_schema(value_schema, rng, local_defs, depth=depth + 1)}
    return _phrase(rng, 2)


def _bounds(schema: Mapping[str, Any], low: float, high: float) -> tuple[float, float]:
    if "minimum" in schema:
        low = float(schema["minimum"])
    if "exclusiveMinimum" in schema:
        low = float(schema["exclusiveMinimum"]) + 1
    if "maximum" in schema:
        high = float(schema["maximum"])
    if "exclusiveMaximum" in schema:
        high = float(schema["exclusiveMaximum"]) - 1
    if high < low:
        high = low + 100
    return low, high


def _string_value(schema: Mapping[str, Any], rng: random.Random) -> str:
    fmt = schema.get("format")
    if fmt == "date":
        return f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if fmt == "date-time":
        return f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00Z"
    text = _phrase(rng, rng.randint(2, 4))
    min_len = int(schema.get("minLength", 0))
    while len(text) < min_len:
        text += " " + rng.choice(_WORDS)
    if "maxLength" in schema:
        text = text[: max(int(schema["maxLength"]), 0)]
    return text


def answer_values(spec: PromptSpec, overrides: Mapping[str, Any] | None = None, *, seed: str = "") -> dict[str, Any]:
    """One value per output field: ``overrides`` first, the rest derived from the prompt."""
    overrides = dict(overrides or {})
    values: dict[str, Any] = {}
    for field in spec.fields:
        if field.name in overrides:
            values[field.name] = overrides.pop(field.name)
        elif field.name == "reasoning" and field.schema.get("type") == "string":
            values[field.name] = _reasoning(_rng(spec, field.name, seed))
        else:
            values[field.name] = value_for_schema(field.schema, _rng(spec, field.name, seed), spec.defs)
    values.update(overrides)  # keys the prompt did not ask for still go out, last
    return values


def _reasoning(rng: random.Random) -> str:
    return f"Considering the {_phrase(rng, 2)}, the {_phrase(rng, 1)} follows step by step."


# ─── Rendering ──────────────────────────────────────────────────────────────


def _chat_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, ensure_ascii=False)


def render_answer(spec: PromptSpec, overrides: Mapping[str, Any] | None = None, *, seed: str = "") -> str:
    """The model text for ``spec``: deterministic per prompt, parseable by the adapter that asked."""
    mode = spec.mode
    if mode is OutputMode.PLAIN and not overrides:
        rng = _rng(spec, "", seed)
        return f"This is a deterministic fake answer about {_phrase(rng, 3)}."
    values = answer_values(spec, overrides, seed=seed)
    if mode is OutputMode.JSON:
        return json.dumps(values, ensure_ascii=False, indent=2)
    if mode is OutputMode.XML:
        return "\n".join(f"<{k}>{escape(_chat_value(v))}</{k}>" for k, v in values.items())
    sections = [f"[[ ## {k} ## ]]\n{_chat_value(v)}" for k, v in values.items()]
    return "\n\n".join([*sections, "[[ ## completed ## ]]"])
