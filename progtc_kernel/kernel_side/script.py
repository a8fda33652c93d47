"""Runs an agent's script for ``ProgrammaticToolset``, inside the kernel.

The script defines ``run()`` (plain or ``async def``) returning a dict. It runs in a
namespace of its own, where ``import`` reaches only the supported modules (and
``tools``), however the import is written: the namespace's ``__import__`` is a
guard. That guard-rail keeps a model to its instructions; it is not a security
boundary (the kernel's sandbox is). The outcome, the JSON of what ``run()``
returned or the error with its script line, is published as display data of
``OUTCOME_MIME`` for the host to read; the cell itself always succeeds.
"""

from __future__ import annotations

import builtins
import inspect
import itertools
import json
import linecache
import traceback
from collections.abc import Callable
from typing import Any

from ..protocol import ALWAYS_ALLOWED, OUTCOME_MIME

_numbers = itertools.count(1)
_kept: dict[str, dict[str, Any]] = {}  # namespaces kept across scripts, by key


class ScriptProblem(Exception):
    """A contract error: ``kind`` is the exception type the host raises."""

    def __init__(self, kind: type[Exception], message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.line = line


async def run_script(source: str, modules: list[str], keep: str | None = None) -> None:
    """Run ``source`` and publish its outcome. ``modules``: the importable top-level
    modules; ``keep``: a key whose namespace lives on to the next script."""
    filename = f"<script-{next(_numbers)}>"
    # Cached like a cell, so that tracebacks show the script's lines.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    try:
        outcome = {"ok": True, "json": await _run(source, filename, set(modules), keep)}
    except ScriptProblem as problem:
        line = problem.line or _script_line(problem, filename)
        outcome = _failure(problem.kind.__name__, str(problem), line, source)
    except Exception as exc:  # the script's own error, reported with its line
        outcome = _failure(type(exc).__name__, str(exc), _script_line(exc, filename), source)
    finally:
        linecache.cache.pop(filename, None)
    from IPython.display import publish_display_data

    publish_display_data({OUTCOME_MIME: outcome})  # type: ignore[no-untyped-call]


async def _run(source: str, filename: str, modules: set[str], keep: str | None) -> str:
    try:
        code = compile(source, filename, "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise ScriptProblem(
            SyntaxError, f"{exc.msg}: fix the syntax and send the whole script again", exc.lineno
        ) from None
    namespace = _namespace(modules, keep)
    exec(code, namespace)
    run = namespace.get("run")
    if not callable(run):
        raise ScriptProblem(
            ValueError,
            "the script defines no run() function: define "
            "`def run():` (or `async def run():`) returning a dict",
        )
    value = run()
    if inspect.isawaitable(value):
        value = await value
    if not isinstance(value, dict):
        raise ScriptProblem(
            TypeError,
            f"run() returned {type(value).__name__}, not a dict: "
            'return a dict, e.g. {"result": value}',
            _def_line(run),
        )
    try:
        return json.dumps(value, allow_nan=False, default=_not_json, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ScriptProblem(
            TypeError,
            f"run() returned a dict that JSON cannot carry ({exc}): "
            "return only str, int, float, bool, None, lists and dicts with "
            "string keys",
            _def_line(run),
        ) from None


def _not_json(value: Any) -> Any:
    if inspect.isawaitable(value):
        raise TypeError(
            f"{value!r} was never awaited: in `async def run()`, write "
            "`await` before each tool call"
        )
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _namespace(modules: set[str], keep: str | None) -> dict[str, Any]:
    if keep is not None and keep in _kept:
        return _kept[keep]
    guarded = dict(vars(builtins))
    guarded["__import__"] = _guarded_import(modules)
    namespace: dict[str, Any] = {"__builtins__": guarded, "__name__": "__script__"}
    if keep is not None:
        _kept[keep] = namespace
    return namespace


def _guarded_import(modules: set[str]) -> Callable[..., Any]:
    real_import = builtins.__import__
    allowed = modules | ALWAYS_ALLOWED

    def guarded_import(
        name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0
    ) -> Any:
        top = name.partition(".")[0]
        if level == 0 and top not in allowed:  # (its line: the traceback's, in the script)
            raise ScriptProblem(
                ValueError,
                f"importing {name!r} is not allowed: use only "
                f"the supported modules ({', '.join(sorted(modules))}) and "
                "`tools`",
            )
        return real_import(name, globals, locals, fromlist, level)

    return guarded_import


def _script_line(exc: BaseException, filename: str) -> int | None:
    """The line of the script where the exception came from (its innermost frame)."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == filename:
            line = frame.lineno
    return line


def _def_line(function: Any) -> int | None:
    code = getattr(function, "__code__", None)
    return code.co_firstlineno if code is not None else None


def _failure(kind: str, message: str, line: int | None, source: str) -> dict[str, Any]:
    lines = source.splitlines()
    text = lines[line - 1].strip() if line and 0 < line <= len(lines) else None
    return {"ok": False, "type": kind, "message": message, "line": line, "code": text}
