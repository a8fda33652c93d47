"""Everything that touches ipykernel or pyzmq beyond their public APIs.

Why this module exists: a tool reply must reach a kernel whose cell is running.
A plain ``comm_msg`` on the shell channel waits behind that cell on most ipykernel
versions (a deadlock), so replies take one of two other routes:

* **shell interception** (fast): we wrap the shell ``ZMQStream`` receive callback
  and consume our own ``comm_msg`` before ipykernel queues it. Uses the private
  ``ZMQStream._recv_callback``. On ipykernel 6 the stream lives on the main thread,
  so it can only serve awaited calls; on 7.x it has its own thread and serves all.
* **control channel** (always available): ``kernel.control_handlers`` is a plain
  dict of handlers, and control has its own thread on every supported version.

Tested against ipykernel 6.29+ and 7.x; keep every version difference in here.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

from .. import _wire

log = logging.getLogger("progtc_kernel")

MessageHandler = Callable[[dict[str, Any]], None]
Wanted = Callable[[str], bool]


def ipykernel_version() -> str:
    from importlib.metadata import version

    return version("ipykernel")


def current_kernel() -> Any | None:
    """The running ipykernel Kernel, or None outside a kernel."""
    try:
        from ipykernel.kernelbase import Kernel
    except ImportError:
        return None
    return Kernel.instance() if Kernel.initialized() else None


def parent_session(kernel: Any) -> str | None:
    """Session id of the client whose request the current code runs for."""
    try:
        parent = kernel.get_parent("shell")
    except TypeError:  # very old signature without a channel argument
        parent = kernel.get_parent()
    session = (parent or {}).get("header", {}).get("session")
    return str(session) if session is not None else None


def flush_pending_output() -> None:
    """Publish buffered ``print`` output now, so that it stays ahead of a tool call.

    ipykernel's streams batch output for up to 0.2 s; flushing costs a thread round
    trip, so only streams with output pending (a private flag) are flushed.
    """
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "_flush_pending", False):
            stream.flush()


def install_control_route(kernel: Any, wanted: Wanted, handle: MessageHandler) -> None:
    """Take our ``comm_msg`` on the control channel; pass any other on."""
    previous = kernel.control_handlers.get("comm_msg")

    def on_control_comm_msg(stream: Any, ident: Any, msg: dict[str, Any]) -> Any:
        if wanted(msg["content"].get("comm_id", "")):
            handle(msg)
            return None
        return previous(stream, ident, msg) if previous else None

    kernel.control_handlers["comm_msg"] = on_control_comm_msg


class ShellInterception:
    """Consumes our ``comm_msg`` straight off the shell socket, before ipykernel."""

    def __init__(self, kernel: Any, wanted: Wanted, handle: MessageHandler) -> None:
        self.kernel = kernel
        self.wanted = wanted
        self.handle = handle
        self.installed = threading.Event()
        self.check = _wire.SignatureCheck(kernel.session)
        stream: Any = getattr(kernel, "shell_stream", None)
        self.stream = stream
        # On ipykernel 7 the shell stream runs on its own thread; on 6 on the main one.
        self.on_main_thread = stream is None or stream.io_loop is kernel.io_loop

    def install(self) -> bool:
        """Schedule the wrap on the stream's own thread; False if not possible here."""
        stream = self.stream
        if stream is None or not hasattr(stream, "_recv_callback"):
            return False
        stream.io_loop.add_callback(self._wrap)
        return True

    def _wrap(self) -> None:
        stream = self.stream
        original = stream._recv_callback
        if original is None or getattr(original, "_progtc_wrapped", False):
            self.installed.set()
            return

        def on_shell_recv(frames: list[Any]) -> Any:
            msg = self._take(frames)
            if msg is None:
                return original(frames)
            self.handle(msg)
            return None

        on_shell_recv._progtc_wrapped = True  # type: ignore[attr-defined]
        stream.on_recv(on_shell_recv, copy=False)
        self.installed.set()

    def _take(self, frames: list[Any]) -> dict[str, Any] | None:
        """Our message, verified and decoded; None for anything else."""
        session = self.kernel.session
        try:
            _, rest = session.feed_identities(frames, copy=False)
            head = _wire.head_of(rest)
            if session.unpack(head[1]).get("msg_type") != "comm_msg":
                return None
            content = session.unpack(head[4])
            if not self.wanted(content.get("comm_id", "")):
                return None
            self.check(head)
        except Exception:
            return None  # let ipykernel see it, and complain about it if it must
        return {"content": content, "buffers": [memoryview(f) for f in rest[5:]]}
