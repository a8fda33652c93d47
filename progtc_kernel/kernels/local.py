"""Kernels on this machine (or reachable over ZMQ): jupyter_client and pyzmq.

* ``ZmqTransport``: one connection (shell, iopub, control) with a session of its own.
* ``LocalKernel``: a kernel started here, on an interpreter of your choice, over
  private Unix sockets; owned: restarted when it dies, shut down on close.
* ``AttachedKernel``: a kernel someone else runs, from its connection file or info,
  a ``KernelClient`` or a ``KernelManager``; never restarted behind the user's back,
  never replaced, its files never touched, left running on close.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import zmq
from jupyter_core.utils import ensure_async

from .._wire import BadMessages, SignatureCheck, decode
from ..exceptions import KernelError
from .base import ChannelName, MessageCallback
from .fork_server import fork_server_default, fork_server_metadata
from .watch import ConnectionWatch, client_for, process_exit

if TYPE_CHECKING:
    from jupyter_client.asynchronous.client import AsyncKernelClient
    from jupyter_client.manager import KernelManager

log = logging.getLogger("progtc_kernel")
SPEC_NAME = "progtc"
# Those a ZmqTransport starts; stdin: the kernel sends tool calls there, to it alone.
CHANNELS = ("iopub", "shell", "control", "stdin")


class ZmqTransport:
    """One connection to a kernel over ZMQ, through a jupyter_client client."""

    def __init__(self, client: AsyncKernelClient) -> None:
        """``client``: a jupyter_client ``AsyncKernelClient`` this transport owns."""
        self.client = client
        self.bad_messages = BadMessages(log, "host")
        self._sockets: dict[str, _Socket] = {}
        # Its stdin connection's ZMQ identity is its session id (jupyter_client's rule).
        self.carries_stdin = True

    @classmethod
    def connect(cls, connection: dict[str, Any] | str | os.PathLike[str]) -> ZmqTransport:
        """A transport with its own client and session, from connection info or file."""
        return cls(client_for(connection))

    @property
    def session_id(self) -> str:
        return str(self.client.session.session)

    async def start(self, on_message: MessageCallback) -> None:
        # stdin: the kernel sends tool calls there, to this connection alone.
        self.client.start_channels(shell=True, iopub=True, stdin=True, hb=False, control=True)
        check = SignatureCheck(self.client.session)
        loop = asyncio.get_running_loop()
        for name in CHANNELS:
            socket = getattr(self.client, f"{name}_channel").socket
            handle = functools.partial(self._handle, name, check, on_message)
            self._sockets[name] = _Socket(socket, handle, loop)

    def send(
        self,
        channel: ChannelName,
        msg_type: str,
        content: dict[str, Any],
        *,
        buffers: list[bytes] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        session = self.client.session
        msg = session.msg(msg_type, content, metadata=metadata)
        self._sockets[channel].send([*session.serialize(msg), *(buffers or ())])
        return str(msg["header"]["msg_id"])

    def add_reconnect_listener(self, listener: Callable[[], None]) -> None:
        """A ZMQ connection never drops and comes back: nothing to listen for."""

    async def close(self) -> None:
        for socket in self._sockets.values():
            socket.stop()
        self._sockets.clear()
        if self.client.channels_running:
            # The channels started, not stop_channels(): it opens the stdin channel
            # (a socket connected to the kernel) only to find it is not running.
            for name in CHANNELS:
                getattr(self.client, f"{name}_channel").stop()
            context = self.client.context
            if getattr(self.client, "_created_context", False) and not context.closed:
                context.destroy(linger=100)  # as stop_channels() does: the client's own

    def _handle(
        self, name: str, check: SignatureCheck, on_message: MessageCallback, frames: list[Any]
    ) -> None:
        try:
            msg = decode(self.client.session, check, frames)
        except Exception as exc:
            self.bad_messages.report(f"unreadable {name} message", exc)
            return
        try:
            on_message(name, msg)
        except Exception as exc:
            self.bad_messages.report(f"unhandled {name} message", repr(exc))


class _Socket:
    """A ZMQ socket served by a callback on its file descriptor.

    Why not ``await socket.recv_multipart()``: pyzmq's asyncio futures cost about a
    fifth of the host's CPU per tool call. The socket's descriptor signals a change
    (edge-triggered), not a message: every wake-up, and every send (which can take
    the signal for a message that arrived meanwhile), is followed by reading
    until the socket says nothing is left. One message per turn of the event loop,
    so that what ``handle`` queued runs between messages. A send the socket cannot
    take now (its queue to the kernel is full) waits here, in order, for room.
    """

    def __init__(
        self, socket: Any, handle: Callable[[list[Any]], None], loop: asyncio.AbstractEventLoop
    ) -> None:
        # A plain socket on the same ZMQ socket: pyzmq's asyncio wrapper keeps state
        # (its own descriptor watch) this class must not share.
        self.socket: zmq.Socket[bytes] = zmq.Socket.shadow(socket.underlying)
        self.handle = handle
        self.loop = loop
        self.waiting: deque[list[Any]] = deque()
        self.scheduled = False
        self.stopped = False
        self.fd = self.socket.FD
        loop.add_reader(self.fd, self._serve)
        self._soon()  # messages queued before the watch began signal nothing

    def send(self, frames: list[Any]) -> None:
        if not self.waiting:
            try:
                self.socket.send_multipart(frames, flags=zmq.DONTWAIT, copy=False)
            except zmq.Again:
                self.waiting.append(frames)
        else:
            self.waiting.append(frames)
        self._soon()

    def stop(self) -> None:
        self.stopped = True
        self.loop.remove_reader(self.fd)

    def _soon(self) -> None:
        if not (self.scheduled or self.stopped):
            self.scheduled = True
            self.loop.call_soon(self._turn)

    def _turn(self) -> None:
        self.scheduled = False
        self._serve()

    def _serve(self) -> None:
        if self.stopped:
            return
        events = self._events()
        while self.waiting and events & _POLLOUT:
            self.socket.send_multipart(self.waiting.popleft(), flags=zmq.DONTWAIT, copy=False)
            events = self._events()
        if events & _POLLIN:
            self.handle(self.socket.recv_multipart(flags=zmq.DONTWAIT, copy=False))
            self._soon()  # maybe more: read on the next turn, after what handle queued

    def _events(self) -> int:
        return cast(int, self.socket.get(zmq.EVENTS))


_POLLIN, _POLLOUT = int(zmq.POLLIN), int(zmq.POLLOUT)  # plain ints: no enum per message


class _StderrTail:
    """Copies a kernel's stderr to ours, keeping its last lines to explain a failure."""

    def __init__(self, pipe: Any, keep: int = 20) -> None:
        self.lines: deque[str] = deque(maxlen=keep)
        self._thread = threading.Thread(
            target=self._copy, args=(pipe,), daemon=True, name="progtc-kernel-stderr"
        )
        self._thread.start()

    def _copy(self, pipe: Any) -> None:
        with contextlib.suppress(OSError, ValueError):
            for raw in iter(pipe.readline, b""):
                line = raw.decode("utf-8", "replace")
                self.lines.append(line.rstrip("\n"))
                with contextlib.suppress(Exception):
                    sys.stderr.write(line)
                    sys.stderr.flush()

    def text(self) -> str:
        self._thread.join(timeout=1)  # the process is gone: its last words are coming
        return "\n".join(self.lines)


