"""``bench-compare``: which figures got worse than the committed ``docs/benchmarks.json`` by more than a margin.

Only figures where lower is better are compared: ratios (``*_ratio``), times (``*_ms``, ``*_s``). Compare
like with like: ratios are measured against a baseline in the same run, so they travel between machines;
absolute times do only on the same machine (``--ratios-only`` for CI on other hardware).

Run: python benchmarks/compare.py NEW.json [--against docs/benchmarks.json] [--margin 0.10] [--ratios-only]
Exit status 1 when anything got worse by more than the margin.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOWER_IS_BETTER = ("_ratio", "_ms", "_s")


def figures(data: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """Every numeric leaf whose key says lower is better, as (dotted.path, value)."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from figures(value, f"{prefix}{key}.")
    elif isinstance(data, int | float) and not isinstance(data, bool):
        name = prefix.rstrip(".")
        if name.endswith(LOWER_IS_BETTER):
            yield name, float(data)


def worse(old: dict[str, Any], new: dict[str, Any], margin: float, ratios_only: bool) -> list[str]:
    before = dict(figures(old))
    lines = []
    for name, value in figures(new):
        if ratios_only and not name.endswith("_ratio"):
            continue
        reference = before.get(name)
        if reference is None or reference <= 0:
            continue
        change = value / reference - 1
        if change > margin:
            lines.append(f"{name}: {reference:.4g} -> {value:.4g} (+{change:.0%}, margin {margin:.0%})")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("new", type=Path)
    parser.add_argument("--against", type=Path, default=Path(__file__).parent.parent / "docs" / "benchmarks.json")
    parser.add_argument("--margin", type=float, default=0.10)
    parser.add_argument("--ratios-only", action="store_true")
    args = parser.parse_args(argv)
    old, new = json.loads(args.against.read_text()), json.loads(args.new.read_text())
    problems = worse(old, new, args.margin, args.ratios_only)
    for line in problems:
        print("worse:", line)
    if not problems:
        print(f"no figure got worse by more than {args.margin:.0%} against {args.against}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
