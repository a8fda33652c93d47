"""Scripts checked before they run: ``ProgrammaticToolset(check_types=...)``.

A script is type-checked with ``ty`` (the ``typecheck`` extra) against the very stubs
``get_execution_environment`` shows (``stubs_source``): each tool's signature, and the
``TypedDict`` of its result where its output schema is an object. What ``ty`` finds
comes back as the contract's error (``TypeError``; ``ValueError`` for an import of a
name ``tools`` does not have; ``NameError`` for names never defined) with the script's
line, and the script does not run.

Whether a tool call returns its result or an awaitable depends on where it is written
(the kernel's ``RULE``): in ``async def`` code it is awaitable. The checked copy of the
script says so to the checker by wrapping each such call's function in
``_progtc_aio_(...)``, which the stub types as the same signature returning a
coroutine; lines do not move, so findings keep the script's line numbers.

Checking errs on the side of silence: findings that code which works could trigger
(imports the checker cannot resolve, names an earlier script left) are dropped, and
a checker that fails or is slow lets the script run unchecked.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from .._install import missing_extra
from .._stubs import stubs_source
from ..exceptions import TOOL_EXCEPTIONS
from ..protocol import ToolSpec

EXTRA = "typecheck"
# Seconds the checker may take before the script runs unchecked (a check takes ~50 ms).
CHECK_TIMEOUT = 30.0
AIO = "_progtc_aio_"

_HEADER = f"""\
from typing import Any, Callable, Coroutine, Literal, NotRequired, Optional, ParamSpec, \\
    TypedDict, TypeVar, Union

_P = ParamSpec("_P")
_T = TypeVar("_T")

def {AIO}(tool: Callable[_P, _T]) -> Callable[_P, Coroutine[Any, Any, _T]]: ...

class ToolError(Exception):
    tool: str
    error_type: str
    message: str
    def __init__(self, tool: str, error_type: str, message: str) -> None: ...

{
    chr(10).join(
        f"class {kind.__name__}({', '.join(base.__name__ for base in kind.__bases__)}): ..."
        for kind in TOOL_EXCEPTIONS[1:]
    )
}

catalog: Any

"""

# What to do about each kind of finding, said after the checker's own words.
_FIXES = {
    "invalid-typed-dict-key": "index a result only with the keys its TypedDict declares",
    "invalid-argument-type": "pass what the tool's stub declares for that parameter",
    "missing-argument": "give every parameter the tool's stub requires",
    "too-many-positional-arguments": "call the tool with the parameters its stub declares",
    "unknown-argument": "call the tool with the parameters its stub declares",
    "missing-module-member": "import only the tools listed (and the ToolError exceptions)",
    "unresolved-import": "import only the tools listed (and the ToolError exceptions)",
    "missing-attribute": "results are JSON values (a dict: index it with its keys)",
    "unresolved-attribute": "results are JSON values (a dict: index it with its keys)",
    "not-subscriptable": "in `async def` code, `await` each tool call before using its result",
}
# The only findings reported: what a script gets wrong about the tools, and names
# that do not exist (the run's NameError).
_REPORTED = {*_FIXES, "unresolved-reference", "import-not-found"}
# Findings about a call, and any not in _REPORTED: only where the line calls a tool.
_CALL_RULES = {
    "invalid-argument-type",
    "missing-argument",
    "too-many-positional-arguments",
    "unknown-argument",
}
# Findings about imports: the contract's ValueError when they are all there is.
_IMPORT_RULES = {"unresolved-import", "import-not-found", "missing-module-member"}
# A module the checker cannot find may be in the kernel (helper modules, packages
# installed there): only imports from ``tools`` are checked.
_MODULE_NOT_FOUND = {"unresolved-import", "import-not-found"}
# ty's words for indexing with a wrong key, long: said short.
_BAD_INDEX = re.compile(
    r"^Method `__getitem__` of type .* cannot be called with key of type (`.*`) "
    r"on object of type (`.*`)$"
)
_FINDING = re.compile(r"^script\.py:(\d+):\d+: error\[([\w-]+)\] (.*)$")


def checker_installed() -> bool:
    """Whether ``ty`` is installed (found without importing it)."""
    return importlib.util.find_spec("ty") is not None


def checker_missing(needs: str) -> ModuleNotFoundError:
    """The error for ``check_types=True`` without ``ty``, naming the install command."""
    return missing_extra(EXTRA, ModuleNotFoundError("No module named 'ty'", name="ty"), needs)


@dataclass(frozen=True)
class Finding:
    """A problem the checker found in a script.

    Attributes:
        line: The script's line (1-based).
        rule: The checker's rule (``invalid-argument-type``...).
        message: What the checker said.
    """

    line: int
    rule: str
    message: str


def script_error(findings: list[Finding], script: str) -> Exception:
    """The contract's error for these findings: every line, what is wrong, the fix."""
    lines = script.splitlines()
    said = []
    for finding in findings[:10]:
        code = lines[finding.line - 1].strip() if finding.line <= len(lines) else ""
        fix = _FIXES.get(finding.rule)
        said.append(
            f"- line {finding.line}: `{code}`: {finding.message} [{finding.rule}]"
            + (f"; {fix}" if fix else "")
        )
    if len(findings) > 10:
        said.append(f"- and {len(findings) - 10} more")
    count = f"{len(findings)} problem{'s' if len(findings) > 1 else ''}"
    message = (
        f"the script did not run: type-checking it against the tools' stubs (in "
        f"get_execution_environment's instructions) found {count}; fix the script and "
        "send it whole again:\n" + "\n".join(said)
    )
    rules = {finding.rule for finding in findings}
    if rules <= _IMPORT_RULES:
        return ValueError(message)
    if rules == {"unresolved-reference"}:
        return NameError(message)  # what the run would raise, sooner
    return TypeError(message)


