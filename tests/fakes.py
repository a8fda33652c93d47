"""A kernel that is not there, for the fast layer: the ``Transport`` seam of
``progtc_kernel.kernels.base`` and a lifecycle around it.

``FakeTransport`` records every message the host sends and lets a test play the
kernel's part with fabricated messages, built by jupyter_client's own ``Session``::

    transport = FakeTransport()
    async with ToolBridge(transport, tools=[get_weather], extension="loaded"):
        transport.kernel_says("calls", {"calls": [...], "reply_channel": "shell"})
        results = await transport.host_said("results")

It answers on its own only what any kernel answers without being asked twice: a
``kernel_info_request`` (on iopub and control, as ipykernel does) and the progtc
comm's ``register`` (with ``ready``, or what ``answer_register`` says).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jupyter_client.session import Session

from progtc_kernel import __version__
from progtc_kernel.kernels.base import ChannelName, MessageCallback, Transport
from progtc_kernel.protocol import PROTOCOL_VERSION, ReadyBody

READY: ReadyBody = {
    "protocol": PROTOCOL_VERSION,
    "package": __version__,
    "injected": False,
    "ipykernel": "7.1.0",
    "python": "3.11.7",
    "shell_replies": True,
    "held_runs": [],
}


@dataclass
class Sent:
    """One message the host sent."""

    channel: str
    msg_type: str
    content: dict[str, Any]
    buffers: list[bytes]
    msg_id: str

    @property
    def kind(self) -> str | None:
        """The progtc protocol type of a comm message (``register``, ``results``...)."""
        data = self.content.get("data") or {}
        return data.get("type") if self.msg_type in ("comm_open", "comm_msg") else None

    @property
    def body(self) -> Any:
        """The protocol body (JSON in the first buffer)."""
        return json.loads(self.buffers[0])


@dataclass
class FakeTransport:
    """A ``Transport`` whose kernel is the test."""

    answer_register: tuple[str, dict[str, Any]] | None = ("ready", dict(READY))
    starting: bool = False  # announce a fresh kernel on iopub, as ipykernel does
    sent: list[Sent] = field(default_factory=list)
    closed: bool = False
    session: Session = field(default_factory=lambda: Session(key=b"fake-kernel"))
    _on_message: MessageCallback | None = None
    _reconnect_listeners: list[Callable[[], None]] = field(default_factory=list)
    _taken: set[int] = field(default_factory=set)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    # -- the Transport protocol -------------------------------------------------------

    @property
    def session_id(self) -> str:
        return str(self.session.session)

    async def start(self, on_message: MessageCallback) -> None:
        self._on_message = on_message
        if self.starting:
            asyncio.get_running_loop().call_soon(
                self.deliver, "iopub", "status", {"execution_state": "starting"}
            )

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
        sent = Sent(
            channel,
            msg_type,
            content,
            [bytes(b) for b in buffers or ()],
            str(msg["header"]["msg_id"]),
        )
        self.sent.append(sent)
        self._arrived.set()
        loop = asyncio.get_running_loop()
        if msg_type == "kernel_info_request":
            loop.call_soon(self._answer_kernel_info, sent)
        elif sent.kind == "register" and self.answer_register is not None:
            kind, body = self.answer_register
            loop.call_soon(self.kernel_says, kind, body)
        return sent.msg_id

    def add_reconnect_listener(self, listener: Callable[[], None]) -> None:
        self._reconnect_listeners.append(listener)

    async def close(self) -> None:
        self.closed = True

    # -- what the host sent ----------------------------------------------------------

    async def host_sent(self, predicate: Callable[[Sent], bool]) -> Sent:
        """The first message the host sent that matches and no test took yet, once
        it is sent."""
        while True:
            for index, sent in enumerate(self.sent):
                if index not in self._taken and predicate(sent):
                    self._taken.add(index)
                    return sent
            self._arrived.clear()
            await self._arrived.wait()

    async def host_said(self, kind: str) -> Sent:
        """The next protocol message of this type (``results``, ``queued``...)."""
        return await self.host_sent(lambda sent: sent.kind == kind)

    async def request(self, msg_type: str) -> Sent:
        """The next request of this Jupyter type (``execute_request``...)."""
        return await self.host_sent(lambda sent: sent.msg_type == msg_type)

    def kinds(self) -> list[str | None]:
        """The protocol types of every comm message sent so far, in order."""
        return [sent.kind for sent in self.sent if sent.kind is not None]

    @property
    def comm_id(self) -> str:
        opened = [sent for sent in self.sent if sent.msg_type == "comm_open"]
        return str(opened[-1].content["comm_id"])

    # -- playing the kernel ------------------------------------------------------------

    def kernel_says(
        self,
        kind: str,
        body: Any,
        *,
        parent: Sent | None = None,
        version: int = PROTOCOL_VERSION,
        raw: bytes | None = None,
    ) -> None:
        """A progtc comm message from the kernel, on iopub (``raw``: the body as sent,
        for bodies that are not JSON)."""
        payload = raw if raw is not None else json.dumps(body).encode()
        self.deliver(
            "iopub",
            "comm_msg",
            {"comm_id": self.comm_id, "data": {"v": version, "type": kind}},
            parent=parent,
            buffers=[memoryview(payload)],
        )

    def deliver(
        self,
        channel: str,
        msg_type: str,
        content: dict[str, Any],
        *,
        parent: Sent | None = None,
        buffers: list[Any] | None = None,
    ) -> None:
        """A Jupyter message from the kernel, in reply to ``parent`` if given."""
        parent_header = (
            {} if parent is None else {"msg_id": parent.msg_id, "msg_type": parent.msg_type}
        )
        msg = self.session.msg(msg_type, content, parent=parent_header)
        msg["buffers"] = buffers or []
        assert self._on_message is not None, "the host has not started the transport"
        self._on_message(channel, msg)

    def run_cell(
        self,
        request: Sent,
        *outputs: tuple[str, dict[str, Any]],
        reply: dict[str, Any] | None = None,
    ) -> None:
        """The messages a kernel sends for one cell: busy, its outputs, the reply, idle."""
        self.deliver("iopub", "status", {"execution_state": "busy"}, parent=request)
        for msg_type, content in outputs:
            self.deliver("iopub", msg_type, content, parent=request)
        self.deliver(
            "shell",
            "execute_reply",
            reply or {"status": "ok", "execution_count": 1},
            parent=request,
        )
        self.deliver("iopub", "status", {"execution_state": "idle"}, parent=request)

    def reconnect(self) -> None:
        """The connection dropped and came back (as a websocket's can)."""
        for listener in self._reconnect_listeners:
            listener()

    def _answer_kernel_info(self, request: Sent) -> None:
        self.deliver("iopub", "status", {"execution_state": "busy"}, parent=request)
        self.deliver(request.channel, "kernel_info_reply", {"status": "ok"}, parent=request)
        self.deliver("iopub", "status", {"execution_state": "idle"}, parent=request)


class FakeKernel:
    """A ``KernelLifecycle`` for a ``FakeTransport``: alive until told otherwise
    (``alive = False`` ends its ``wait()``); an interrupt calls ``on_interrupt`` (the
    test plays the interrupted cell)."""

    def __init__(self, transport: FakeTransport | None = None, *, owned: bool = False) -> None:
        self.transport = transport or FakeTransport()
        self.owned = owned
        self.transport.starting = owned  # a kernel started here is fresh
        self._alive = True
        self._waiting: list[asyncio.Future[None]] = []
        self.interrupts = 0
        self.restarts = 0
        self.shut_down = False
        self.on_interrupt: Callable[[], None] | None = None

    async def start(self) -> None:
        pass

    def connect(self) -> Transport:
        return self.transport

    @property
    def alive(self) -> bool:
        return self._alive

    @alive.setter
    def alive(self, alive: bool) -> None:
        self._alive = alive
        if not alive:
            for waiter in self._waiting:
                if not waiter.done():
                    waiter.set_result(None)
            self._waiting.clear()

    async def is_alive(self) -> bool:
        return self.alive

    async def wait(self) -> None:
        if self._alive:
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            await waiter

    async def interrupt(self) -> None:
        self.interrupts += 1
        if self.on_interrupt is not None:
            self.on_interrupt()

    async def restart(self) -> None:
        self.restarts += 1
        self.alive = True

    async def shutdown(self) -> None:
        self.shut_down = True

    def startup_failure(self) -> str:
        return "the fake kernel died"
