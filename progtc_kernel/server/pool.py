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
import os
import shutil
import tempfile
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from jupyter_client.session import Session
from jupyter_core.utils import ensure_async
from jupyter_server._tz import utcnow
from jupyter_server.gateway.managers import GatewayMappingKernelManager
from jupyter_server.services.kernels.kernelmanager import (
    AsyncMappingKernelManager,
    ServerKernelManager,
)
from tornado import web
from traitlets import Bool, Int, List, Unicode, default

from .._wire import SignatureCheck, head_of
from ..exceptions import KernelError, PoolError, PoolExhausted
from ..kernels.jupyter_server import JupyterServer, RemoteKernel
from ..timeouts import DEFAULT_POOL_WAIT, DEFAULT_RUN, DEFAULT_SESSION_IDLE, DEFAULT_START

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


class ServeKernel(ServerKernelManager):
    """Jupyter Server's manager of one kernel, less two costs it pays per kernel that
    add up under sustained load (a kernel per execution), with the same behaviour:

    * its event logger is the server's, whose event schemas the first kernel
      registered: Jupyter Server registers them again for each kernel (reading and
      validating the YAML schemas: several milliseconds, only to be told they are
      there already);
    * its iopub activity watcher (``last_activity``, ``execution_state``) reads only
      each message's headers, and the content of status messages, as Jupyter
      Server's does, without converting their dates (most of its cost).
    """

    @default("event_logger")
    def _default_event_logger(self) -> Any:
        server = getattr(self.parent, "parent", None)
        shared = getattr(server, "event_logger", None)
        paths = tuple(
            str(p) for p in [*self.core_event_schema_paths, *self.extra_event_schema_paths]
        )
        if shared is not None and paths in _registered_schemas.get(shared, ()):
            return shared
        logger = super()._default_event_logger()
        _registered_schemas.setdefault(logger, set()).add(paths)
        return logger


# Event loggers, and the sets of schema paths registered with them by a ServeKernel.
_registered_schemas: weakref.WeakKeyDictionary[Any, set[tuple[str, ...]]] = (
    weakref.WeakKeyDictionary()
)