class ScriptChecker:
    """Type-checks scripts with ``ty`` against the tools' stubs.

    Args:
        python: The interpreter whose installed packages the checker resolves imports
            in (the kernel's, when it runs here); default: this one.

    Raises:
        ModuleNotFoundError: ``ty`` is not installed; the message names the command
            that installs the ``typecheck`` extra.
    """

    def __init__(self, python: str | None = None) -> None:
        if not checker_installed():
            raise checker_missing("check_types=True needs the type checker ty")
        from ty import find_ty_bin

        self.binary = find_ty_bin()
        self.python = (shutil.which(python) or python) if python else sys.executable

    async def check(
        self, script: str, specs: list[ToolSpec], *, names_kept: bool = False
    ) -> list[Finding]:
        """The problems the checker finds in ``script`` (none: it may run).

        Args:
            script: The script, already read by ``check_script`` (valid syntax).
            specs: The tools it may call.
            names_kept: Whether names of earlier scripts are still defined (an unknown
                name is then no error).
        """
        tree = ast.parse(script)
        if _awaits_at_top_level(tree) or not all(spec["name"].isidentifier() for spec in specs):
            return []  # the run says what is wrong / tools in namespaces: not checked
        stubs = _HEADER + stubs_source(specs)
        if not _parses(stubs):
            return []  # a signature shown as text Python cannot read: nothing to check against
        names = {spec["name"] for spec in specs}
        checked = _awaitable_calls_marked(script, tree, names)
        output = await self._run(checked, stubs)
        if output is None:
            return []
        lines = script.splitlines()
        return [
            finding
            for finding in _findings(output)
            if _kept(finding, tree, names_kept, lines, names)
        ]

    async def _run(self, script: str, stubs: str) -> str | None:
        """The checker's concise output, or None when it failed or took too long."""
        with tempfile.TemporaryDirectory(prefix="progtc-check-") as folder:
            root = Path(folder)
            (root / "tools").mkdir()
            (root / "tools" / "__init__.pyi").write_text(stubs, encoding="utf-8")
            (root / "script.py").write_text(script, encoding="utf-8")
            process = await asyncio.create_subprocess_exec(
                *(self.binary, "check", "--output-format", "concise", "--no-progress"),
                *("--color", "never", "--project", folder, "--python", self.python),
                "script.py",
                cwd=folder,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, "NO_COLOR": "1"},
            )
            try:
                out, _ = await asyncio.wait_for(process.communicate(), CHECK_TIMEOUT)
            except asyncio.TimeoutError:
                return None
            finally:
                if process.returncode is None:  # timed out, or the run was cancelled
                    process.kill()
                    await process.wait()
        # 0: no findings, 1: findings; anything else is the checker's own failure.
        return out.decode("utf-8", "replace") if process.returncode in (0, 1) else None


def _parses(source: str) -> bool:
    try:
        ast.parse(source)
    except SyntaxError:
        return False
    return True


def _findings(output: str) -> Iterator[Finding]:
    for text in output.splitlines():
        match = _FINDING.match(text.strip())
        if match:
            message = _BAD_INDEX.sub(r"Cannot index an object of type \2 with \1", match[3])
            yield Finding(int(match[1]), match[2], message)


