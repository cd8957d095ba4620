"""The layers stack one way and nothing loops: these tests read every import in ``src/dspy_bridge``.

    plugin (pytest_plugin, _pytest/) · cli · _client (Bridge) · dspy_bridge/__init__     may import anything
    proxy ──▶ cassettes ──▶ protocol ◀── pool        worker ──▶ cassettes, protocol        testing ──▶ protocol
    protocol ──▶ nothing of ours                      leaves (_exceptions, …) ◀── everyone; leaves only import leaves

The graph counts every import the interpreter may execute: ``import`` and ``from … import`` (absolute and
relative) at any depth — inside functions and ``if TYPE_CHECKING`` blocks too, since a lazy import is
still an arrow — and ``importlib.import_module("literal")``. Importing ``a.b.c`` also runs ``a/b/__init__``:
those implicit parent-package edges count for the layer check (not for the cycle check, where every
package importing its own submodules would be a loop). The root ``dspy_bridge/__init__`` runs before any
submodule; that implicit edge is left out (it is a top layer and its attributes load lazily), but importing
the root *explicitly* (``from dspy_bridge import __version__``) from a lower layer is a violation.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "dspy_bridge"

# -- the table ------------------------------------------------------------------------------------------

# Top-level modules that import nothing of ours but other leaves: anyone may use them.
LEAVES = {f"{ROOT}.{name}" for name in ("_exceptions", "_version", "_http", "_gemini", "_modes", "_secrets", "_result")}
TOP = "top"  # may import anything
LEAF = "leaf"
# Which layers each layer may reach (itself and the leaves always included).
ALLOWED: dict[str, set[str]] = {
    "protocol": set(),
    "worker": {"protocol", "cassettes"},  # cassettes: the mock worker's handlers replay them
    "pool": {"protocol"},
    "cassettes": {"protocol"},
    "proxy": {"cassettes", "protocol"},
    "testing": {"protocol"},
    LEAF: set(),
}
TOP_MODULES = {
    ROOT,
    f"{ROOT}.pytest_plugin",
    f"{ROOT}.cli",
    f"{ROOT}._cli_prompts",
    f"{ROOT}._cli_cassettes",
    f"{ROOT}._client",
    f"{ROOT}._typed",
}
TOP_PACKAGES = {f"{ROOT}._pytest"}


def layer_of(module: str) -> str:
    if module in LEAVES:
        return LEAF
    if module in TOP_MODULES or any(module == p or module.startswith(p + ".") for p in TOP_PACKAGES):
        return TOP
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in ALLOWED:
        return parts[1]
    raise AssertionError(f"{module} belongs to no layer: add it to the table in {Path(__file__).name}")


def may_import(importer: str, imported: str) -> bool:
    source, target = layer_of(importer), layer_of(imported)
    if source == TOP or target == source:
        return True
    if target == LEAF:
        return True  # a leaf's own imports are checked on the leaf
    return target in ALLOWED[source]


# -- the graph ------------------------------------------------------------------------------------------


class ImportGraph:
    """Every import of every module under ``src/<root>``, read with ``ast`` (nothing is imported)."""

    def __init__(self, src: Path, root: str = ROOT) -> None:
        self.root = root
        self.paths = {self._module_name(src, path): path for path in sorted((src / root).rglob("*.py"))}
        self.explicit = {module: self._explicit_edges(module) for module in self.paths}
        self.layer = {module: self._layer_edges(module) for module in self.paths}

    @staticmethod
    def _module_name(src: Path, path: Path) -> str:
        parts = path.relative_to(src).with_suffix("").parts
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    def _resolve(self, module: str, level: int, name: str | None) -> str:
        """The absolute name of ``from <level dots><name> import …`` written in ``module``."""
        if level == 0:
            return name or ""
        package = module if self.paths[module].name == "__init__.py" else module.rpartition(".")[0]
        base = package.split(".")
        base = base[: len(base) - (level - 1)]
        return ".".join([*base, name] if name else base)

    def _named_imports(self, module: str) -> Iterator[str]:
        """Every module name ``module`` may import, at any depth (ours and others')."""
        for node in ast.walk(ast.parse(self.paths[module].read_text())):
            if isinstance(node, ast.Import):
                yield from (alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                package = self._resolve(module, node.level, node.module)
                for alias in node.names:
                    submodule = f"{package}.{alias.name}"
                    yield submodule if submodule in self.paths else package
            elif (literal := _import_module_literal(node)) is not None:
                yield literal

    def _explicit_edges(self, module: str) -> frozenset[str]:
        """Our modules that ``module`` names in an import (the cycle check's arrows)."""
        found = set()
        for name in self._named_imports(module):
            while name and name not in self.paths:  # ``import a.b.C``-style names: the longest module prefix
                name = name.rpartition(".")[0]
            if name.split(".")[0] == self.root and name != module:
                found.add(name)
        return frozenset(found)

    def _layer_edges(self, module: str) -> frozenset[str]:
        """Explicit edges plus the packages each import runs first (``a.b.c`` runs ``a.b``), root excepted."""
        found = set(self.explicit[module])
        for name in self.explicit[module]:
            parts = name.split(".")
            found.update(".".join(parts[:i]) for i in range(2, len(parts)))
        found.discard(module)
        return frozenset(found)


def _import_module_literal(node: ast.AST) -> str | None:
    """``x`` of ``importlib.import_module("x")``, ``import_module("x")`` or ``__import__("x")``, else None."""
    if not isinstance(node, ast.Call) or not node.args:
        return None
    func = node.func
    named = (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
        isinstance(func, ast.Name) and func.id in ("import_module", "__import__")
    )
    argument = node.args[0]
    if named and isinstance(argument, ast.Constant) and isinstance(argument.value, str):
        return argument.value
    return None


@cache
def graph() -> ImportGraph:
    return ImportGraph(SRC)


def modules() -> dict[str, Path]:
    return graph().paths


def explicit_edges(module: str) -> frozenset[str]:
    return graph().explicit[module]


def layer_edges(module: str) -> frozenset[str]:
    return graph().layer[module]


def _violations(start: str) -> list[str]:
    """Chains from ``start`` to each module its layer may not reach, one shortest chain per offender.

    The search does not go on past an offender: what lies beyond it is that offender's problem (and
    reported for it), so each broken arrow shows up once per importer, not once per module behind it.
    """
    chains = {start: [start]}
    frontier = [start]
    found = []
    while frontier:
        following = []
        for module in frontier:
            for target in sorted(layer_edges(module)):
                if target in chains:
                    continue
                chains[target] = [*chains[module], target]
                if may_import(start, target):
                    following.append(target)
                else:
                    found.append(
                        " → ".join(chains[target]) + f"   ({layer_of(start)} may not reach {layer_of(target)})"
                    )
        frontier = following
    return sorted(found)


# -- the tests ------------------------------------------------------------------------------------------


def test_every_module_has_a_layer() -> None:
    for module in modules():
        layer_of(module)


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    files = {
        "__init__.py": "",
        "low/__init__.py": "from . import a\n",
        "low/a.py": "from .b import thing\nfrom ..mid import c\n",
        "low/b.py": "def f():\n    import dspy_bridge.mid.d\n",
        "mid/__init__.py": "",
        "mid/c.py": "import importlib\nimportlib.import_module('dspy_bridge.low.b')\n",
        "mid/d.py": "if False:\n    from dspy_bridge import __version__\n    from dspy_bridge.mid import c, CONSTANT\n",
    }
    for name, text in files.items():
        (tmp_path / ROOT / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / ROOT / name).write_text(text)
    g = ImportGraph(tmp_path)
    assert g.explicit[f"{ROOT}.low"] == {f"{ROOT}.low.a"}  # relative, in a package
    assert g.explicit[f"{ROOT}.low.a"] == {f"{ROOT}.low.b", f"{ROOT}.mid.c"}  # relative, one and two dots
    assert g.explicit[f"{ROOT}.low.b"] == {f"{ROOT}.mid.d"}  # lazy, inside a function
    assert g.explicit[f"{ROOT}.mid.c"] == {f"{ROOT}.low.b"}  # importlib with a literal
    assert g.explicit[f"{ROOT}.mid.d"] == {ROOT, f"{ROOT}.mid.c", f"{ROOT}.mid"}  # root; module; plain name
    assert g.layer[f"{ROOT}.low.b"] == {f"{ROOT}.mid.d", f"{ROOT}.mid"}  # the parent package runs first


@pytest.mark.parametrize("leaf", sorted(LEAVES))
def test_a_leaf_imports_only_leaves(leaf: str) -> None:
    assert leaf in modules(), f"{leaf} is listed as a leaf but does not exist: update LEAVES"
    foreign = sorted(target for target in layer_edges(leaf) if target not in LEAVES)
    assert not foreign, f"{leaf} is listed as a leaf but imports {foreign}"


@pytest.mark.parametrize("layer", [name for name in ALLOWED if name != LEAF])
def test_each_layer_reaches_only_the_layers_below_it(layer: str) -> None:
    members = [module for module in modules() if layer_of(module) == layer]
    assert members, f"no module in layer {layer}"
    problems = [chain for module in members for chain in _violations(module)]
    assert not problems, f"{len(problems)} forbidden import chain(s) from {layer}:\n" + "\n".join(problems)


def test_no_import_cycle_of_any_length() -> None:
    """Depth-first search over explicit edges (lazy ones included); reports every cycle's first sighting."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(explicit_edges(module)):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(modules()):
        if module not in state:
            visit(module)
    assert not cycles, f"{len(cycles)} import cycle(s):\n" + "\n".join(" → ".join(c) for c in cycles)


def test_no_importlib_literal_hides_an_arrow() -> None:
    """``importlib.import_module("dspy_bridge…")`` with a fixed name is an import in disguise: write it plainly.

    (A name the *user* configures, such as the zygote's preload list, is not a literal and stays legitimate.)
    """
    hidden = [
        f"{module}: import_module({literal!r})"
        for module, path in modules().items()
        for node in ast.walk(ast.parse(path.read_text()))
        if (literal := _import_module_literal(node)) is not None and literal.split(".")[0] == ROOT
    ]
    assert not hidden, hidden


def test_mock_worker_start_imports_neither_pydantic_nor_yaml_nor_dspy() -> None:
    code = (
        "import sys; from dspy_bridge.worker import _main, _loop, _mock; "
        "print(','.join(m for m in ('pydantic', 'yaml', 'dspy', 'asyncio', 'typing') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": ":".join(p for p in sys.path if p)},
    )
    assert out.stdout.strip() == ""


MAX_MODULE_LINES = 600


def test_no_module_does_too_many_jobs() -> None:
    """A module over ~600 lines has grown a second job: split it by duty (docs/architecture.md)."""
    long = {
        module: lines
        for module, path in ImportGraph(SRC).paths.items()
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"split these by duty: {long}"