class ServeKernelManager(AsyncMappingKernelManager):
    """The server's kernel manager, for every kernel it starts: the pool's and those
    of Jupyter's own ``POST /api/kernels`` or sessions alike.

    * ``max_kernels`` is a ceiling: a start past it is refused with a 503 that says so.
    * Python kernels keep their IPython history in memory: a kernel must not find the
      code another client ran in a shared ``history.sqlite``.
    * A kernel started without a path runs in a folder of its own, removed with it: a
      file one execution writes is not in the next one's working directory.
    * Kernels talk to the server over Unix sockets in a private folder: nothing listens
      on a TCP port, and ipykernel 7 has no "unencrypted TCP" warning to print.
    """

    max_kernels = Int(0, help="Kernels running at once (0: no ceiling).").tag(config=True)
    fork_server = Bool(
        False, help="Fork Python kernels from a template process (progtc-fork-server)."
    ).tag(config=True)
    preload = List(Unicode(), help="Modules the fork server's template imports.").tag(config=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        self._launching: set[str] = set()  # kernel ids being started
        self._folders: dict[str, str] = {}  # kernel id -> its own working directory
        self.removal_listeners: list[Callable[[], None]] = []
        self._sockets = tempfile.mkdtemp(prefix="progtc-serve-") if os.name == "posix" else None

    @default("kernel_manager_class")
    def _default_kernel_manager_class(self) -> str:
        return f"{ServeKernel.__module__}.{ServeKernel.__qualname__}"

    def start_watching_activity(self, kernel_id: str) -> None:
        """Jupyter Server's watcher of a kernel's iopub (``last_activity``,
        ``execution_state``), reading what it reads without converting the dates in
        every message's headers: most of its cost, paid for every iopub message."""
        kernel = self._kernels[kernel_id]
        kernel.reason = ""
        kernel.last_activity = utcnow()
        kernel._activity_stream = kernel.connect_iopub()
        # A session of its own, as Jupyter Server's: the signatures it has seen are
        # not those of the kernel's other clients.
        session = Session(config=kernel.session.config, key=kernel.session.key)
        unpack = session.unpack

        tracked: Callable[[str | None], bool] = self.track_message_type

        check = SignatureCheck(session)

        def record_activity(msg_list: list[bytes]) -> None:
            frames: list[bytes] = session.feed_identities(msg_list)[1]  # type: ignore[assignment]
            try:
                check(head_of(frames))
            except ValueError as exc:
                self.log.warning("kernel %s: an iopub message refused: %s", kernel_id, exc)
                return
            msg_type = unpack(frames[1]).get("msg_type")
            parent_msg_type = unpack(frames[2]).get("msg_type")
            if tracked(msg_type) or tracked(parent_msg_type) or kernel.execution_state == "busy":
                self.last_kernel_activity = kernel.last_activity = utcnow()
            if msg_type == "status":
                execution_state = unpack(frames[4])["execution_state"]
                if tracked(parent_msg_type):
                    kernel.execution_state = execution_state
                elif kernel.execution_state == "starting" and execution_state != "starting":
                    kernel.execution_state = "idle"  # as Jupyter Server normalizes it

        kernel._activity_stream.on_recv(record_activity)

    def running_ids(self) -> set[str]:
        """Every kernel that counts against the ceiling: running, or being started."""
        return set(self._kernels) | self._launching

    async def start_kernel(  # type: ignore[override]  # async, as jupyter_server's is
        self, *, kernel_id: str | None = None, **kwargs: Any
    ) -> str:
        if kernel_id is not None and kernel_id in self:
            return str(await super().start_kernel(kernel_id=kernel_id, **kwargs))
        if self.max_kernels and len(self.running_ids()) >= self.max_kernels:
            raise no_room(self.max_kernels)
        kernel_id = kernel_id or self.new_kernel_id()
        if self._is_python(kwargs.get("kernel_name")):
            kwargs["extra_arguments"] = [
                *kwargs.get("extra_arguments", ()),
                "--HistoryManager.hist_file=:memory:",
            ]
        if kwargs.get("path") is None and "cwd" not in kwargs:
            kwargs["cwd"] = self._folders[kernel_id] = tempfile.mkdtemp(prefix="progtc-kernel-")
        self._launching.add(kernel_id)
        try:
            return str(await super().start_kernel(kernel_id=kernel_id, **kwargs))
        except BaseException:
            self._remove_folder(kernel_id)
            raise
        finally:
            self._launching.discard(kernel_id)

    def _remove_folder(self, kernel_id: str) -> None:
        folder = self._folders.pop(kernel_id, None)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def _is_python(self, kernel_name: str | None) -> bool:
        try:
            assert self.kernel_spec_manager is not None
            spec = self.kernel_spec_manager.get_kernel_spec(kernel_name or self.default_kernel_name)
        except Exception:  # no such kernelspec: the start itself says so
            return False
        return str(spec.language).lower() == "python"

    def pre_start_kernel(self, kernel_name: str | None, kwargs: Any) -> Any:
        km, kernel_name, kernel_id = super().pre_start_kernel(kernel_name, kwargs)
        spec = km.kernel_spec
        if self.fork_server and spec is not None and str(spec.language).lower() == "python":
            from ..kernels.fork_server import fork_server_metadata

            # This manager's own copy of the spec: a kernelspec naming another
            # provisioner keeps it.
            spec.metadata.setdefault("kernel_provisioner", fork_server_metadata(self.preload))
        if self._sockets is not None:
            km.transport = "ipc"
            km.ip = os.path.join(self._sockets, kernel_id)
        return km, kernel_name, kernel_id

    def remove_kernel(self, kernel_id: str) -> Any:
        removed = super().remove_kernel(kernel_id)
        self._remove_folder(kernel_id)
        for listener in self.removal_listeners:
            listener()
        return removed

    def remove_socket_folder(self) -> None:
        """Once the server's kernels are shut down (each removes its own sockets)."""
        if self._sockets is not None:
            shutil.rmtree(self._sockets, ignore_errors=True)


def no_room(max_kernels: int) -> web.HTTPError:
    """A kernel start refused at the server's ceiling."""
    return web.HTTPError(
        503,
        f"this server runs at most {max_kernels} kernels at once (--max-kernels), and all "
        "are in use: shut one down first, or start the server with a larger --max-kernels",
    )


class ServeGatewayKernelManager(GatewayMappingKernelManager):
    """The kernel manager of ``serve --gateway-url``: Jupyter Server's, for kernels on a
    gateway, with ``max_kernels`` a ceiling for Jupyter's own ``POST /api/kernels`` too
    (the pool keeps to it for its own kernels)."""

    max_kernels = Int(0, help="Kernels running at once (0: no ceiling).").tag(config=True)

    async def start_kernel(  # type: ignore[override]  # as jupyter_server's
        self, *, kernel_id: str | None = None, path: str | None = None, **kwargs: Any
    ) -> str:
        if kernel_id is None and self.max_kernels and len(self._kernels) >= self.max_kernels:
            raise no_room(self.max_kernels)
        return str(await super().start_kernel(kernel_id=kernel_id, path=path, **kwargs))  # type: ignore[no-untyped-call]


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
    idle_since: float | None = field(default_factory=time.monotonic)  # a session's
    # A step API run's kernel waits busy between steps on purpose: not interrupted at the
    # execution ceiling (the step API bounds each step, and the wait, itself).
    held: bool = False


class KernelPool:
    """Keeps ``size`` warm kernels of ``kernel_name`` on a Jupyter Server's kernel manager.

    ``kernel_manager``: the server's ``MappingKernelManager``. ``size``: warm kernels kept
    ready. ``max_kernels``: kernels running at once, warm and leased (the bound that
    makes requests wait). ``pool_timeout``: seconds a request waits for a kernel before
    ``PoolExhausted``. ``code_execution_timeout``: the server's ceiling for one execution
    (``None``: none); a one-shot lease is reaped a grace after it, a session's kernel
    interrupted. ``start_timeout``: seconds a warm kernel may take to start and load
    the extension. ``kernel_name``: the kernelspec (default: the server's default).
    ``session_idle_timeout``: a named session whose kernel nobody has used or been
    connected to for this long is ended (``None``: never).

    Kernels started by others on the same kernel manager (Jupyter's own
    ``/api/kernels``) count against ``max_kernels`` too; a ``ServeKernelManager``
    refuses theirs past it.
    """

    def __init__(
        self,
        kernel_manager: Any,
        *,
        size: int = 2,
        max_kernels: int = 16,
        pool_timeout: float | None = DEFAULT_POOL_WAIT,
        code_execution_timeout: float | None = DEFAULT_RUN,
        start_timeout: float | None = DEFAULT_START,
        kernel_name: str | None = None,
        session_idle_timeout: float | None = DEFAULT_SESSION_IDLE,
    ) -> None:
        if size < 0 or max_kernels < 1 or size > max_kernels:
            raise ValueError(
                f"a pool of {size} warm kernels with at most {max_kernels} "
                "running: give 0 <= size <= max_kernels, max_kernels >= 1"
            )
        self.kernel_manager = kernel_manager
        self.size = size
        self.max_kernels = max_kernels
        self.pool_timeout = pool_timeout
        self.code_execution_timeout = code_execution_timeout
        self.start_timeout = start_timeout
        self.kernel_name = kernel_name
        self.session_idle_timeout = session_idle_timeout
        self.leases: dict[str, Lease] = {}
        self.sessions: dict[str, str] = {}  # session name -> kernel id
        self._warm: list[str] = []
        self._starting: set[str] = set()  # ids of the kernels the pool is starting
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
        if isinstance(self.kernel_manager, ServeKernelManager):
            # Room made by a kernel that is not the pool's: waiting requests may use it.
            self.kernel_manager.removal_listeners.append(lambda: self._spawn(self._room_changed()))
        self._refill()

    async def take(self, *, session: str | None = None, websocket: bool = True) -> Lease:
        """A warm kernel, leased; a session's own kernel if it has one already."""
        if session is not None and session in self.sessions:
            lease = self.leases[self.sessions[session]]
            lease.idle_since = time.monotonic()  # used again: its idle time starts over
            return lease
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
        return {
            "warm": len(self._warm),
            "starting": len(self._starting),
            "leased": len(self.leases),
            "waiting": self._waiting,
            "size": self.size,
            "max_kernels": self.max_kernels,
            "sessions": sorted(self.sessions),
        }

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
        if isinstance(self.kernel_manager, ServeKernelManager):
            self.kernel_manager.remove_socket_folder()

    # -- filling ------------------------------------------------------------------------

    @property
    def _running(self) -> int:
        """Kernels that count against ``max_kernels``: the pool's, and any other the
        server runs (being shut down, or started through Jupyter's own API)."""
        ours = {*self._warm, *self._starting, *self.leases}
        manager = self.kernel_manager
        others = (
            manager.running_ids()
            if isinstance(manager, ServeKernelManager)
            else set(manager.list_kernel_ids())
        )
        return len(ours | others)

    def _refill(self) -> None:
        """Start kernels until the warm ones (and those on their way) cover the pool's
        size plus the requests waiting, within ``max_kernels``."""
        if self._last_failure and time.monotonic() < self._retry_at:
            return
        while (
            not self._stopped
            and self._running < self.max_kernels
            and len(self._warm) + len(self._starting) < self.size + self._waiting
        ):
            kernel_id = str(uuid.uuid4())
            self._starting.add(kernel_id)
            self._spawn(self._start_one(kernel_id))

    def _trim(self) -> None:
        """Shut down warm kernels beyond the pool's size and the requests waiting: the
        ones started for requests that gave up before they were ready."""
        while len(self._warm) > self.size + self._waiting:
            self._spawn(self._shut_down(self._warm.pop()))

    async def _room_changed(self) -> None:
        async with self._changed:
            self._changed.notify_all()
        self._refill()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- what a pool on a gateway does its own way (GatewayKernelPool) ---------------------

    def kernel(self, kernel_id: str) -> Any:
        """What ``ToolKernel(kernel=...)`` takes for a leased kernel: its manager here."""
        return self.kernel_manager.get_kernel(kernel_id)

    async def _start_kernel(self, kernel_id: str) -> str:
        """Start a kernel under this id; the id it runs under."""
        await self.kernel_manager.start_kernel(kernel_id=kernel_id, kernel_name=self.kernel_name)
        return kernel_id

    async def _warm_up(self, kernel_id: str) -> None:
        await warm_up(self.kernel_manager.get_kernel(kernel_id), self.start_timeout)

    async def _model(self, kernel_id: str) -> dict[str, Any]:
        """The server's model of a kernel: its execution state, connections, activity."""
        return dict(self.kernel_manager.kernel_model(kernel_id))

    async def _start_one(self, placeholder: str) -> None:
        kernel_id: str | None = None
        started = False
        try:
            kernel_id = await self._start_kernel(placeholder)
            if kernel_id != placeholder:  # its id is the one the kernel got, from now on
                self._starting.discard(placeholder)
                self._starting.add(kernel_id)
            started = True
            await self._warm_up(kernel_id)
        except Exception as exc:
            if not started and isinstance(exc, web.HTTPError) and exc.status_code == 503:
                return  # no room after all: a kernel of Jupyter's own API took it
            self._failed(f"{type(exc).__name__}: {exc}")
            if started:
                with contextlib.suppress(Exception):
                    await self.kernel_manager.shutdown_kernel(kernel_id, now=True)
            started = False
        finally:
            self._starting.discard(placeholder)
            if kernel_id is not None:
                self._starting.discard(kernel_id)
        if started:
            assert kernel_id is not None
            if self._stopped:
                await self._shut_down(kernel_id)
                return
            self._last_failure, self._retry_after = None, RETRY_AFTER
            self._warm.append(kernel_id)
            self._trim()
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
        deadline = time.monotonic() + (self.pool_timeout or float("inf"))
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
                        raise PoolError(
                            f"the server could not start a kernel: {self._last_failure}"
                        )
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise PoolExhausted(self._exhausted())
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), min(left, 3600.0))
        finally:
            self._waiting -= 1
            self._trim()

    def _exhausted(self) -> str:
        return (
            f"no kernel came free within {self.pool_timeout or 0:g} s: all "
            f"{self.max_kernels} kernels the server may run are busy; try again "
            "later, or start the server with a larger --max-kernels"
        )

    async def _alive(self, kernel_id: str) -> bool:
        try:
            return bool(await ensure_async(self.kernel_manager.get_kernel(kernel_id).is_alive()))
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
        model = await self._model(lease.kernel_id)
        busy = model.get("execution_state") == "busy"
        lease.busy_since = (lease.busy_since or now) if busy else None
        if not lease.connected and _active_since(model, lease.taken_on):
            lease.connected = True  # a client came, even if it left between two checks
        connections = int(model.get("connections", 0))
        if lease.session is not None and (why := self._session_idle(lease, connections, busy, now)):
            log.info(
                "progtc_kernel: ending session %r (kernel %s): %s",
                lease.session,
                lease.kernel_id,
                why,
            )
            self.release(lease.kernel_id)
            return
        watched = lease.websocket and lease.session is None
        if watched and (why := self._client_gone(lease, connections, now)):
            log.info("progtc_kernel: reaping kernel %s: %s", lease.kernel_id, why)
            self.release(lease.kernel_id)
            return
        ceiling = self.code_execution_timeout
        if (
            ceiling is not None
            and not lease.held
            and lease.busy_since is not None
            and now - lease.busy_since > ceiling + RECONNECT_GRACE
        ):
            log.info(
                "progtc_kernel: interrupting kernel %s: busy past the server's %g s ceiling",
                lease.kernel_id,
                ceiling,
            )
            lease.busy_since = None
            await ensure_async(self.kernel_manager.interrupt_kernel(lease.kernel_id))

    def _session_idle(self, lease: Lease, connections: int, busy: bool, now: float) -> str | None:
        if connections or busy:
            lease.idle_since = None
            return None
        lease.idle_since = lease.idle_since or now
        limit = self.session_idle_timeout
        if limit is not None and now - lease.idle_since > limit:
            return f"unused for {limit:g} s (--session-idle-timeout)"
        return None

    def _client_gone(self, lease: Lease, connections: int, now: float) -> str | None:
        if connections:
            lease.connected, lease.disconnected_at = True, None
            ceiling = self.code_execution_timeout
            if ceiling is not None and now - lease.taken_at > ceiling + CONNECT_GRACE:
                return f"leased past the server's {ceiling:g} s execution ceiling"
            return None
        if not lease.connected:
            return "its client never connected" if now - lease.taken_at > CONNECT_GRACE else None
        lease.disconnected_at = lease.disconnected_at or now
        if now - lease.disconnected_at > RECONNECT_GRACE:
            return "its client disconnected"
        return None


