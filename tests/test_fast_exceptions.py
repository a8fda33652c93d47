"""Every exception progtc_kernel raises sits in one tree under ``ProgtcKernelError``,
drawn at the top of ``progtc_kernel.exceptions`` as it is; the ones callers catch as
a builtin are that builtin too; and the kernel side can import the module."""

from __future__ import annotations

import ast
import contextlib
import inspect
import re
import sys

import pytest

import progtc_kernel
from progtc_kernel import exceptions
from progtc_kernel.host.injection import kernel_side_files

pytestmark = pytest.mark.fast


def drawn_tree() -> dict[str, str]:
    """Each class in the module docstring's tree, with its parent in the drawing."""
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in (exceptions.__doc__ or "").splitlines():
        match = re.match(r"^ {4}[│├└─ ]*([A-Z]\w+)\s{2,}", line)
        if not match:
            continue
        name = match.group(1)
        depth = (line.index(name) - 4) // 4  # each level is drawn 4 columns further in
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            parents[name] = stack[-1][1]
        stack.append((depth, name))
    return parents


def exported_exceptions() -> dict[str, type[BaseException]]:
    return {
        name: getattr(progtc_kernel, name)
        for name in progtc_kernel.__all__
        if inspect.isclass(getattr(progtc_kernel, name))
        and issubclass(getattr(progtc_kernel, name), BaseException)
        and name != "NotebookExecutionError"  # nbclient's CellExecutionError, extended
    }


def test_every_exported_exception_is_in_the_drawn_tree_under_its_real_parent() -> None:
    drawn = drawn_tree()
    exported = exported_exceptions()
    assert set(drawn) | {"ProgtcKernelError"} == set(exported)
    for name, parent in drawn.items():
        assert exported[name].__bases__[0] is exported[parent], name


def test_every_exception_is_defined_in_the_exceptions_module() -> None:
    for name, cls in exported_exceptions().items():
        assert cls.__module__ == "progtc_kernel.exceptions", name


@pytest.mark.parametrize(
    ("name", "builtin"),
    [
        ("ToolArgumentError", TypeError),
        ("ToolTimeoutError", TimeoutError),
        ("HostDisconnectedError", ConnectionError),
        ("ToolDeniedError", PermissionError),
        ("ToolDefinitionError", TypeError),
        ("KernelNotStartedError", RuntimeError),
        ("ScriptTimeoutError", TimeoutError),
        ("UpstreamStartError", RuntimeError),
    ],
)
def test_an_error_callers_catch_as_a_builtin_is_that_builtin(
    name: str, builtin: type[BaseException]
) -> None:
    cls = getattr(progtc_kernel, name)
    assert issubclass(cls, progtc_kernel.ProgtcKernelError)
    assert issubclass(cls, builtin)


def test_the_kernel_side_packs_the_module_and_it_imports_only_the_standard_library() -> None:
    assert "exceptions.py" in kernel_side_files()
    tree = ast.parse(inspect.getsource(exceptions))
    runtime_imports: list[str] = []
    for node in tree.body:  # top level only: the TYPE_CHECKING block never runs
        if isinstance(node, ast.ImportFrom) and node.module:
            runtime_imports.append(node.module)
        elif isinstance(node, ast.Import):
            runtime_imports.extend(alias.name for alias in node.names)
    assert runtime_imports
    assert all(name.split(".")[0] in sys.stdlib_module_names for name in runtime_imports), (
        runtime_imports
    )


async def test_an_mcp_server_that_cannot_start_raises_upstream_start_error() -> None:
    mcp = pytest.importorskip("progtc_kernel.integrations.mcp")
    async with contextlib.AsyncExitStack() as stack:
        with pytest.raises(progtc_kernel.UpstreamStartError, match="could not start the MCP"):
            await mcp.upstream_definitions(stack, "no-such-program-here")
