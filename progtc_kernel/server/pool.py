"""Warm kernels, ready before they are asked for, and the leases of those handed out.

A kernel is warm when it has started, loaded the ``progtc_kernel`` extension and run
a first cell: what makes a cold kernel's first execution slow is already done. Each
one is leased once and reaped after (nothing of one execution can leak into the
next); a named session keeps its kernel across leases until it is ended.

Leases watch themselves, so that no kernel is left running for a client that is gone:
a one-shot lease ends when its websocket client disconnects (after a grace for
reconnects), when it never connects, or at the server's execution ceiling; a kernel
busy past that ceiling is interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from jupyter_core.utils import ensure_async

log = logging.getLogger("progtc_kernel.server")

# A websocket client that drops may come back with the same session (the transport
# reconnects): give it this long before its kernel is reaped.
RECONNECT_GRACE = 10.0
# A client leases a kernel and then opens its websocket: this long, at most.
CONNECT_GRACE = 30.0
# After a kernel fails to start, the next attempt waits this long (doubling up to a
# minute): a broken kernelspec must not become a loop of failing processes.
RETRY_AFTER = 1.0
# How often leases are checked. Leases end on the event that ends them where there is
# one (a release, the execution's end); this only catches clients that vanished.
WATCH_INTERVAL = 1.0


class PoolError(Exception):
    """The pool cannot hand out a kernel: kernels fail to start (the message says why)."""


class PoolExhausted(PoolError):
    """Every kernel the server may run is busy, and none came free in time."""


@dataclass
class Lease:
    """A kernel handed out. ``session``: the name of a persistent session, if any.
    ``websocket``: the client drives it over the kernel websocket (else the server
    drives it itself, and connections say nothing)."""

    kernel_id: str
    session: str | None = None
    websocket: bool = True
    taken_at: float = field(default_factory=time.monotonic)
    taken_on: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    connected: bool = False
    disconnected_at: float | None = None
    busy_since: float | None = None


class KernelPool:
    """Keeps ``size`` warm kernels of ``kernel_name`` on a Jupyter Server's kernel manager.

    ``kernel_manager``: the server's ``MappingKernelManager``. ``size``: warm kernels kept
    ready. ``max_kernels``: kernels running at once, warm and leased (the bound that
    makes requests wait). ``wait_timeout``: seconds a request waits for a kernel before
    ``PoolExhausted``. ``execution_timeout``: the server's ceiling for one execution
    (``None``: none); a one-shot lease is reaped a grace after it, a session's kernel
    interrupted. ``kernel_name``: the kernelspec (default: the server's default).
    """

    def __init__(self, kernel_manager: Any, *, size: int = 2, max_kernels: int = 16,
                 wait_timeout: float | None = 30.0, execution_timeout: float | None = 30.0,
                 kernel_name: str | None = None) -> None:
        if size < 0 or max_kernels < 1 or size > max_kernels:
            raise ValueError(f"a pool of {size} warm kernels with at most {max_kernels} "
                             "running: give 0 <= size <= max_kernels, max_kernels >= 1")
        self.kernel_manager = kernel_manager
        self.size = size
        self.max_kernels = max_kernels
        self.wait_timeout = wait_timeout
        self.execution_timeout = execution_timeout
        self.kernel_name = kernel_name
        self.leases: dict[str, Lease] = {}
        self.sessions: dict[str, str] = {}  # session name -> kernel id
        self._warm: list[str] = []
        self._starting = 0
        self._waiting = 0
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._last_failure: str | None = None
        self._retry_after = RETRY_AFTER
        self._retry_at = 0.0
        self._watcher: asyncio.Task[None] | None = None
        self._stopped = False

    # -- what handlers use --------------------------------------------------------------

    def start(self) -> None:
        """Begin filling the pool and watching leases (call on the server's loop)."""
        self._watcher = asyncio.ensure_future(self._watch())
        self._refill()

    async def take(self, *, session: str | None = None, websocket: bool = True) -> Lease:
        """A warm kernel, leased; a session's own kernel if it has one already."""
        if session is not None and session in self.sessions:
            return self.leases[self.sessions[session]]
        kernel_id = await self._take_warm()
        lease = Lease(kernel_id, session=session, websocket=websocket)
        self.leases[kernel_id] = lease
        if session is not None:
            self.sessions[session] = kernel_id
        self._refill()  # now that the lease counts against max_kernels
        return lease

    def release(self, kernel_id: str) -> None:
        """End a lease: its kernel is shut down (never reused, and in the background:
        nobody waits for a process to exit) and the pool refills."""
        lease = self.leases.pop(kernel_id, None)
        if lease is not None and lease.session is not None:
            self.sessions.pop(lease.session, None)
        self._spawn(self._shut_down(kernel_id))

    def status(self) -> dict[str, Any]:
        return {"warm": len(self._warm), "starting": self._starting,
                "leased": len(self.leases), "waiting": self._waiting,
                "size": self.size, "max_kernels": self.max_kernels,
                "sessions": sorted(self.sessions)}

    async def stop(self) -> None:
        """Stop refilling and shut down every kernel of the pool, warm and leased."""
        self._stopped = True
        if self._watcher is not None:
            self._watcher.cancel()
        # Kernels on their way are let finish starting (then shut down): a kernel start
        # cancelled midway leaves the server's kernel manager unable to shut down.
        await asyncio.gather(*self._tasks, return_exceptions=True)
        kernels = [*self._warm, *self.leases]
        self._warm.clear()
        self.leases.clear()
        self.sessions.clear()
        await asyncio.gather(*(self._shut_down(k) for k in kernels), return_exceptions=True)

    # -- filling ------------------------------------------------------------------------

    @property
    def _running(self) -> int:
        return len(self._warm) + self._starting + len(self.leases)

    def _refill(self) -> None:
        """Start kernels until the warm ones (and those on their way) cover the pool's
        size plus the requests waiting, within ``max_kernels``."""
        if self._last_failure and time.monotonic() < self._retry_at:
            return
        while (not self._stopped and self._running < self.max_kernels
               and len(self._warm) + self._starting < self.size + self._waiting):
            self._starting += 1
            self._spawn(self._start_one())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start_one(self) -> None:
        kernel_id: str | None = None
        try:
            kernel_id = await self.kernel_manager.start_kernel(kernel_name=self.kernel_name)
            await warm_up(self.kernel_manager.get_kernel(kernel_id))
        except Exception as exc:
            self._failed(f"{type(exc).__name__}: {exc}")
            if kernel_id is not None:
                with contextlib.suppress(Exception):
                    await self.kernel_manager.shutdown_kernel(kernel_id, now=True)
            kernel_id = None
        finally:
            self._starting -= 1
        if kernel_id is not None:
            if self._stopped:
                await self._shut_down(kernel_id)
                return
            self._last_failure, self._retry_after = None, RETRY_AFTER
            self._warm.append(kernel_id)
        async with self._changed:
            self._changed.notify_all()

    def _failed(self, why: str) -> None:
        """A kernel did not start: say why, and retry later rather than at once."""
        log.error("progtc_kernel: a pool kernel failed to start: %s", why)
        self._last_failure = why
        self._retry_at = time.monotonic() + self._retry_after
        asyncio.get_running_loop().call_later(self._retry_after, self._refill)
        self._retry_after = min(self._retry_after * 2, 60.0)

    async def _take_warm(self) -> str:
        deadline = time.monotonic() + (self.wait_timeout or float("inf"))
        self._waiting += 1
        try:
            async with self._changed:
                while True:
                    self._refill()
                    while self._warm:
                        kernel_id = self._warm.pop(0)
                        if await self._alive(kernel_id):
                            return kernel_id
                        self._spawn(self._shut_down(kernel_id))
                    if self._last_failure and not self._starting:
                        raise PoolError(f"the server could not start a kernel: "
                                          f"{self._last_failure}")
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise PoolExhausted(self._exhausted())
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), min(left, 3600.0))
        finally:
            self._waiting -= 1

    def _exhausted(self) -> str:
        return (f"no kernel came free within {self.wait_timeout or 0:g} s: all "
                f"{self.max_kernels} kernels the server may run are busy; try again "
                "later, or start the server with a larger --max-kernels")

    async def _alive(self, kernel_id: str) -> bool:
        try:
            return bool(await ensure_async(self.kernel_manager.get_kernel(kernel_id)
                                           .is_alive()))
        except KeyError:
            return False

    async def _shut_down(self, kernel_id: str) -> None:
        with contextlib.suppress(KeyError, RuntimeError):  # already gone
            await self.kernel_manager.shutdown_kernel(kernel_id, now=True)
        async with self._changed:
            self._changed.notify_all()
        self._refill()

    # -- watching leases ----------------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            now = time.monotonic()
            for lease in list(self.leases.values()):
                try:
                    await self._check(lease, now)
                except Exception:
                    log.exception("progtc_kernel: checking lease %s", lease.kernel_id)

    async def _check(self, lease: Lease, now: float) -> None:
        model = self.kernel_manager.kernel_model(lease.kernel_id)
        busy = model.get("execution_state") == "busy"
        lease.busy_since = (lease.busy_since or now) if busy else None
        if not lease.connected and _active_since(model, lease.taken_on):
            lease.connected = True  # a client came, even if it left between two checks
        watched = lease.websocket and lease.session is None
        if watched and (why := self._client_gone(lease, int(model.get("connections", 0)), now)):
            log.info("progtc_kernel: reaping kernel %s: %s", lease.kernel_id, why)
            self.release(lease.kernel_id)
            return
        ceiling = self.execution_timeout
        if ceiling is not None and lease.busy_since is not None \
                and now - lease.busy_since > ceiling + RECONNECT_GRACE:
            log.info("progtc_kernel: interrupting kernel %s: busy past the server's "
                     "%g s ceiling", lease.kernel_id, ceiling)
            lease.busy_since = None
            await ensure_async(self.kernel_manager.interrupt_kernel(lease.kernel_id))

    def _client_gone(self, lease: Lease, connections: int, now: float) -> str | None:
        if connections:
            lease.connected, lease.disconnected_at = True, None
            ceiling = self.execution_timeout
            if ceiling is not None and now - lease.taken_at > ceiling + CONNECT_GRACE:
                return f"leased past the server's {ceiling:g} s execution ceiling"
            return None
        if not lease.connected:
            return "its client never connected" if now - lease.taken_at > CONNECT_GRACE \
                else None
        lease.disconnected_at = lease.disconnected_at or now
        if now - lease.disconnected_at > RECONNECT_GRACE:
            return "its client disconnected"
        return None


def _active_since(model: dict[str, Any], moment: datetime) -> bool:
    try:
        return datetime.fromisoformat(str(model.get("last_activity"))) > moment
    except ValueError:
        return False


async def warm_up(kernel_manager: Any) -> None:
    """Load the extension and run a first cell, so that the lessee's first run is fast."""
    from ..host.bridge import ToolBridge

    bridge = ToolBridge(kernel_manager)
    try:
        await bridge.start(timeout=60.0, fresh=True)
    finally:
        await bridge.close()