def _kept(
    finding: Finding, tree: ast.Module, names_kept: bool, lines: list[str], tools: Collection[str]
) -> bool:
    """Whether a finding is one code that works cannot trigger (see the module doc).

    Findings about the tools' contract (a result's keys, imports from ``tools``) and
    unknown names are reported; any other only on a line that calls a tool: the
    checker is stricter than Python elsewhere (``max(d, key=d.get)`` matches no
    overload of ``max``, and runs)."""
    if finding.line > len(lines):
        return False
    if finding.message.startswith("Cannot index an object"):
        return True  # a result indexed as its type does not allow (see _BAD_INDEX)
    if finding.rule not in _REPORTED or finding.rule in _CALL_RULES:
        return any(
            re.search(rf"\b{re.escape(tool)}\s*\(", lines[finding.line - 1]) for tool in tools
        )
    if finding.rule == "unresolved-reference":
        return not names_kept
    if finding.rule in _MODULE_NOT_FOUND:
        return _imports_from_tools(tree, finding.line)
    return True


def _imports_from_tools(tree: ast.Module, line: int) -> bool:
    """Whether the import on ``line`` is one from ``tools`` (third-party modules the
    checker cannot see may well be in the kernel)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.lineno <= line <= (node.end_lineno or line):
            return node.module == "tools" and node.level == 0
    return False


def _awaits_at_top_level(tree: ast.Module) -> bool:
    """A top-level ``await`` (which a ``run()`` script cannot have: its run says so)."""
    scopes = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Await, ast.AsyncFor, ast.AsyncWith)):
            return True
        if not isinstance(node, scopes):
            stack.extend(ast.iter_child_nodes(node))
    return False


def _awaitable_calls_marked(script: str, tree: ast.Module, tools: Collection[str]) -> str:
    """The script with each tool call written in ``async def`` code wrapped in
    ``_progtc_aio_(...)`` (columns move, lines do not)."""
    calls = list(_CallsInAsyncCode(tools).calls(tree))
    if not calls:
        return script
    lines = script.splitlines(keepends=True)
    inserts: list[tuple[int, int, str]] = []
    for func in calls:
        inserts.append((func.lineno - 1, func.col_offset, f"{AIO}("))
        inserts.append(((func.end_lineno or func.lineno) - 1, func.end_col_offset or 0, ")"))
    for row, column, text in sorted(inserts, reverse=True):
        raw = lines[row].encode("utf-8")  # ast columns are UTF-8 byte offsets
        lines[row] = (raw[:column] + text.encode("utf-8") + raw[column:]).decode("utf-8")
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    return "".join(lines) + f"from tools import {AIO}\n"


class _CallsInAsyncCode(ast.NodeVisitor):
    """The function expressions of tool calls whose nearest enclosing function is an
    ``async def`` (lambdas and comprehensions count as the code around them)."""

    def __init__(self, tools: Collection[str]) -> None:
        self.tools = set(tools)
        self.imported: dict[str, str] = {}  # local name -> tool
        self.modules: set[str] = set()  # local names of the tools module
        self.found: list[ast.expr] = []
        self.in_async = False

    def calls(self, tree: ast.Module) -> list[ast.expr]:
        for node in ast.walk(tree):  # imports anywhere count (a checker sees them so)
            if isinstance(node, ast.ImportFrom) and node.module == "tools" and not node.level:
                for alias in node.names:
                    if alias.name == "*":
                        self.imported.update({name: name for name in self.tools})
                    elif alias.name in self.tools:
                        self.imported[alias.asname or alias.name] = alias.name
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == "tools":
                        self.modules.add(alias.asname or "tools")
        self.visit(tree)
        return self.found

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._scope(node, False)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._scope(node, True)

    def _scope(self, node: ast.FunctionDef | ast.AsyncFunctionDef, is_async: bool) -> None:
        for outer in (*node.decorator_list, *node.args.defaults, *node.args.kw_defaults):
            if outer is not None:
                self.visit(outer)  # evaluated in the enclosing code
        before, self.in_async = self.in_async, is_async
        for statement in node.body:
            self.visit(statement)
        self.in_async = before

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        before, self.in_async = self.in_async, False  # a class body runs plainly
        self.generic_visit(node)
        self.in_async = before

    def visit_Call(self, node: ast.Call) -> None:
        if self.in_async and self._is_tool(node.func):
            self.found.append(node.func)
        self.generic_visit(node)

    def _is_tool(self, func: ast.expr) -> bool:
        if isinstance(func, ast.Name):
            return func.id in self.imported
        return (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id in self.modules
            and func.attr in self.tools
        )
