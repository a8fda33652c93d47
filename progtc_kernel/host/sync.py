"""Blocking use, for scripts and notebooks (works inside a running event loop).

``SyncToolKernel`` runs a ``ToolKernel`` on a private event loop in a background
thread (``LoopThread``), so it neither needs nor disturbs the caller's loop (Jupyter
has one). Its methods are generated from ``ToolKernel``'s, as jupyter_client makes
its blocking client from the async one, so that it cannot fall behind: a coroutine
method runs to its end on that loop, ``stream`` (an async iterator) becomes a plain
iterator, and properties and settings (``running``, ``timeout``...) are the
kernel's own.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, cast

from .results import ExecutionResult
from .threads import LoopThread
from .tool_kernel import ToolKernel
from .tools import ToolsLike

if TYPE_CHECKING:
    from jupyter_client.manager import KernelManager

    from ..approval import ApprovalRequest
    from ..timeouts import Timeout, TimeoutLike
    from .bridge import ToolBridge

P = ParamSpec("P")
T = TypeVar("T")
LOOP_THREAD_NAME = "progtc-kernel-loop"


def _blocking(
    method: Callable[Concatenate[ToolKernel, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[SyncToolKernel, P], T]:
    """``ToolKernel.method`` without ``await``. One that runs code refuses, before
    waiting, to be called by a tool of this kernel (that would wait forever for the
    cell that waits for the tool)."""
    runs_code = getattr(method, "runs_code", False)

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


def _delegating(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """``ToolKernel.method``, a plain one, called on the kernel."""

    @functools.wraps(method)
    def delegating(self: SyncToolKernel, /, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.kernel, name)(*args, **kwargs)

    return delegating


def _kernels_property(name: str, prop: property) -> property:
    def get(self: SyncToolKernel) -> Any:
        return getattr(self.kernel, name)

    def set_(self: SyncToolKernel, value: Any) -> None:
        setattr(self.kernel, name, value)

    return property(get, set_ if prop.fset else None, doc=prop.__doc__)


def _same_arguments_as(
    init: Callable[Concatenate[ToolKernel, P], None],
) -> Callable[[Callable[..., None]], Callable[Concatenate[SyncToolKernel, P], None]]:
    """Give the decorated ``__init__`` the signature and documentation of ``init``."""

    def decorate(own: Callable[..., None]) -> Callable[Concatenate[SyncToolKernel, P], None]:
        qualname = own.__qualname__
        functools.update_wrapper(own, init)
        own.__qualname__ = qualname
        return cast("Callable[Concatenate[SyncToolKernel, P], None]", own)

    return decorate


class SyncToolKernel:
    """``ToolKernel`` with blocking methods, for scripts and for notebooks whose event loop
    already runs.

    It has ``ToolKernel``'s methods and properties, without ``await``: ``stream`` is a
    plain iterator (leaving it early interrupts its run; at once with
    ``contextlib.closing``). Async tools run on the kernel's private loop thread, sync
    tools in worker threads. The loop thread ends with ``close()`` (or the ``with``
    block), and at once when the constructor or ``start`` fails.

    Example:
        ```python
        with SyncToolKernel(tools=[get_weather]) as kernel:
            print(kernel.execute("import tools\\nprint(tools.get_weather('Oslo', 'NO'))").stdout)
        ```

    Args:
        *args: ``ToolKernel``'s arguments: ``tools``...
        **kwargs: ``ToolKernel``'s keyword arguments: ``kernel=``, ``timeout=``...
    """

    kernel: ToolKernel

    @_same_arguments_as(ToolKernel.__init__)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop_thread = LoopThread(LOOP_THREAD_NAME)
        try:
            self.kernel = self._call(_create(args, kwargs))
        except BaseException:
            self._loop_thread.stop()
            raise

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self._loop_thread.call(
            coroutine,
            caller="a SyncToolKernel method (await the method of kernel.kernel, the "
            "ToolKernel, instead)",
        )

    def _iterate(self, events: AsyncGenerator[T, None]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self._call(_next(events))
                except StopAsyncIteration:
                    return
        finally:
            if not self._loop_thread.closed:
                self._call(events.aclose())  # a run left early is interrupted

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

    def close(self) -> None:
        """Shut the kernel down (one of its own) and end the loop thread."""
        if self._loop_thread.closed:
            return
        try:
            self._call(self.kernel.close())
        finally:
            self._loop_thread.stop()

    if TYPE_CHECKING:  # generated below, from ToolKernel; spelled out for type checkers
        start = _blocking(ToolKernel.start)
        execute = _blocking(ToolKernel.execute)
        stream = _iterating(ToolKernel.stream)
        install_modules = _blocking(ToolKernel.install_modules)
        reset = _blocking(ToolKernel.reset)
        restart = _blocking(ToolKernel.restart)
        interrupt = _blocking(ToolKernel.interrupt)
        decide = _blocking(ToolKernel.decide)
        confirm_waiting = _blocking(ToolKernel.confirm_waiting)
        follow = _iterating(ToolKernel.follow)
        join = _blocking(ToolKernel.join)

        def refuse_reentry(self) -> None: ...

        @property
        def timeout(self) -> Timeout: ...

        @timeout.setter
        def timeout(self, value: TimeoutLike) -> None: ...

        @property
        def running(self) -> bool: ...

        @property
        def bridge(self) -> ToolBridge: ...

        @property
        def kernel_manager(self) -> KernelManager | None: ...

        @property
        def pending_approvals(self) -> list[ApprovalRequest]: ...

        @property
        def held_runs(self) -> list[str]: ...


def _derive_blocking_api() -> None:
    """Give ``SyncToolKernel`` every public method and property of ``ToolKernel`` it
    does not define itself (as ``close``), without ``await``."""
    for name, member in vars(ToolKernel).items():
        if name.startswith("_") or name in vars(SyncToolKernel):
            continue
        if isinstance(member, property):
            derived: Any = _kernels_property(name, member)
        elif inspect.isasyncgenfunction(member):
            derived = _iterating(member)
        elif inspect.iscoroutinefunction(member):
            derived = _blocking(member)
        elif inspect.isfunction(member):
            derived = _delegating(name, member)
        else:
            continue  # class-level settings are read through __getattr__
        setattr(SyncToolKernel, name, derived)


_derive_blocking_api()


async def _create(args: tuple[Any, ...], kwargs: dict[str, Any]) -> ToolKernel:
    return ToolKernel(*args, **kwargs)  # built on its loop: it owns asyncio primitives


async def _next(events: AsyncGenerator[T, None]) -> T:
    return await events.__anext__()


def run(code: str, tools: ToolsLike = None, **options: Any) -> ExecutionResult:
    """Run code once in a fresh kernel with these tools, and return the result.

    Args:
        code: The code to run.
        tools: The tools it may call.
        **options: As for ``ToolKernel`` (``kernel=``, ``timeout=``...).

    Returns:
        The run's result; check ``result.ok`` or call ``result.raise_for_error()``.
    """
    with SyncToolKernel(tools, **options) as kernel:
        return kernel.execute(code)
