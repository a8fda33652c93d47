"""Threads of the host: where sync tools run (``ToolThreads``), and the one private
event loop thread of blocking callers (``LoopThread``).

Sync tools run on daemon threads of their own, a bounded number at once.

Not asyncio's default executor: it is small (6 threads on 2 cores), shared with
everything else on the loop, and both ``asyncio.run`` and the interpreter wait for
its threads at exit, so one hung tool would keep the host from ever exiting. Here a
call that is cancelled (interrupt, per-call timeout) frees its slot at once; its
thread, if the tool hangs, is abandoned and dies with the process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from ..exceptions import ReentrantExecutionError

DEFAULT_TOOL_THREADS = 32
T = TypeVar("T")

# (True, value) or (False, the exception the function raised, whatever its kind)
Outcome = tuple[bool, Any]


class ToolThreads:
    """Runs sync tools, at most ``size`` at once; the rest wait for a slot.

    ``size``: how many sync tools may run at the same time (default 32)."""

    def __init__(self, size: int = DEFAULT_TOOL_THREADS) -> None:
        if size < 1:
            raise ValueError("tool_threads must be at least 1")
        self.size = size
        self._slots: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}

    def _slots_here(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        slots = self._slots.get(loop)
        if slots is None:
            for old in [old for old in self._slots if old.is_closed()]:
                del self._slots[old]
            slots = self._slots[loop] = asyncio.Semaphore(self.size)
        return slots

    async def run(
        self,
        function: Callable[..., Any],
        args: list[Any],
        kwargs: dict[str, Any],
        *,
        on_queued: Callable[[], Awaitable[None] | None] | None = None,
        on_started: Callable[[], Awaitable[None] | None] | None = None,
    ) -> Outcome:
        """Run ``function`` on a thread of its own once a slot is free.

        Never raises what the function raised (not even SystemExit): it comes back as
        ``(False, exception)``. Cancelling the caller frees the slot at once."""
        slots = self._slots_here()
        queued = slots.locked()
        if queued and on_queued is not None:
            on_queued()
        async with slots:
            if queued and on_started is not None:
                ready = on_started()
                if ready is not None:  # the kernel's ack that it counts the call as started
                    await ready
            loop = asyncio.get_running_loop()
            future: asyncio.Future[Outcome] = loop.create_future()
            context = contextvars.copy_context()  # the caller's context vars, as to_thread

            def work() -> None:
                outcome: Outcome
                try:
                    outcome = (True, context.run(function, *args, **kwargs))
                except BaseException as exc:
                    outcome = (False, exc)
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(_deliver, future, outcome)

            threading.Thread(
                target=work,
                daemon=True,
                name=f"progtc-tool-{getattr(function, '__name__', 'tool')}",
            ).start()
            return await future


def _deliver(future: asyncio.Future[Outcome], outcome: Outcome) -> None:
    if not future.done():
        future.set_result(outcome)


class LoopThread:
    """An event loop of its own, run forever on a daemon thread: for blocking callers
    (``SyncToolKernel``, a notebook run) and for work that must go on whichever loop
    its caller runs, or none (tool calls of a notebook driven by nbclient).

    Args:
        name: The thread's name (``progtc-kernel-...``), to tell it in a dump.
    """

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    @property
    def closed(self) -> bool:
        return self.loop.is_closed()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coroutine`` on the loop; its future, to wait on from any thread."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def call(self, coroutine: Coroutine[Any, Any, T], *, caller: str = "this method") -> T:
        """Run ``coroutine`` on the loop and wait for its result, blocking this thread.

        Args:
            coroutine: What to run.
            caller: What called, as the error for a call from the loop's own thread
                names it.

        Raises:
            ReentrantExecutionError: Called from the loop's own thread, where it would wait
                forever for itself.
        """
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise ReentrantExecutionError(
                f"{caller} was called from its own event loop (an async tool?), where "
                "it would wait forever for itself"
            )
        return self.submit(coroutine).result()

    async def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Await ``coroutine`` run on this loop, from another loop."""
        return await asyncio.wrap_future(self.submit(coroutine))

    def stop(self, timeout: float | None = None) -> None:
        """End the loop and its thread. The loop is closed once the thread ended
        (within ``timeout`` seconds; ``None``: however long that takes)."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()
