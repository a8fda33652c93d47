"""The two interfaces a kernel is known by: its lifecycle and a transport.

A ``Transport`` sends signed Jupyter messages on a channel and hands every message
it receives (iopub, shell and control replies) to one callback; one that can drop
and come back (a websocket) says so to its reconnect listeners. A
``KernelLifecycle`` starts or attaches to a kernel, interrupts, restarts and shuts
it down, tells whether it is alive (and waits until it is gone, woken by the event
itself), and opens transports to it. ``local.py`` has the local implementations,
``jupyter_server/`` the remote ones; ``resolve.py`` turns what a user gives as a
kernel (``KernelLike``) into a lifecycle.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias, runtime_checkable

if TYPE_CHECKING:
    from jupyter_client.client import KernelClient
    from jupyter_client.manager import KernelManager

ChannelName = Literal["shell", "control", "iopub", "stdin"]
MessageCallback = Callable[[str, dict[str, Any]], None]

KernelLike: TypeAlias = (
    "KernelLifecycle | KernelManager | KernelClient | str | os.PathLike[str] | dict[str, Any]"
)
"""A kernel, as every entry point takes it (``kernel=``): a lifecycle
(``LocalKernel(...)``, ``RemoteKernel(...)``), a jupyter_client ``KernelManager``
(an idle one is started, and then owned) or ``KernelClient``, or a running kernel's
connection file or info dict (attached to, left running)."""


@runtime_checkable
class Transport(Protocol):
    """The seam between a bridge and a kernel: one connection, one session."""

    @property
    def session_id(self) -> str:
        """Our client session id: kernels stamp it on messages from our requests."""
        ...

    async def start(self, on_message: MessageCallback) -> None:
        """Connect, then call ``on_message(channel, msg)`` for every message received."""
        ...

    def send(
        self,
        channel: ChannelName,
        msg_type: str,
        content: dict[str, Any],
        *,
        buffers: list[bytes] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """Send one message; returns its msg_id."""
        ...

    def add_reconnect_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` whenever the connection came back after a drop (a
        websocket can; a ZMQ connection never drops, so it never calls)."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class KernelLifecycle(Protocol):
    """A kernel's life, as ``ToolKernel`` drives it."""

    @property
    def owned(self) -> bool:
        """True for a kernel started here: it is restarted when it dies and shut down
        on close. False for a kernel attached to: it is left running, never replaced."""
        ...

    async def start(self) -> None:
        """Start the kernel (owned), or check what was given (attached)."""
        ...

    def connect(self) -> Transport:
        """A new connection to the kernel, with a session of its own."""
        ...

    async def is_alive(self) -> bool: ...

    async def wait(self) -> None:
        """Return once the running kernel is gone (at once if none runs), as
        jupyter_client provisioners' ``wait()`` does, but woken by the event itself:
        the process's exit, its connection closing, its server's word. A kernel
        restarted later is a new one: wait again for it."""
        ...

    async def interrupt(self) -> None: ...

    async def restart(self) -> None:
        """A fresh kernel process; raises ``KernelError`` where that is not possible."""
        ...

    async def shutdown(self) -> None:
        """Stop an owned kernel and release what was set up for it; leave any other."""
        ...

    def startup_failure(self) -> str:
        """Why the kernel is not coming up, as far as can be told (its stderr...)."""
        ...


@runtime_checkable
class Reconnecting(Protocol):
    """A lifecycle whose connection can be lost for good while the kernel lives on
    (a server out of reach for longer than its reconnect timeout)."""

    def connection_lost(self, transport: Transport) -> bool:
        """Whether ``transport`` gave the connection up for lost."""
        ...

    async def reconnect(self, transport: Transport) -> bool:
        """Use the kernel again through ``transport``: True when it survived (its state
        kept), False when a new kernel was started in its place."""
        ...
