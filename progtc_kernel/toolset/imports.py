"""The static half of the import policy: a script is read before it runs.

``check_script`` refuses invalid syntax (``SyntaxError``) and imports of modules
outside the supported list (``ValueError``), naming the line. Imports it cannot see
(``__import__(name)`` with a computed name, ``exec``) meet the run-time guard in
``progtc_kernel.kernel_side.script``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator

from ..protocol import ALWAYS_ALLOWED


def check_script(source: str, modules: Iterable[str]) -> None:
    """Raise ``SyntaxError`` or ``ValueError`` for what the script must not do."""
    if not isinstance(source, str):
        raise TypeError(f"the script must be a string of Python code, not {type(source).__name__}")
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        shown = f": `{exc.text.strip()}`" if exc.text else ""
        raise SyntaxError(
            f"{exc.msg}: fix the syntax and send the whole script again (line {exc.lineno}{shown})"
        ) from None
    supported = set(modules)
    allowed = supported | ALWAYS_ALLOWED
    lines = source.splitlines()
    for line, name in _imports(tree):
        where = f"(line {line}: `{lines[line - 1].strip()}`)"
        if name is None:
            raise ValueError(
                f"relative imports are not supported: import supported modules by name {where}"
            )
        if name.partition(".")[0] not in allowed:
            raise ValueError(
                f"importing {name!r} is not allowed: use only the supported modules "
                f"({', '.join(sorted(supported))}) and `tools` {where}"
            )


def _imports(tree: ast.AST) -> Iterator[tuple[int, str | None]]:
    """(line, module) for each import written out; None for a relative one."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            yield node.lineno, node.module if node.level == 0 else None
        elif isinstance(node, ast.Call) and _names_import(node.func) and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                yield node.lineno, first.value


def _names_import(func: ast.expr) -> bool:
    """``__import__(...)`` or ``<anything>.import_module(...)``."""
    if isinstance(func, ast.Name):
        return func.id == "__import__"
    return isinstance(func, ast.Attribute) and func.attr in ("import_module", "__import__")
