"""Render a program's prompts without calling the LM: each predictor's messages as the adapter builds them.

Inputs are placeholders (``{question}``), so a rendering depends only on what a program *is* — its
instructions, demos, field names and types, the adapter and the DSPy version — never on a test's data.
The plugin keeps these renderings in a lock file (``--bridge-prompts``) and compares them run after run.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ADAPTER_NAMES", "render_prompts"]

ADAPTER_NAMES = ("chat", "json")


def _adapter(dspy: Any, name: str) -> Any:
    return dspy.JSONAdapter() if name == "json" else dspy.ChatAdapter()


def render_prompts(dspy: Any, module: Any, adapter: str) -> list[dict[str, Any]]:
    """``[{name, instructions, demos, inputs: {field: type}, outputs: {field: type}, messages}]`` per predictor."""
    from dspy_bridge.worker._dspy_types import type_text

    rendered = []
    for name, predictor in module.named_predictors():
        signature = predictor.signature
        demos = list(getattr(predictor, "demos", None) or ())
        placeholders = {field: "{" + field + "}" for field in signature.input_fields}
        messages = _adapter(dspy, adapter).format(signature, demos, placeholders)
        rendered.append(
            {
                "name": name,
                "instructions": str(signature.instructions or ""),
                "demos": len(demos),
                "inputs": {field: type_text(info.annotation) for field, info in signature.input_fields.items()},
                "outputs": {field: type_text(info.annotation) for field, info in signature.output_fields.items()},
                "messages": [{"role": str(m["role"]), "content": _text(m["content"])} for m in messages],
            }
        )
    return rendered


def _text(content: Any) -> str:
    """Message content as text; multi-part content (images) keeps its text parts and names the rest."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text")) if isinstance(part, dict) and part.get("type") == "text" else f"<{part.get('type')}>"
            for part in content
            if isinstance(part, dict)
        )
    return str(content)