def _active_since(model: dict[str, Any], moment: datetime) -> bool:
    try:
        return datetime.fromisoformat(str(model.get("last_activity"))) > moment
    except ValueError:
        return False


async def warm_up(kernel_manager: Any, start_timeout: float | None = DEFAULT_START) -> None:
    """Load the extension with a first (silent) request, so that the lessee's first run
    is fast, and wait for its reply on shell.

    The first asks for the kernel's installed copy when it is the host's (a kernel of
    this environment, forked or not), in one line; only when that fails does the full
    load expression follow, which carries the kernel side (~75 KB for Python to
    compile, and the bootstrap to unpack).

    No comm is opened: the lessee's bridge registers its own. (A warm-up bridge that
    registered a comm and closed it cost about a fifth of the CPU of each execution
    under sustained load, kernel and server.) Shell requests wait in ZMQ's queue
    until the kernel listens, so this needs no probe, forked or spawned."""
    from ..host.injection import (
        load_expression,
        load_outcome,
        load_request,
        quick_load_expression,
    )
    from ..kernels.resolve import resolve_kernel

    transport = resolve_kernel(kernel_manager).connect()
    replies: dict[str, asyncio.Future[dict[str, Any]]] = {}

    def on_reply(channel: str, msg: dict[str, Any]) -> None:
        reply = replies.get(msg["parent_header"].get("msg_id", ""))
        if channel == "shell" and reply is not None and not reply.done():
            reply.set_result(msg["content"])

    async def load(expression: str) -> dict[str, Any]:
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        replies[transport.send("shell", "execute_request", load_request(expression))] = reply
        return load_outcome(await reply)

    await transport.start(on_reply)
    try:
        try:
            content = await asyncio.wait_for(load(quick_load_expression()), start_timeout)
            if content.get("status") != "ok":  # not installed here as the host's: bring it
                content = await asyncio.wait_for(load(load_expression(inject=True)), start_timeout)
        except asyncio.TimeoutError:
            raise KernelError(
                f"the kernel did not load the progtc_kernel extension within "
                f"{start_timeout or 0:g} s; is it running?"
            ) from None
    finally:
        await transport.close()
    if content.get("status") != "ok":
        raise KernelError(
            f"the kernel could not load the progtc_kernel extension: "
            f"{content.get('ename')}: {content.get('evalue')}"
        )


