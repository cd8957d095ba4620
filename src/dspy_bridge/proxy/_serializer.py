"""vcrpy's YAML cassette format, written for code review: same data, friendlier layout.

Cassettes are committed, so their diffs are read. vcrpy's default dumper folds long strings at 80
columns and escapes pretty-printed JSON bodies into one quoted line. This serializer writes the
same YAML document with multi-line strings as literal blocks (``|``), long lines unfolded and
non-ASCII text as is; it loads with vcrpy's own safe loader, so either can read the other's files.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["ReadableYaml"]


_BaseDumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml when present


class _Dumper(_BaseDumper):  # type: ignore[valid-type,misc]
    """Safe: refuses Python objects that vcrpy's safe loader would refuse to load back."""


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None  # PyYAML falls back to quotes when a block cannot hold it
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _represent_str)


class ReadableYaml:
    """A vcrpy serializer (``VCR.register_serializer("yaml", ReadableYaml)``)."""

    @staticmethod
    def deserialize(cassette_string: str) -> Any:
        from vcr.serializers import yamlserializer

        return yamlserializer.deserialize(cassette_string)

    @staticmethod
    def serialize(cassette_dict: Any) -> str:
        return yaml.dump(cassette_dict, Dumper=_Dumper, width=1_000_000, allow_unicode=True, sort_keys=True)
