"""What depends on the Python version, in one place (standard library only).

Kernel code calls a tool in a way that its calling frame decides (``RULE`` in
``kernel_side/tools_module.py``), ``from tools import x`` is told from ``tools.x`` by
the instruction the importing frame runs, and the host asks asyncio whether a task is
being cancelled. Each leans on CPython details that moved between versions (frames,
bytecode, comprehensions inlined by PEP 709 in 3.12, ``Task.cancelling`` in 3.11), so
they live here, and ``tests/test_pythons.py`` runs them on every Python the package
declares (3.10 to 3.13). The kernel side ships this module to kernels that lack it.
"""

from __future__ import annotations

import ast
import asyncio
import dis
import inspect
import sys
import types

_ASYNC_FLAGS = inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR | inspect.CO_ITERABLE_COROUTINE
# Code that runs in frames of its own but belongs to the code around it. List, dict and
# set comprehensions have no frame of their own from 3.12 on (PEP 709); generator
# expressions and lambdas still do.
_PART_OF_THE_CODE_AROUND = frozenset(
    {"<listcomp>", "<dictcomp>", "<setcomp>", "<genexpr>", "<lambda>"}
)
_IMPORT_FROM = dis.opmap["IMPORT_FROM"]


def caller(depth: int = 1) -> types.FrameType:
    """The frame ``depth`` calls up from the function that asks (1: its caller)."""
    return sys._getframe(depth + 1)


def frame_written_in(frame: types.FrameType | None) -> types.FrameType | None:
    """The frame of the code a call is written in: comprehensions, generator
    expressions and lambdas count as the code around them."""
    while frame is not None and frame.f_code.co_name in _PART_OF_THE_CODE_AROUND:
        frame = frame.f_back
    return frame


def can_await(code: types.CodeType) -> bool:
    """Whether the code is ``async def`` code (a coroutine or async generator)."""
    return bool(code.co_flags & _ASYNC_FLAGS)


def is_module_level(code: types.CodeType) -> bool:
    """Whether the code is a module's (or a cell's) top level."""
    return code.co_name == "<module>"


def awaits_at_top_level(source: str, filename: str) -> bool:
    """Whether ``source`` uses ``await`` outside any function (as a cell may)."""
    try:
        code = compile(
            source, filename, "exec", dont_inherit=True, flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        )
    except (SyntaxError, ValueError):
        return False
    return bool(code.co_flags & inspect.CO_COROUTINE)


def importing_from(frame: types.FrameType) -> bool:
    """Whether the frame is running ``from module import name`` right now.

    ``f_lasti`` is the byte offset of the running instruction in ``co_code`` on every
    version (3.10 counts instructions inside, bytes outside), and ``co_code`` shows no
    specialized or instrumented instructions (3.11+)."""
    return frame.f_code.co_code[frame.f_lasti] == _IMPORT_FROM


def being_cancelled(task: asyncio.Task[object] | None) -> bool | None:
    """Whether someone cancels the task (rather than its code having raised
    CancelledError by itself); None where Python cannot tell (3.10, or no task)."""
    if task is None or sys.version_info < (3, 11):
        return None
    return task.cancelling() > 0