class GatewayKernelPool(KernelPool):
    """A ``KernelPool`` whose kernels live on a Jupyter Enterprise Gateway or Kernel
    Gateway (on a cluster, say), for a server run with ``--GatewayClient.url``.

    The server's ``GatewayMappingKernelManager`` starts, interrupts and shuts them down
    through the gateway's REST API, and proxies Jupyter's own kernel websocket to it
    (``AsyncProgtcClient``'s leases work unchanged). What the server drives itself
    (the warm-up, progtc's API, the step API) goes straight to the gateway's
    websocket as a ``RemoteKernel``: the gateway's kernels have no ZMQ sockets here.
    Leases are watched on the gateway's model of each kernel.

    Args:
        kernel_manager: The server's ``GatewayMappingKernelManager``.
        gateway: The gateway, as its websockets are reached (URL, token, headers).
        **options: As for ``KernelPool`` (``size``, ``max_kernels``...).
    """

    def __init__(self, kernel_manager: Any, gateway: JupyterServer, **options: Any) -> None:
        super().__init__(kernel_manager, **options)
        self.gateway = gateway

    def kernel(self, kernel_id: str) -> RemoteKernel:
        """The leased kernel, attached to by id: a ``ToolKernel`` closed leaves it
        running (the pool shuts it down when the lease ends)."""
        return RemoteKernel(self.gateway, kernel_id)

    async def _start_kernel(self, kernel_id: str) -> str:
        # The gateway names its kernels: an id given would mean "use this running one".
        name = {"kernel_name": self.kernel_name} if self.kernel_name else {}
        return str(await self.kernel_manager.start_kernel(**name))

    async def _warm_up(self, kernel_id: str) -> None:
        from ..host.bridge import ToolBridge

        # The gateway answers the start once the kernel runs: its first iopub messages
        # are gone by now, so the bridge probes rather than waits for them.
        bridge = ToolBridge(self.kernel(kernel_id).connect())
        try:
            await bridge.start(timeout=self.start_timeout, fresh=False)
        finally:
            await bridge.close()

    async def _model(self, kernel_id: str) -> dict[str, Any]:
        model = await self.kernel_manager.get_kernel(kernel_id).refresh_model()
        if model is None:
            raise KeyError(f"kernel {kernel_id} is gone from the gateway")
        return dict(model)

    async def _alive(self, kernel_id: str) -> bool:
        try:
            model = await self._model(kernel_id)
        except (KeyError, web.HTTPError):
            return False
        return model.get("execution_state") != "dead"
