"""Blocking use, for scripts and notebooks (works inside a running event loop).

``SyncToolKernel`` runs a ``ToolKernel`` on a private event loop in a background
thread, so it neither needs nor disturbs the caller's loop (Jupyter has one). Its
methods are ``ToolKernel``'s, each wrapped once, as jupyter_client makes its blocking
client from the async one: a coroutine method runs to its end on that loop, and
``stream`` (an async iterator) becomes a plain iterator. Properties and settings
(``running``, ``timeout``...) are the kernel's own.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator
from typing import Any, Concatenate, ParamSpec, TypeVar

from ..timeouts import Timeout, TimeoutLike
from .bridge import ToolBridge
from .results import ExecutionResult
from .tool_kernel import ToolKernel
from .tools import ToolsLike

P = ParamSpec("P")
T = TypeVar("T")


def _blocking(
    method: Callable[Concatenate[ToolKernel, P], Coroutine[Any, Any, T]], *, runs_code: bool = False
) -> Callable[Concatenate[SyncToolKernel, P], T]:
    """``ToolKernel.method`` without ``await``. ``runs_code``: refuse, before waiting,
    to be called by a tool of this kernel (that would wait forever for the cell that
    waits for the tool)."""

    @functools.wraps(method)
    def blocking(self: SyncToolKernel, /, *args: P.args, **kwargs: P.kwargs) -> T:
        if runs_code:
            self.kernel.refuse_reentry()
        return self._call(method(self.kernel, *args, **kwargs))

    return blocking


def _iterating(
    method: Callable[Concatenate[ToolKernel, P], AsyncGenerator[T, None]],
) -> Callable[Concatenate[SyncToolKernel, P], Iterator[T]]:
    """``ToolKernel.method``, an async iterator, as a plain one (it runs code)."""

    @functools.wraps(method)
    def iterating(self: SyncToolKernel, /, *args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        self.kernel.refuse_reentry()  # now, not at the first next()
        return self._iterate(method(self.kernel, *args, **kwargs))

    return iterating


class SyncToolKernel:
    """``ToolKernel`` with blocking methods::

        with SyncToolKernel(tools=[get_weather]) as kernel:
            print(kernel.execute("print(tools.get_weather('Oslo', 'Norway'))").stdout)
            for event in kernel.stream("print(tools.get_weather('Rome', 'Italy'))"):
                print(event)

    Takes the same arguments as ``ToolKernel`` and has the same methods and
    properties, without ``await``: ``stream`` is a plain iterator (leaving it early
    interrupts its run; at once with ``contextlib.closing``). ``kernel`` is the
    ``ToolKernel`` itself. Async tools run on the kernel's private loop thread; sync
    tools in worker threads. The loop thread ends with ``close()`` (or the ``with``
    block), and at once when the constructor or ``start`` in ``with`` fails.
    """

    kernel: ToolKernel

    def __init__(self, tools: ToolsLike = None, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="progtc-kernel-loop", daemon=True
        )
        self._thread.start()
        try:
            self.kernel = self._call(_create(tools, options))
        except BaseException:
            self._stop_loop()
            raise

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError(
                "a SyncToolKernel method was called from its own event loop (an async "
                "tool?), where it would wait forever for itself: await the method of "
                "kernel.kernel, the ToolKernel, instead"
            )
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _iterate(self, events: AsyncGenerator[T, None]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self._call(_next(events))
                except StopAsyncIteration:
                    return
        finally:
            if not self._loop.is_closed():
                self._call(events.aclose())  # a run left early is interrupted

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    # Settings such as ``timeout`` or ``tools`` are the kernel's: read and set there.
    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "kernel":
            raise AttributeError(name)
        return getattr(self.kernel, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_") or name == "kernel":
            object.__setattr__(self, name, value)
        else:
            setattr(self.kernel, name, value)

    def __enter__(self) -> SyncToolKernel:
        try:
            self.start()
        except BaseException:
            self.close()  # no with block to do it: the loop thread ends here
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- ToolKernel's methods, without await ------------------------------------------

    start = _blocking(ToolKernel.start)
    execute = _blocking(ToolKernel.execute, runs_code=True)
    stream = _iterating(ToolKernel.stream)
    install_modules = _blocking(ToolKernel.install_modules, runs_code=True)
    reset = _blocking(ToolKernel.reset, runs_code=True)
    restart = _blocking(ToolKernel.restart)
    interrupt = _blocking(ToolKernel.interrupt)

    def close(self) -> None:
        """Shut the kernel down (one of its own) and end the loop thread."""
        if self._loop.is_closed():
            return
        try:
            self._call(self.kernel.close())
        finally:
            self._stop_loop()

    def refuse_reentry(self) -> None:
        self.kernel.refuse_reentry()

    @property
    def timeout(self) -> Timeout:
        """The kernel's timeouts; set a number (the run timeout) or a ``Timeout``."""
        return self.kernel.timeout

    @timeout.setter
    def timeout(self, value: TimeoutLike) -> None:
        self.kernel.timeout = value

    @property
    def running(self) -> bool:
        """Started (or attached) and not closed."""
        return self.kernel.running

    @property
    def bridge(self) -> ToolBridge:
        return self.kernel.bridge

    @property
    def kernel_manager(self) -> Any:
        """The jupyter_client manager of a local kernel, if there is one."""
        return self.kernel.kernel_manager


async def _create(tools: ToolsLike, options: dict[str, Any]) -> ToolKernel:
    return ToolKernel(tools, **options)  # built on its loop: it owns asyncio primitives


async def _next(events: AsyncGenerator[T, None]) -> T:
    return await events.__anext__()


def run(code: str, tools: ToolsLike = None, **options: Any) -> ExecutionResult:
    """Run code once in a fresh kernel with these tools, and return the result."""
    with SyncToolKernel(tools, **options) as kernel:
        return kernel.execute(code)
