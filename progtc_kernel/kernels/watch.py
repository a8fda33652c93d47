"""Until a kernel on this machine is gone, woken by the event itself (no polling).

* ``process_exit``: a kernel process started here ended. On Linux the event loop
  watches a pidfd; elsewhere a thread blocks in ``waitid``. Nothing is reaped here:
  jupyter_client's provisioner does that, and reads the exit code.
* ``ConnectionWatch``: a kernel known by its connection info only (someone else's
  process). A ZMQ socket monitor on a connection to its control port reports the
  connection closing, which the OS does the moment the kernel's process ends; ZMQ
  then connects again by itself, to a kernel restarted on the same ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zmq
from zmq.utils.monitor import parse_monitor_message

if TYPE_CHECKING:
    from jupyter_client.asynchronous.client import AsyncKernelClient


async def process_exit(process: subprocess.Popen[Any]) -> None:
    """Return once ``process`` has ended (at once if it has)."""
    if process.returncode is not None:
        return
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[None] = loop.create_future()

    def settle() -> None:
        if not ended.done():
            ended.set_result(None)

    pidfd = _pidfd(process.pid)
    if pidfd is None:
        threading.Thread(
            target=_block_until_exit,
            args=(process, lambda: loop.call_soon_threadsafe(settle)),
            daemon=True,
            name="progtc-kernel-exit",
        ).start()
        await ended
        return
    try:
        # A pid reaped before the pidfd was opened may name another process by now:
        # Popen knows that the kernel ended then.
        if process.poll() is not None:
            return
        loop.add_reader(pidfd, settle)  # readable once the process has exited
        try:
            await ended
        finally:
            loop.remove_reader(pidfd)
    finally:
        os.close(pidfd)


def _pidfd(pid: int) -> int | None:
    if not hasattr(os, "pidfd_open"):  # Linux 5.3+ only
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:  # gone already, or a kernel without pidfds
        return None


def _block_until_exit(process: subprocess.Popen[Any], then: Callable[[], Any]) -> None:
    with contextlib.suppress(OSError):  # ChildProcessError: ended and reaped already
        if hasattr(os, "waitid"):
            # WNOWAIT leaves the exit status for Popen to collect (it reaps).
            os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
        else:  # Windows: a wait on the process handle, which reaps nothing
            process.wait()
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        then()


def client_for(connection: dict[str, Any] | str | os.PathLike[str]) -> AsyncKernelClient:
    """A jupyter_client client of its own (its own session), from connection info or
    a connection file; no channel started yet."""
    from jupyter_client.asynchronous.client import AsyncKernelClient

    client = AsyncKernelClient()
    if isinstance(connection, dict):
        client.load_connection_info(connection)  # type: ignore[arg-type]
    else:
        client.load_connection_file(os.fspath(connection))
    return client


class ConnectionWatch:
    """A control connection to a kernel, and whether it is up (see the module doc).

    The kernel counts as alive until the connection has been up and dropped: a kernel
    that was never reached is left to the caller's start timeout."""

    def __init__(self, connection: dict[str, Any] | str | os.PathLike[str]) -> None:
        client = client_for(connection)
        client.start_channels(shell=False, iopub=False, stdin=False, hb=False, control=True)
        self.client = client  # also sends interrupt requests on control
        socket = self._socket = client.control_channel.socket
        self._monitor = socket.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
        )
        # jupyter_client connected the socket before the monitor was there, so its
        # handshake may have gone unseen: connect again, now watched. (A drop before
        # the first handshake seen is this one: ignored.)
        endpoint = socket.get(zmq.LAST_ENDPOINT).decode()
        socket.disconnect(endpoint)
        socket.connect(endpoint)
        self._dropped = asyncio.Event()
        self.connected = asyncio.Event()  # the connection is up (now or again)
        self._reader = asyncio.ensure_future(self._read())

    @property
    def alive(self) -> bool:
        return not self._dropped.is_set()

    async def wait(self) -> None:
        """Return once the connection has dropped (the kernel's process ended)."""
        await self._dropped.wait()

    async def _read(self) -> None:
        while True:
            event = parse_monitor_message(await self._monitor.recv_multipart())["event"]
            if event == zmq.EVENT_DISCONNECTED:
                if not self.connected.is_set():
                    continue
                self.connected.clear()
                self._dropped.set()
            else:  # connected, again after a restart on the same ports
                self._dropped.clear()
                self.connected.set()

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        with contextlib.suppress(zmq.ZMQError):
            self._socket.disable_monitor()
        self._monitor.close(linger=0)
        self.client.stop_channels()
