"""The seams between the package's parts hold: read from the imports themselves (the
``ast`` of every module under ``progtc_kernel/``), so that a new arrow across a seam
fails here, before any kernel runs.

* No circle of imports between the package's parts (``host``, ``kernels``,
  ``kernel_side``... and the top-level modules), nor between modules at import time.
* ``host/`` knows kernels only through ``kernels/base.py`` and the one resolver,
  ``kernels/resolve.py``: no ``host/`` module imports a concrete kernel.
* The kernel side (``kernel_side/``, and the modules it shares with the host)
  imports only the standard library, ipykernel and what ipykernel brings (IPython,
  comm, pyzmq), itself, and ``protocol``, ``_wire``, ``exceptions``, ``_version``,
  ``_stubs``.
"""

from __future__ import annotations

import ast
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

PACKAGE = Path(__file__).resolve().parent.parent / "progtc_kernel"
ROOT = "progtc_kernel"

# The kernels host/ may know: the interfaces, and the one module that turns what a
# user gave as a kernel into a lifecycle.
HOST_MAY_KNOW = {"progtc_kernel.kernels.base", "progtc_kernel.kernels.resolve"}

KERNEL_SIDE_SHARED = {"protocol", "_wire", "exceptions", "_version", "_python", "_stubs"}
# Besides the standard library: ipykernel and what it brings into every kernel.
KERNEL_SIDE_THIRD_PARTY = {
    "ipykernel",
    "IPython",
    "comm",
    "zmq",
    "typing_extensions",  # tried in protocol.py, with the stdlib's TypedDict to fall back on
}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (or package), absolute
    at_import_time: bool  # at the module's top level, not in a function
    line: int


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[Import]:
    """What the module at ``path`` imports, outside ``if TYPE_CHECKING:`` blocks."""
    source = module_name(path)
    package = source if path.name == "__init__.py" else source.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, top_level: bool) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for branch in node.orelse:
                visit(branch, top_level)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(source, alias.name, top_level, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            for alias in node.names:
                # ``from pkg import module`` imports that module: count the module.
                candidate = f"{base}.{alias.name}"
                target = candidate if is_module(candidate) else base
                found.append(Import(source, target, top_level, node.lineno))
        in_function = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, top_level and not in_function)

    visit(ast.parse(path.read_text(encoding="utf-8")), True)
    return found


def is_module(name: str) -> bool:
    if not name.startswith(ROOT):
        return False
    relative = Path(*name.split(".")[1:]) if "." in name else Path()
    return (PACKAGE / relative).with_suffix(".py").exists() or (
        PACKAGE / relative / "__init__.py"
    ).exists()


ALL = [item for path in sorted(PACKAGE.rglob("*.py")) for item in imports_of(path)]
OURS = [item for item in ALL if item.target.startswith(ROOT + ".")]


def part(module: str) -> str:
    """The part of the package a module belongs to: ``host``, ``kernels``, ``protocol``..."""
    return module.split(".")[1] if module.count(".") else module


def circles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """Every circle of the graph, one per strongly connected group (Tarjan's)."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []
    counter = itertools.count()

    def connect(node: str) -> None:
        index[node] = low[node] = next(counter)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return groups


def test_the_parts_of_the_package_import_each_other_in_no_circle() -> None:
    # progtc_kernel/__init__.py is the front door: it names everything, lazily.
    arrows = {
        (part(item.source), part(item.target))
        for item in OURS
        if item.source != ROOT and part(item.source) != part(item.target)
    }

    assert circles(arrows) == []


def test_no_module_imports_another_that_imports_it_back_at_import_time() -> None:
    arrows = {
        (item.source, item.target)
        for item in OURS
        if item.at_import_time and item.source != item.target and is_module(item.target)
    }

    assert circles(arrows) == []


def test_host_knows_kernels_only_through_their_interfaces_and_the_resolver() -> None:
    concrete = [
        f"{item.source}:{item.line} imports {item.target}"
        for item in OURS
        if item.source.startswith(f"{ROOT}.host.")
        and item.target.startswith(f"{ROOT}.kernels")
        and item.target not in HOST_MAY_KNOW
    ]

    assert concrete == []


def test_tool_kernel_names_no_concrete_kernel_even_for_type_checkers() -> None:
    tree = ast.parse((PACKAGE / "host" / "tool_kernel.py").read_text(encoding="utf-8"))
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    names |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    names |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
              for alias in node.names}  # fmt: skip

    assert names.isdisjoint({"LocalKernel", "RemoteKernel", "JupyterServer", "WebsocketTransport"})


def test_the_kernel_side_imports_only_what_every_kernel_has() -> None:
    kernel_side = [
        path
        for path in sorted(PACKAGE.rglob("*.py"))
        if module_name(path).startswith(f"{ROOT}.kernel_side")
        or (
            module_name(path).rpartition(".")[2] in KERNEL_SIDE_SHARED
            and module_name(path).count(".") == 1
        )
    ]
    allowed_ours = {f"{ROOT}.{name}" for name in KERNEL_SIDE_SHARED} | {ROOT}

    foreign = [
        f"{item.source}:{item.line} imports {item.target}"
        for path in kernel_side
        for item in imports_of(path)
        if not (
            item.target.split(".")[0] in sys.stdlib_module_names
            or item.target.split(".")[0] in KERNEL_SIDE_THIRD_PARTY
            or item.target.startswith(f"{ROOT}.kernel_side")
            or item.target in allowed_ours
        )
    ]

    assert len(kernel_side) > len(KERNEL_SIDE_SHARED)
    assert foreign == []
