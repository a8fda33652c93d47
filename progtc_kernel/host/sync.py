"""Blocking use, for scripts and notebooks (works inside a running event loop).

``SyncToolKernel`` runs a ``ToolKernel`` on a private event loop in a background
thread, so it neither needs nor disturbs the caller's loop (Jupyter has one).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from types import EllipsisType
from typing import Any, TypeVar

from .results import ExecutionResult
from .tool_kernel import ToolKernel
from .tools import ToolsLike

T = TypeVar("T")


class SyncToolKernel:
    """``ToolKernel`` with blocking methods::

        with SyncToolKernel(tools=[get_weather]) as kernel:
            print(kernel.execute("print(tools.get_weather('Oslo', 'Norway'))").stdout)

    Async tools run on the kernel's private loop thread; sync tools in worker threads.
    Takes the same arguments as ``ToolKernel``.
    """

    def __init__(self, tools: ToolsLike = None, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="progtc-kernel-loop", daemon=True)
        self._thread.start()
        self.kernel: ToolKernel = self._call(_create(tools, options))

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def __enter__(self) -> SyncToolKernel:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self._call(self.kernel.start())

    def execute(self, code: str, *, tools: ToolsLike = None,
                timeout: float | EllipsisType | None = ..., silent: bool = False
                ) -> ExecutionResult:
        self.kernel.refuse_reentry()  # before waiting on the loop a tool of ours may hold
        return self._call(self.kernel.execute(code, tools=tools, timeout=timeout, silent=silent))

    def reset(self) -> None:
        self._call(self.kernel.reset())

    def restart(self) -> None:
        self._call(self.kernel.restart())

    def interrupt(self) -> None:
        self._call(self.kernel.interrupt())

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._call(self.kernel.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()


async def _create(tools: ToolsLike, options: dict[str, Any]) -> ToolKernel:
    return ToolKernel(tools, **options)  # built on its loop: it owns asyncio primitives


def run(code: str, tools: ToolsLike = None, **options: Any) -> ExecutionResult:
    """Run code once in a fresh kernel with these tools, and return the result."""
    with SyncToolKernel(tools, **options) as kernel:
        return kernel.execute(code)
