"""Host side of typed outputs: rebuild pydantic models (and other Python types) from JSON-mode data.

Workers answer in JSON-mode data (a pydantic model arrives as its ``model_dump(mode="json")``) and
name each output field's type in ``output_types`` (``myapp.models:Flight``, ``list[str]``...). The
host, which has the user's classes, turns them back::

    flight = rebuild(result["outputs"], Flight, result["output_types"])
    flight = bridge.execute(pid, model=Flight, origin="LHR")     # the same, in one call

Replayed answers (mock workers) rebuild the same way, so a test sees the same Python types with
or without an LM.
"""

from __future__ import annotations

import typing
from typing import Any

from dspy_bridge._exceptions import UsageError

__all__ = ["is_type_target", "model_path", "rebuild"]


def model_path(model: type) -> str:
    """The type text the wire uses for a model class: ``package.module:Qualified.Name``."""
    return f"{model.__module__}:{model.__qualname__}"


def is_type_target(value: Any) -> bool:
    """Whether ``value`` is something ``rebuild`` can build (a class or a typing form like ``list[Flight]``)."""
    return isinstance(value, type) or typing.get_origin(value) is not None


def rebuild(outputs: dict[str, Any], model: Any, output_types: dict[str, str] | None = None) -> Any:
    """Build ``model`` from a program's ``outputs``.

    A pydantic model class: the output field whose type is that model (by ``output_types``), else
    the whole outputs map when the model's fields are output fields (``reasoning`` and extras are
    ignored), else the one output that is a map. Any other type (``list[Flight]``,
    ``dict[str, list[str]]``...): the only output field besides ``reasoning``, validated by pydantic.
    """
    from pydantic import BaseModel, TypeAdapter, ValidationError

    answers = {name: value for name, value in outputs.items() if name != "reasoning"}
    try:
        if isinstance(model, type) and issubclass(model, BaseModel):
            path = model_path(model)
            typed = [name for name, text in (output_types or {}).items() if text in (path, f"Optional[{path}]")]
            if len(typed) == 1:
                value = outputs.get(typed[0])
                return None if value is None else model.model_validate(value)
            if set(model.model_fields) & set(answers):
                return model.model_validate(answers)
            maps = [name for name, value in answers.items() if isinstance(value, dict)]
            if len(maps) == 1:
                return model.model_validate(answers[maps[0]])
            raise UsageError(
                f"cannot tell which output is a {model.__name__}: outputs {sorted(outputs)} with types "
                f"{output_types or 'unknown'}; pick one field and validate it yourself"
            )
        if len(answers) != 1:
            raise UsageError(
                f"rebuild({model!r}) needs exactly one output field besides reasoning, got {sorted(answers)}"
            )
        return TypeAdapter(model).validate_python(next(iter(answers.values())))
    except ValidationError as exc:
        raise UsageError(f"the outputs do not fit {getattr(model, '__name__', model)!r}: {exc}") from None
