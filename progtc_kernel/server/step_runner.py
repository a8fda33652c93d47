"""The kernel side of progtc's step API: runs one step run's code in the kernel.

Not imported by the server: ``steps.py`` sends this file's source to the pool kernel,
which compiles it under ``FILENAME`` (so its frames leave the code's tracebacks) and
awaits ``run(...)``. It imports only the standard library: the kernel may have no
progtc_kernel package at all (the host injects the kernel side).

As progtc 0.2.0's server does, it runs the code with top-level ``await`` under the
filename ``<code>``, with its own ``tools`` module and its output captured, and names
each tool call by its place in the code: the task that made it (a path of task
creations from the code's own task, ``0``) and how many calls that task made before
(``"0.1#2"``). A call whose name has a recorded result (a replay) gets it at once, after
checking that it is the call that was recorded (progtc's determinism modes); any other
goes to the host, which hands it to the client and sends back its result.

The host learns when the code has made all the calls it can make for now: after a new
call, once the event loop has turned ``QUIET_TURNS`` times without another, the kernel
says how many calls it has made in all (``progtc_step_ready``). At the end it sends the
final message (``progtc_step_done``).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import hashlib
import io
import json
import linecache
import os
import sys
import traceback
import types
from collections import defaultdict
from typing import Any

FILENAME = "<progtc-kernel step>"
CODE_FILENAME = "<code>"
# Loop turns without a new call before the calls made so far are a batch. A task woken
# by a `gather` makes its call one turn after the task that created it.
QUIET_TURNS = 3
DETERMINISM_MESSAGE = (
    "This code execution framework only works when the code calls tools in a "
    "deterministic order, with deterministic arguments. The call to `{}` violated "
    "this rule."
)


class DeterminismError(Exception):
    """A replayed call is not the call the state recorded (progtc's own name)."""


def call_hash(tool_name: str, args: Any, kwargs: Any, mode: str) -> str:
    """progtc's ``tool_call_hash``: the name, and in ``strict`` mode the arguments."""
    payload: dict[str, Any] = {"tool_name": tool_name}
    if mode == "strict":
        payload["args"] = list(args)
        payload["kwargs"] = kwargs
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


class Frames:
    """The task factory of progtc's ``TrackedTaskFactory``: a task created by a tracked
    task gets its parent's frame plus the count of its earlier siblings. Tasks made by
    anything else (the kernel's own work, this module's notices) are not tracked."""

    def __init__(self, loop: asyncio.AbstractEventLoop, root: asyncio.Task[Any]) -> None:
        self.loop = loop
        self.ids: dict[asyncio.Task[Any], tuple[int, ...]] = {root: ()}
        self.children: defaultdict[tuple[int, ...], int] = defaultdict(int)
        self.calls: defaultdict[tuple[int, ...], int] = defaultdict(int)
        self.inside_call: set[asyncio.Task[Any]] = set()  # tasks in the host's call code
        self.previous = loop.get_task_factory()
        loop.set_task_factory(self.create_task)

    def create_task(self, loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        task: Any
        if self.previous is not None:
            task = self.previous(loop, coro, **kwargs)
        else:
            task = asyncio.Task(coro, loop=loop, **kwargs)
        parent = asyncio.current_task(loop)
        frame = self.ids.get(parent) if parent is not None else None
        if frame is not None and parent not in self.inside_call:
            self.ids[task] = (*frame, self.children[frame])
            self.children[frame] += 1
        return task

    def next_call(self) -> tuple[tuple[int, ...], int]:
        task = asyncio.current_task(self.loop)
        frame = self.ids.get(task, ()) if task is not None else ()
        index = self.calls[frame]
        self.calls[frame] += 1
        return frame, index

    def close(self) -> None:
        self.loop.set_task_factory(self.previous)
        self.ids.clear()


class Calls:
    """The calls of one run: recorded ones answered from the state, new ones sent to
    the host, and a notice to the host whenever the code has gone quiet."""

    def __init__(self, host: Any, frames: Frames, state: dict[str, Any]) -> None:
        self.host = host
        self.frames = frames
        self.results: dict[str, Any] = state.get("tool_results", {})
        self.hashes: dict[str, str] = state.get("tool_call_hashes", {})
        self.mode: str = state.get("determinism", "strict")
        self.made = 0  # calls sent to the host
        self.notices: set[asyncio.Task[None]] = set()
        self.watching = False

    def tool(self, name: str) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            frame, index = self.frames.next_call()
            key = f"{'.'.join(map(str, frame))}#{index}"
            digest = call_hash(name, args, kwargs, self.mode)
            if key in self.results:
                if self.hashes.get(key) != digest:
                    raise DeterminismError(DETERMINISM_MESSAGE.format(name))
                return self.results[key]
            self.made += 1
            self._watch()
            task = asyncio.current_task()
            if task is not None:  # what the host's call code creates is not the code's
                self.frames.inside_call.add(task)
            try:
                return await self.host.progtc_step_call(
                    name, list(frame), index, digest, list(args), dict(kwargs)
                )
            finally:
                self.frames.inside_call.discard(task)

        call.__name__ = call.__qualname__ = name
        return call

    def _watch(self) -> None:
        if not self.watching:
            self.watching = True
            self.frames.loop.call_soon(self._quiet_for, 0, self.made)

    def _quiet_for(self, turns: int, seen: int) -> None:
        if self.made != seen:
            turns, seen = 0, self.made
        if turns < QUIET_TURNS:
            self.frames.loop.call_soon(self._quiet_for, turns + 1, seen)
            return
        self.watching = False
        notice = asyncio.ensure_future(self._announce(self.made))
        self.notices.add(notice)
        notice.add_done_callback(self.notices.discard)

    async def _announce(self, made: int) -> None:
        await self.host.progtc_step_ready(made)


def _print_user_traceback(error: BaseException) -> None:
    """progtc's: the traceback without the runner's (and the host's call code's)
    frames; an error of the step API itself by its bare class name."""
    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if frame.filename != FILENAME and f"{os.sep}progtc_kernel{os.sep}" not in frame.filename
    ]
    if frames:
        print("Traceback (most recent call last):", file=sys.stderr)
        for line in traceback.format_list(frames):
            print(line, file=sys.stderr, end="")
    if isinstance(error, DeterminismError):
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
    else:
        for line in traceback.format_exception_only(type(error), error):
            print(line, file=sys.stderr, end="")


async def _run_code(code: str, tool_names: list[str], calls: Calls) -> str:
    """Run the code as progtc does; the kind of its end ("success", "syntax_error"...)."""
    tools = types.ModuleType("tools")
    for name in tool_names:
        setattr(tools, name, calls.tool(name))
    sys.modules["tools"] = tools
    lines = code.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    linecache.cache[CODE_FILENAME] = (len(code), None, lines, CODE_FILENAME)
    try:
        compiled = compile(code, CODE_FILENAME, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    except (SyntaxError, ValueError) as error:
        _print_user_traceback(error)
        return "syntax_error"
    try:
        coroutine = eval(compiled, {"__builtins__": __builtins__})
        if asyncio.iscoroutine(coroutine):
            await asyncio.create_task(coroutine)
    except DeterminismError as error:
        _print_user_traceback(error)
        return "determinism_error"
    except Exception as error:
        _print_user_traceback(error)
        return "runtime_error"
    return "success"


async def run(code: str, tool_names: list[str], state: dict[str, Any]) -> None:
    """Run one step run's code; its final message goes to the host."""
    host = sys.modules["tools"]  # the extension's: the host's tools
    loop = asyncio.get_running_loop()
    root = asyncio.current_task()
    assert root is not None
    frames = Frames(loop, root)
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            kind = await _run_code(code, tool_names, Calls(host, frames, state))
    finally:
        frames.close()
        sys.modules["tools"] = host
    await host.progtc_step_done(
        {"type": kind, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}
    )