class LocalKernel:
    """A kernel this process starts and owns: give it to ``ToolKernel`` as ``kernel=``.

    Example:
        ```python
        kernel = LocalKernel(python="/opt/py/bin/python", cwd="/srv/work", env={"A": "1"})
        async with ToolKernel(tools, kernel=kernel): ...
        ```

    Args:
        python: The kernel's interpreter (it needs only ipykernel); default: this one.
        kernel_name: A kernelspec to start instead of an interpreter.
        cwd: The kernel's working directory.
        env: The kernel's environment variables.
        manager: A jupyter_client manager to start the kernel with, instead of a new one.
        ipython_hist_file: Where IPython keeps the code the kernel ran. ``":memory:"``
            (the default, as nbclient does) writes nothing to disk, so no later kernel
            can read it; a path keeps it in that SQLite file; ``None`` leaves it to the
            kernel's IPython profile (``history.sqlite``, shared by every kernel of that
            profile).
        fork_server: Fork the kernel (and its restarts) from a template process that
            has imported ipykernel already, instead of starting a new interpreter: a
            start costs a tenth of the CPU and half the memory (Linux; elsewhere, or
            when the kernel's environment changes what an interpreter reads at start,
            such as ``PYTHONPATH``, the kernel is spawned as usual). ``None``: on
            when ``$PROGTC_KERNEL_FORK_SERVER`` is ``1``. See the guide "Fast kernel
            starts".
        preload: Modules the fork server's template imports for every kernel (e.g.
            ``["numpy", "pandas"]``); only with ``fork_server=True``.
    """

    owned = True

    def __init__(
        self,
        *,
        python: str | None = None,
        kernel_name: str | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        manager: KernelManager | None = None,
        ipython_hist_file: str | None = ":memory:",
        fork_server: bool | None = None,
        preload: Sequence[str] = (),
    ) -> None:
        if fork_server is None:
            fork_server = fork_server_default() and manager is None
        if preload and not fork_server:
            raise ValueError("preload= applies to the fork server: add fork_server=True")
        if manager is not None and fork_server:
            raise ValueError(
                "fork_server=True applies to a kernel LocalKernel starts, not to a "
                "manager given: name the provisioner in its kernelspec instead "
                "(progtc-kernel install --fork-server)"
            )
        self.fork_server = fork_server
        self.preload = tuple(preload)
        self.python = python
        self.cwd = cwd
        self.env = env
        self.ipython_hist_file = ipython_hist_file
        self.kernel_name = kernel_name
        self._stderr: _StderrTail | None = None
        self._sockets: tempfile.TemporaryDirectory[str] | None = None
        self._own_manager = manager is None
        self._shut_down = False
        self._connection_watch: ConnectionWatch | None = None  # for a kernel with no process
        self.manager = manager if manager is not None else self._new_manager()

    def _new_manager(self) -> KernelManager:
        provisioner = fork_server_metadata(self.preload) if self.fork_server else None
        manager = _kernel_manager(self.python, self.kernel_name, provisioner)
        if os.name == "posix":
            # Unix sockets in a private folder: faster than loopback TCP, no ports
            # to open, and no "unencrypted TCP" warnings from ipykernel 7.
            self._sockets = tempfile.TemporaryDirectory(prefix="progtc-")
            manager.transport = "ipc"
            manager.ip = os.path.join(self._sockets.name, "kernel")
        return manager

    async def start(self) -> None:
        if self._shut_down and self._own_manager:
            # jupyter_client's manager closes its ZMQ context with its kernel: starting
            # again (a toolset's next agent run) takes a new one.
            self.manager = self._new_manager()
        self._shut_down = False
        if self.python is not None and shutil.which(self.python) is None:
            raise KernelError(
                f"no Python interpreter at {self.python!r}: give the path of "
                "a Python executable (e.g. .venv/bin/python)"
            )
        kwargs: dict[str, Any] = {"stderr": subprocess.PIPE}
        if self.cwd:
            kwargs["cwd"] = self.cwd
        if self.env is not None:
            kwargs["env"] = self.env
        if self.ipython_hist_file is not None:
            # Kept for restarts too: jupyter_client starts them with the same arguments.
            kwargs["extra_arguments"] = [f"--HistoryManager.hist_file={self.ipython_hist_file}"]
        try:
            await ensure_async(self.manager.start_kernel(**kwargs))
        except (OSError, RuntimeError) as exc:
            raise KernelError(f"could not start the kernel: {exc}") from None
        self._watch_stderr()

    def _watch_stderr(self) -> None:
        process = getattr(self.manager.provisioner, "process", None)
        pipe = getattr(process, "stderr", None)
        self._stderr = _StderrTail(pipe) if pipe is not None else None

    def connect(self) -> ZmqTransport:
        return ZmqTransport.connect(dict(self.manager.get_connection_info()))

    async def is_alive(self) -> bool:
        return bool(await ensure_async(self.manager.is_alive()))

    async def wait(self) -> None:
        """Return once the kernel process has ended: its exit wakes us. (A provisioner
        that runs no local process of ours: once its connection drops.)"""
        if not self.manager.has_kernel:
            return
        process = kernel_process(self.manager)
        if process is not None:
            await process_exit(process)
            return
        if self._connection_watch is None:
            self._connection_watch = ConnectionWatch(dict(self.manager.get_connection_info()))
        await self._connection_watch.wait()

    async def interrupt(self) -> None:
        await ensure_async(self.manager.interrupt_kernel())

    async def restart(self) -> None:
        await ensure_async(self.manager.restart_kernel(now=True))
        self._watch_stderr()

    async def shutdown(self) -> None:
        if self._connection_watch is not None:
            await self._connection_watch.close()
            self._connection_watch = None
        if self.manager.has_kernel:
            await ensure_async(self.manager.shutdown_kernel(now=True))
            self._shut_down = True
        if self._sockets is not None:
            self._sockets.cleanup()

    def startup_failure(self) -> str:
        provisioner = self.manager.provisioner
        process = getattr(provisioner, "process", None)
        code = process.poll() if process is not None else None
        said = self._stderr.text() if self._stderr is not None else ""
        python = self.python or (
            self.manager.kernel_spec.argv[0] if self.manager.kernel_spec else sys.executable
        )
        what = (
            "the kernel process exited while starting"
            if code is None
            else f"the kernel process exited while starting (exit code {code})"
        )
        if said:
            what += ":\n    " + "\n    ".join(said.splitlines()[-8:])
        if "No module named" in said and "ipykernel" in said:
            what += (
                f"\nipykernel is not installed there; install it with: {python} -m pip "
                "install ipykernel (the kernel needs nothing else: the host brings "
                "progtc_kernel's kernel side along)"
            )
        return what


