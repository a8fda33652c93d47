"""Everything that touches ipykernel or pyzmq beyond their documented APIs.

Why this module exists: a tool reply must reach a kernel whose cell is running.
A plain ``comm_msg`` on the shell channel waits behind that cell on most ipykernel
versions (a deadlock), so replies take one of two other routes:

* **shell interception** (fast): we wrap the shell ``ZMQStream`` receive callback
  and consume our own ``comm_msg`` before ipykernel queues it. Uses the private
  ``ZMQStream._recv_callback``. On ipykernel 6 the stream lives on the main thread,
  so it can only serve awaited calls; on 7.x it has its own thread and serves all.
* **control channel** (always available): ``kernel.control_handlers`` is a plain
  dict of handlers, and control has its own thread on every supported version.

Sending on iopub, reading the current parent header and finding the kernel's event
loop are here too: they are ipykernel attributes without a documented contract.
Tested against ipykernel 6.29+ and 7.x; keep every version difference in here.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

import zmq

from .. import _wire

log = logging.getLogger("progtc_kernel")
_SRCFD = zmq.SRCFD  # a message's connection (file descriptor); deprecated, still in libzmq 4.3

MessageHandler = Callable[[dict[str, Any], str], None]  # (message, route)
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


def event_loop(kernel: Any) -> asyncio.AbstractEventLoop:
    """The asyncio loop that runs the kernel's cells."""
    loop: asyncio.AbstractEventLoop = kernel.io_loop.asyncio_loop
    return loop


def parent_header(kernel: Any) -> dict[str, Any]:
    """The request the current code runs for (its whole message, as ipykernel keeps it)."""
    try:
        parent = kernel.get_parent("shell")
    except TypeError:  # very old signature without a channel argument
        parent = kernel.get_parent()
    return parent or {}


def parent_session(kernel: Any) -> str | None:
    """Session id of the client whose request the current code runs for."""
    session = parent_header(kernel).get("header", {}).get("session")
    return str(session) if session is not None else None


def publish_comm_msg(kernel: Any, comm_id: str, topic: bytes, data: dict[str, Any],
                     buffers: list[bytes], parent: dict[str, Any]) -> None:
    """Send a ``comm_msg`` on iopub from any thread (ipykernel's iopub socket queues it)."""
    kernel.session.send(kernel.iopub_socket, "comm_msg", {"comm_id": comm_id, "data": data},
                        parent=parent, ident=topic, buffers=buffers)


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
            handle(msg, "control")
            return None
        return previous(stream, ident, msg) if previous else None

    kernel.control_handlers["comm_msg"] = on_control_comm_msg


class ShellInterception:
    """Consumes our ``comm_msg`` straight off the shell socket, before ipykernel.

    It also watches the shell socket for clients that disconnect, so that a host
    killed without a word is forgotten at once: each message tells which connection
    (file descriptor, ``SRCFD``) its sender uses, and a socket monitor reports that
    descriptor when the connection closes. (libzmq's ``ROUTER_NOTIFY`` would say it
    directly, but it is a draft option, absent from pyzmq's wheels.)
    """

    def __init__(self, kernel: Any, wanted: Wanted, handle: MessageHandler,
                 on_peer_gone: Callable[[str], None]) -> None:
        self.kernel = kernel
        self.wanted = wanted
        self.handle = handle
        self.on_peer_gone = on_peer_gone
        self.installed = threading.Event()
        self.check = _wire.SignatureCheck(kernel.session)
        self._lock = threading.Lock()
        self._scheduled = False
        self._waiting: list[Callable[[bool], None]] = []
        self._senders: dict[int, str] = {}  # connection fd -> the client identity using it
        self._monitor: Any = None
        stream: Any = getattr(kernel, "shell_stream", None)
        self.stream = stream if hasattr(stream, "_recv_callback") else None
        # On ipykernel 7 the shell stream runs on its own thread; on 6 on the main one.
        self.on_main_thread = stream is None or stream.io_loop is kernel.io_loop

    def when_installed(self, then: Callable[[bool], None]) -> None:
        """Call ``then(in_place)`` once the wrap is in place (on the stream's thread),
        or at once with False where it cannot be installed."""
        if self.stream is None:
            then(False)
            return
        with self._lock:
            if not self.installed.is_set():
                self._waiting.append(then)
                schedule, self._scheduled = not self._scheduled, True
                if schedule:
                    self.stream.io_loop.add_callback(self._wrap)
                return
        then(True)

    def _wrap(self) -> None:
        stream: Any = self.stream
        original = stream._recv_callback
        if original is not None and not getattr(original, "_progtc_wrapped", False):

            def on_shell_recv(frames: list[Any]) -> Any:
                self._note_sender(frames[0])
                msg = self._take(frames)
                if msg is None:
                    return original(frames)
                self.handle(msg, "shell")
                return None

            on_shell_recv._progtc_wrapped = True  # type: ignore[attr-defined]
            stream.on_recv(on_shell_recv, copy=False)
            self._watch_disconnects(stream)
        with self._lock:
            self.installed.set()
            waiting, self._waiting = self._waiting, []
        for then in waiting:
            then(original is not None)

    def _note_sender(self, identity: Any) -> None:
        try:
            fd = identity.get(_SRCFD)
        except Exception:  # not a zmq Frame, or the option is gone from libzmq
            return
        self._senders[fd] = _wire.frame_bytes(identity).decode("utf-8", "replace")

    def _watch_disconnects(self, stream: Any) -> None:
        from zmq.eventloop.zmqstream import ZMQStream
        from zmq.utils.monitor import parse_monitor_message

        try:
            monitor = stream.socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        except zmq.ZMQError:
            log.debug("progtc_kernel: cannot monitor the shell socket", exc_info=True)
            return

        def on_event(frames: list[bytes]) -> None:
            fd = int(parse_monitor_message(frames)["value"])
            identity = self._senders.pop(fd, None)
            if identity is not None:
                self.on_peer_gone(identity)

        self._monitor = ZMQStream(monitor, io_loop=stream.io_loop)
        self._monitor.on_recv(on_event)
        self._close_monitor_at_shutdown(stream)

    def _close_monitor_at_shutdown(self, stream: Any) -> None:
        """An open monitor socket keeps ipykernel's ``context.term()`` waiting for ever:
        the kernel would not exit when asked, only when killed. ``do_shutdown`` (called
        on every shutdown request, on the control thread) closes it first, on the
        shell stream's own thread."""
        kernel, original = self.kernel, self.kernel.do_shutdown

        def stop_watching() -> None:
            if self._monitor is not None:
                self._monitor.close(linger=0)
                self._monitor = None
                stream.socket.disable_monitor()

        def do_shutdown(restart: bool) -> Any:
            stream.io_loop.add_callback(stop_watching)
            return original(restart)

        kernel.do_shutdown = do_shutdown

    def _take(self, frames: list[Any]) -> dict[str, Any] | None:
        """Our message, verified and decoded; None for anything else (ipykernel's)."""
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
