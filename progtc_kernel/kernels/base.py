"""How the host reaches a kernel: one small interface, one class per way.

A transport sends signed Jupyter messages on a channel and hands every message it
receives (iopub, shell and control replies) to one callback. ``ZmqTransport`` is
the local way, over jupyter_client's ZMQ sockets; remote ways implement the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any, Literal, Protocol

from .._wire import SignatureCheck, decode

ChannelName = Literal["shell", "control", "iopub", "stdin"]
MessageCallback = Callable[[str, dict[str, Any]], None]
log = logging.getLogger("progtc_kernel")


class Transport(Protocol):
    """The seam between the bridge and a kernel."""

    @property
    def session_id(self) -> str:
        """Our client session id: kernels stamp it on messages from our requests."""
        ...

    async def start(self, on_message: MessageCallback) -> None:
        """Connect, then call ``on_message(channel, msg)`` for every message received."""
        ...

    def send(
        self, channel: ChannelName, msg_type: str, content: dict[str, Any], *,
        buffers: list[bytes] | None = None, metadata: dict[str, Any] | None = None,
    ) -> str:
        """Send one message; returns its msg_id."""
        ...

    async def close(self) -> None: ...


class ZmqTransport:
    """A kernel on this machine (or reachable over ZMQ), via jupyter_client."""

    def __init__(self, client: Any) -> None:
        """``client``: a jupyter_client ``AsyncKernelClient`` this transport owns."""
        self.client = client
        self._readers: list[asyncio.Task[None]] = []

    @classmethod
    def connect(cls, connection: dict[str, Any] | str | os.PathLike[str]) -> ZmqTransport:
        """A transport with its own client, from connection info or a connection file."""
        from jupyter_client.asynchronous.client import AsyncKernelClient

        client = AsyncKernelClient()
        if isinstance(connection, dict):
            client.load_connection_info(connection)  # type: ignore[arg-type]
        else:
            client.load_connection_file(os.fspath(connection))
        return cls(client)

    @property
    def session_id(self) -> str:
        return str(self.client.session.session)

    async def start(self, on_message: MessageCallback) -> None:
        self.client.start_channels(shell=True, iopub=True, stdin=False, hb=False, control=True)
        check = SignatureCheck(self.client.session)
        for name in ("iopub", "shell", "control"):
            socket = getattr(self.client, f"{name}_channel").socket
            reader = _read(name, socket, self.client.session, check, on_message)
            self._readers.append(asyncio.create_task(reader))

    def send(
        self, channel: ChannelName, msg_type: str, content: dict[str, Any], *,
        buffers: list[bytes] | None = None, metadata: dict[str, Any] | None = None,
    ) -> str:
        socket = getattr(self.client, f"{channel}_channel").socket
        msg = self.client.session.msg(msg_type, content, metadata=metadata)
        self.client.session.send(socket, msg, buffers=buffers)
        return str(msg["header"]["msg_id"])

    async def close(self) -> None:
        for task in self._readers:
            task.cancel()
        for task in self._readers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._readers.clear()
        if self.client.channels_running:
            self.client.stop_channels()


async def _read(name: str, socket: Any, session: Any, check: SignatureCheck,
                on_message: MessageCallback) -> None:
    while True:
        frames = await socket.recv_multipart(copy=False)
        try:
            msg = decode(session, check, frames)
        except Exception:
            log.warning("dropped an unreadable message on %s", name, exc_info=True)
            continue
        try:
            on_message(name, msg)
        except Exception:
            log.exception("error while handling a %s message", name)