class AttachedKernel:
    """A kernel someone else runs; see the module docstring.

    ``manager``: a jupyter_client KernelManager that started it (interrupts and an
    explicit restart go through it); else ``connection``: its connection info or file,
    and interrupts go as ``interrupt_request`` messages."""

    owned = False

    def __init__(
        self,
        connection: dict[str, Any] | str | os.PathLike[str],
        manager: KernelManager | None = None,
    ) -> None:
        self.connection = connection
        self.manager = manager
        # Our control connection: interrupt requests, and whether the kernel is there.
        self._watch: ConnectionWatch | None = None

    async def start(self) -> None:
        if isinstance(self.connection, (str, os.PathLike)) and not os.path.exists(self.connection):
            raise KernelError(
                f"no connection file at {os.fspath(self.connection)!r}: give "
                "the path of a running kernel's connection file"
            )
        if self.manager is None or kernel_process(self.manager) is None:
            self._watch = ConnectionWatch(self.connection)

    def connect(self) -> ZmqTransport:
        return ZmqTransport.connect(self.connection)

    async def is_alive(self) -> bool:
        if self._watch is not None:
            return self._watch.alive
        return self.manager is not None and bool(await ensure_async(self.manager.is_alive()))

    async def wait(self) -> None:
        """Return once the kernel is gone: the process of the manager given has ended,
        or (known by its connection only) our connection to it has dropped, which the
        OS does the moment its process ends."""
        process = kernel_process(self.manager) if self.manager is not None else None
        if process is not None:
            await process_exit(process)
        elif self._watch is not None:
            await self._watch.wait()

    async def until_connected(self) -> None:
        """Return once our control connection to the kernel is up (now, or again after
        a restart): from then on ``wait()`` sees its end. (At once for a kernel whose
        process is known: its exit is seen in any case.)"""
        if self._watch is not None:
            await self._watch.connected.wait()

    async def interrupt(self) -> None:
        if self.manager is not None:
            await ensure_async(self.manager.interrupt_kernel())
        elif self._watch is not None:
            client = self._watch.client
            msg = client.session.msg("interrupt_request", {})
            client.control_channel.socket.send_multipart(client.session.serialize(msg))

    async def restart(self) -> None:
        if self.manager is None:
            raise KernelError(
                "this kernel was given by its connection info, so it cannot be restarted "
                "from here: restart it where it runs, or let ToolKernel start its own"
            )
        await ensure_async(self.manager.restart_kernel(now=True))

    async def shutdown(self) -> None:
        if self._watch is not None:
            await self._watch.close()
            self._watch = None

    def startup_failure(self) -> str:
        return "the kernel attached to does not answer; is it running?"


