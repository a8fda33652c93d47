"""``WebsocketTransport``: one connection to a kernel's websocket
(``/api/kernels/{id}/channels``), with a session id of its own, on tornado's
websocket client. Messages are built by ``jupyter_client.session.Session``; the
server signs them for the kernel. It speaks ``v1.kernel.websocket.jupyter.org``
where the server offers it and the legacy JSON framing otherwise, and after a drop
it reconnects with the same session id, so that the server replays what it
buffered meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..._wire import BadMessages
from ...exceptions import ServerError
from ..base import ChannelName, MessageCallback
from .frames import decode_frame, legacy_frame, v1_frame

if TYPE_CHECKING:
    from .rest import JupyterServer

log = logging.getLogger("progtc_kernel")

V1_PROTOCOL = "v1.kernel.websocket.jupyter.org"
# Larger than tornado's 10 MiB default: a tool's arguments travel in one message.
MAX_MESSAGE_SIZE = 256 * 2**20
# Pings keep proxies from closing an idle connection, and notice one that died.
PING_INTERVAL = 10.0
PING_TIMEOUT = 10.0
# Statuses the server itself publishes when a kernel dies: it restarts it, or gives up.
_DEATH_STATES = frozenset({"restarting", "dead"})


class WebsocketTransport:
    """One connection to a kernel's websocket, with a session id of its own."""

    def __init__(
        self,
        server: JupyterServer,
        kernel_id: str,
        *,
        on_gone: Callable[[str, bool], None] | None = None,
    ) -> None:
        """``on_gone(reason, server_restarts)``: called when the server reports the
        kernel restarting (``server_restarts``: True) or dead, or the connection is
        lost for good."""
        from jupyter_client.session import Session

        self.server = server
        self.kernel_id = kernel_id
        # The server signs messages for the kernel: this key signs nothing, it only
        # keeps Session from warning that messages go unsigned.
        self.session = Session(key=uuid.uuid4().hex.encode())
        self.framing: str | None = None  # "v1" or "legacy", once connected
        self.bad_messages = BadMessages(log, "host")
        self.reconnects = 0
        self._on_gone = on_gone
        self._on_message: MessageCallback | None = None
        self._connection: Any = None
        self._generation = 0  # which connection is the current one
        self._early: list[str | bytes] | None = None  # read before the framing was known
        self._backlog: list[tuple[bytes, bool]] = []  # written while disconnected
        self._reconnecting: asyncio.Task[None] | None = None
        self._reconnect_listeners: list[Callable[[], None]] = []
        self._closing = False
        self.gave_up = False  # the connection was lost for longer than reconnect_timeout
        # The server gives this connection a stdin socket whose ZMQ identity is our
        # session id: the kernel can send tool calls to us alone.
        self.carries_stdin = True

    @property
    def session_id(self) -> str:
        return str(self.session.session)

    def add_reconnect_listener(self, listener: Callable[[], None]) -> None:
        self._reconnect_listeners.append(listener)

    async def start(self, on_message: MessageCallback) -> None:
        self._on_message = on_message
        await self._connect()

    def send(
        self,
        channel: ChannelName,
        msg_type: str,
        content: dict[str, Any],
        *,
        buffers: list[bytes] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        msg = self.session.msg(msg_type, content, metadata=metadata)
        pack = self.session.pack
        parts = [
            pack(msg["header"]),
            pack(msg["parent_header"]),
            pack(msg["metadata"]),
            pack(msg["content"]),
        ]
        if self.framing == "legacy":
            frame, binary = legacy_frame(channel, parts, buffers or [])
        else:
            frame, binary = v1_frame(channel, [*parts, *(buffers or ())]), True
        self._write(frame, binary)
        return str(msg["header"]["msg_id"])

    def _write(self, frame: bytes, binary: bool) -> None:
        from tornado.websocket import WebSocketClosedError

        if self._connection is None:
            self._backlog.append((frame, binary))  # sent when the connection is back
            return
        try:
            written = self._connection.write_message(frame, binary=binary)
        except WebSocketClosedError:
            self._backlog.append((frame, binary))
            return
        # A write that fails later is recovered by `resume` (see protocol.py). One still
        # pending when the loop ends is cancelled: nothing to report then either.
        written.add_done_callback(_ignore_outcome)

    async def reconnect(self, *, tell_listeners: bool = True) -> None:
        """Connect again after having given up (the server is back): with the same
        session id, so that the server replays what it kept for it."""
        self._closing, self.gave_up = False, False
        await self._connect()
        self.reconnects += 1
        if tell_listeners:
            for listener in self._reconnect_listeners:
                listener()

    async def close(self) -> None:
        self._closing = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnecting
            self._reconnecting = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # -- connection ---------------------------------------------------------------

    async def _connect(self) -> None:
        self._generation += 1
        generation = self._generation
        # Frames may be read before the connection is handed to us (a server replays
        # what it buffered at once): they wait here until the framing is known.
        self._early = []
        try:
            connection = await self.server.connect_websocket(
                self.kernel_id,
                self.session_id,
                on_frame=lambda frame: self._on_frame(frame, generation),
            )
        except BaseException:
            self._early = None
            raise
        legacy = connection.selected_subprotocol != V1_PROTOCOL
        if self.framing is not None and (self.framing == "legacy") != legacy:
            self._early = None
            connection.close()  # frames in the backlog were built for the other framing
            raise ServerError("the server changed its websocket protocol on reconnect")
        self.framing = "legacy" if legacy else "v1"
        self._connection = connection
        early, self._early = self._early, None
        for frame in early:
            self._dispatch(frame)
        backlog, self._backlog = self._backlog, []
        for frame, binary in backlog:
            self._write(frame, binary)

    def _on_frame(self, frame: str | bytes | None, generation: int) -> None:
        if frame is None:  # this connection closed
            if generation == self._generation and not self._closing:
                self._connection = None
                self._reconnecting = asyncio.ensure_future(self._come_back())
        elif self._early is not None:
            self._early.append(frame)
        else:
            self._dispatch(frame)

    def _dispatch(self, frame: str | bytes) -> None:
        try:
            channel, msg = decode_frame(frame, legacy=self.framing == "legacy")
        except Exception as exc:
            self.bad_messages.report("unreadable websocket message", exc)
            return
        msg_type, content = msg["header"].get("msg_type"), msg["content"]
        state = content.get("execution_state")
        if channel == "iopub" and state in _DEATH_STATES and msg_type == "status":
            self._gone(
                f"was reported {state} by the server (the kernel process died)",
                server_restarts=state == "restarting",
            )
        elif channel == "iopub" and msg_type == "shutdown_reply" and not content.get("restart"):
            # Its last words, to every client: the server closes our connection only
            # seconds later.
            self._gone("was shut down", server_restarts=False)
        try:
            assert self._on_message is not None
            self._on_message(channel, msg)
        except Exception as exc:
            self.bad_messages.report(f"unhandled {channel} message", repr(exc))

    async def _come_back(self) -> None:
        if await self._reconnect():
            for listener in self._reconnect_listeners:
                listener()

    async def _reconnect(self) -> bool:
        """Connect again with the same session id until ``reconnect_timeout``."""
        loop = asyncio.get_running_loop()
        limit = self.server.reconnect_timeout
        deadline = math.inf if limit is None else loop.time() + limit
        delay = 0.05
        while not self._closing:
            try:
                await self._connect()
            except Exception as exc:  # every failure to connect is retried, until the deadline
                if isinstance(exc, ServerError) and exc.status is not None:
                    self.gave_up = True
                    self._gone(f"cannot be reached any more ({exc})", server_restarts=False)
                    return False  # no such kernel any more, a token no longer valid
                if loop.time() >= deadline:
                    self.gave_up = True
                    self._gone(f"cannot be reached any more: {exc}", server_restarts=False)
                    return False
                await asyncio.sleep(delay)  # pacing the retries, not waiting for an event
                delay = min(delay * 2, 1.0)
            else:
                self.reconnects += 1
                log.info("progtc_kernel: reconnected to kernel %s", self.kernel_id)
                return True
        return False

    def _gone(self, reason: str, *, server_restarts: bool) -> None:
        if self._on_gone is not None:
            self._on_gone(reason, server_restarts)


def _ignore_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: asyncio would log it as never retrieved