def kernel_process(manager: Any) -> subprocess.Popen[Any] | None:
    """The process of the kernel a jupyter_client manager runs here, if it has one
    (its local provisioner's; another provisioner may run none here)."""
    process = getattr(getattr(manager, "provisioner", None), "process", None)
    return process if isinstance(process, subprocess.Popen) else None


def _kernel_manager(
    python: str | None, kernel_name: str | None, provisioner: dict[str, Any] | None = None
) -> KernelManager:
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    if python is None and kernel_name is not None:
        if provisioner is None:
            return AsyncKernelManager(kernel_name=kernel_name)

        class WithProvisioner(KernelSpecManager):
            def get_kernel_spec(self, kernel_name: str) -> Any:
                spec = super().get_kernel_spec(kernel_name)
                spec.metadata = {**spec.metadata, "kernel_provisioner": provisioner}
                return spec

        return AsyncKernelManager(kernel_spec_manager=WithProvisioner(), kernel_name=kernel_name)
    return AsyncKernelManager(
        kernel_spec_manager=single_spec(python or sys.executable, provisioner),
        kernel_name=SPEC_NAME,
    )


def single_spec(python: str, provisioner: dict[str, Any] | None = None) -> Any:
    """A kernel spec manager that knows one spec: an IPython kernel on ``python``
    (started by the ``provisioner`` stanza given, else jupyter_client's default)."""
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager, NoSuchKernel

    metadata: dict[str, Any] = {"debugger": False}
    if provisioner is not None:
        metadata["kernel_provisioner"] = provisioner
    spec = KernelSpec(
        argv=[python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        display_name="Python 3 (progtc)",
        language="python",
        metadata=metadata,
        interrupt_mode="signal",
    )

    class SingleSpecManager(KernelSpecManager):
        def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
            if kernel_name != SPEC_NAME:
                raise NoSuchKernel(kernel_name)
            return spec

    return SingleSpecManager()
