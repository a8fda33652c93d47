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

Calls go the other way on the kernel's **stdin socket**, to the host's connection
alone, where it listens there (``send_on_stdin``), else on iopub.

Sending on iopub, reading the current parent header and finding the kernel's event
loop are here too: they are ipykernel attributes without a documented contract.
Tested against ipykernel 6.29+ and 7.x; keep every version difference in here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

import zmq

from .. import _wire

log = logging.getLogger("progtc_kernel")
_SRCFD = zmq.SRCFD  # a message's connection (file descriptor); deprecated, still in libzmq 4.3

MessageHandler = Callable[[dict[str, Any], str], None]  # (message, route)
Wanted = Callable[[object], bool]  # whether a comm id is ours (any JSON value)
# The last guard of both routes: what a handler raises is logged once per kind, never
# left to ipykernel (a traceback per message) or pyzmq (a broken shell stream).
_unhandled = _wire.BadMessages(log, "kernel")


def _handle_safely(handle: MessageHandler, msg: dict[str, Any], route: str) -> None:
    try:
        handle(msg, route)
    except Exception as exc:
        _unhandled.report(f"unhandled on {route} ({type(exc).__name__})", exc)


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


def publish_comm_msg(
    kernel: Any,
    comm_id: str,
    topic: bytes,
    data: dict[str, Any],
    buffers: list[bytes],
    parent: dict[str, Any],
) -> None:
    """Send a ``comm_msg`` on iopub from any thread (ipykernel's iopub socket queues it)."""
    kernel.session.send(
        kernel.iopub_socket,
        "comm_msg",
        {"comm_id": comm_id, "data": data},
        parent=parent,
        ident=topic,
        buffers=buffers,
    )


def open_comm(msg: dict[str, Any]) -> None:
    """Open a comm as ipykernel's shell handler for ``comm_open`` does (the stream and
    identity it is given go unused), for a message taken off the shell socket."""
    import comm

    manager: Any = comm.get_comm_manager()
    manager.comm_open(None, None, msg)


def send_on_stdin(
    kernel: Any,
    identity: bytes,
    comm_id: str,
    data: dict[str, Any],
    buffers: list[bytes],
    parent: dict[str, Any],
) -> bool:
    """Send a ``comm_msg`` to one client alone, on the kernel's stdin socket, as
    ``input()`` sends its ``input_request``; False (nothing sent) where that cannot be
    done now, and the caller sends on iopub instead.

    Why: every client receives iopub, and a Jupyter Server rate-checks and decodes
    each iopub message for each websocket; it forwards stdin as it comes, to the one
    connection whose ZMQ identity (its session id) the message names.

    The stdin socket is a plain ZMQ socket that ipykernel uses from the main thread
    only (``input()``): we send from there too, or not at all. ``ROUTER_MANDATORY``
    (for our send only) makes a client that has no stdin connection (gone, or never
    connected) an error instead of a silent drop, and ``NOBLOCK`` a full queue.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    socket = getattr(kernel, "stdin_socket", None)
    if socket is None:
        return False
    session = kernel.session
    msg = session.msg("comm_msg", {"comm_id": comm_id, "data": data}, parent=parent)
    frames = [*session.serialize(msg, ident=identity), *buffers]
    try:
        socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        try:
            socket.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
        finally:
            socket.setsockopt(zmq.ROUTER_MANDATORY, 0)
    except zmq.ZMQError:  # EHOSTUNREACH: no such connection; EAGAIN: its queue is full
        return False
    return True


def flush_pending_output() -> None:
    """Publish buffered ``print`` output now, so that it stays ahead of a tool call.

    ipykernel's streams batch output for up to 0.2 s; flushing costs a thread round
    trip, so only streams with output pending (a private flag) are flushed.
    """
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "_flush_pending", False):
            stream.flush()


# iopub messages whose order against a tool call no host relies on.
_UNORDERED = frozenset({"status", "execute_input"})


class IopubCount:
    """How many messages the kernel has published on iopub (output, displays, comm
    messages: all but ``status`` and ``execute_input``), counted where each one is
    sent: the kernel's ``Session.send``, which its streams, display publisher, comms
    and this package share.

    Why: iopub and stdin are separate connections, so a call sent on stdin can reach
    the host before output published on iopub just before it. The kernel bridge sends
    a call on stdin only when the host has seen every counted message (see
    ``KernelBridge.host_seen``), else on iopub behind them.
    """

    def __init__(self, kernel: Any) -> None:
        self.value = 0
        # Output goes to the iopub socket, or (print) to its thread.
        socket, thread = kernel.iopub_socket, kernel.iopub_thread
        send = kernel.session.send

        def counted_send(stream: Any, msg_or_type: Any, *args: Any, **kwargs: Any) -> Any:
            if (stream is socket or stream is thread) and _msg_type(msg_or_type) not in _UNORDERED:
                self.value += 1
            return send(stream, msg_or_type, *args, **kwargs)

        kernel.session.send = counted_send


def _msg_type(msg_or_type: Any) -> str:
    if isinstance(msg_or_type, str):
        return msg_or_type
    return str(msg_or_type.get("header", {}).get("msg_type", ""))


def iopub_count(kernel: Any) -> IopubCount:
    """The kernel's one ``IopubCount`` (made on first use: the extension may be loaded
    again)."""
    count = getattr(kernel.session, "_progtc_iopub_count", None)
    if not isinstance(count, IopubCount):
        count = IopubCount(kernel)
        kernel.session._progtc_iopub_count = count
    return count


class InterruptWakeup:
    """Lets an interrupt stop a cell that awaits (``await asyncio.sleep(1000)``).

    For a cell that awaits, ipykernel swaps in a SIGINT handler that cancels the
    cell's task through ``loop.call_soon``. That handler runs inside the loop's
    ``select()``, which PEP 475 then resumes: the loop sleeps on without seeing the
    cancellation, until some message or timer wakes it (ipykernel issue 881), and a
    run timeout ends in a restart that loses the user's variables. A signal wakeup
    fd, as asyncio's own ``add_signal_handler`` sets up, makes the C-level handler
    write a byte that the loop watches: it wakes and cancels the cell at once.

    ``install`` runs on the main thread (where Python handles signals) inside a
    cell, when the kernel's loop runs; elsewhere it does nothing and is called again
    before the next cell.
    """

    def __init__(self) -> None:
        self._reader: socket.socket | None = None
        self._writer: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self, *_: object) -> None:
        if self._reader is not None or threading.current_thread() is not threading.main_thread():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # loaded at kernel start (--ext): the loop runs later
            return
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        if previous != -1:  # someone wakes a loop on signals already (asyncio does)
            signal.set_wakeup_fd(previous)
            reader.close()
            writer.close()
            return
        try:
            loop.add_reader(reader.fileno(), self._drain)
        except NotImplementedError:  # a loop without add_reader (Windows' proactor)
            signal.set_wakeup_fd(-1)
            reader.close()
            writer.close()
            return
        self._reader, self._writer, self._loop = reader, writer, loop

    def uninstall(self) -> None:
        if self._reader is None or self._writer is None or self._loop is None:
            return
        if threading.current_thread() is threading.main_thread():
            previous = signal.set_wakeup_fd(-1)
            if previous != self._writer.fileno():  # someone replaced ours: keep theirs
                signal.set_wakeup_fd(previous)
        self._loop.remove_reader(self._reader.fileno())
        self._reader.close()
        self._writer.close()
        self._reader = self._writer = self._loop = None

    def _drain(self) -> None:
        # The bytes say which signals came; Python's own handlers act on those.
        with contextlib.suppress(OSError):
            while self._reader is not None and self._reader.recv(4096):
                pass


def install_control_route(kernel: Any, wanted: Wanted, handle: MessageHandler) -> None:
    """Take our ``comm_msg`` on the control channel; pass any other on."""
    previous = kernel.control_handlers.get("comm_msg")

    def on_control_comm_msg(stream: Any, ident: Any, msg: dict[str, Any]) -> Any:
        content = msg.get("content")
        if isinstance(content, dict) and wanted(content.get("comm_id")):
            _handle_safely(handle, msg, "control")
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

    def __init__(
        self,
        kernel: Any,
        wanted: Wanted,
        handle: MessageHandler,
        on_peer_gone: Callable[[str], None],
        opens: tuple[str, MessageHandler] | None = None,
    ) -> None:
        self.kernel = kernel
        self.wanted = wanted
        self.handle = handle
        # (comm target, handler): comm_opens of that target are taken here too, so that
        # a host can register while a cell runs (on ipykernel 6, ipykernel's own
        # comm_open handler waits behind the cell; a held run's next host cannot wait).
        self.opens = opens
        self.on_peer_gone = on_peer_gone
        self.installed = threading.Event()
        self.check = _wire.SignatureCheck(kernel.session)
        self._lock = threading.Lock()
        self._scheduled = False
        self._waiting: list[Callable[[bool], None]] = []
        self._senders: dict[int, str] = {}  # connection fd -> the client identity using it
        self._stale_events: dict[int, int] = {}  # fd -> disconnects already acted on
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
                # Nothing raised here may reach pyzmq: an exception in this callback
                # breaks the shell stream, and the kernel stops answering.
                self._note_sender(frames[0])
                msg = self._take(frames)
                if msg is None:
                    return original(frames)
                self._dispatch(msg)
                return None

            on_shell_recv._progtc_wrapped = True  # type: ignore[attr-defined]
            stream.on_recv(on_shell_recv, copy=False)
            self._watch_disconnects(stream)
        with self._lock:
            self.installed.set()
            waiting, self._waiting = self._waiting, []
        for then in waiting:
            then(original is not None)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        """Hand one of our messages to its handler."""
        if msg["header"]["msg_type"] == "comm_open" and self.opens is not None:
            # A host may register right after another one went (killed, or its last
            # words lost with its socket), before the monitor's event for that was
            # read: act on it first, so that the newcomer's ``ready`` offers it the
            # resumable runs the gone host left.
            self._read_disconnects()
            _handle_safely(self.opens[1], msg, "shell")
        else:
            _handle_safely(self.handle, msg, "shell")

    def _note_sender(self, identity: Any) -> None:
        try:
            fd = identity.get(_SRCFD)
        except Exception:  # not a zmq Frame, or the option is gone from libzmq
            return
        sender = _wire.frame_bytes(identity).decode("utf-8", "replace")
        if self._senders.get(fd, sender) != sender:
            # The OS gave a closed connection's descriptor to a new one. The old one's
            # disconnect event was queued before this connection existed, but may not
            # be read yet: read it now, or it would later be taken for the new sender's.
            self._read_disconnects()
            previous = self._senders.pop(fd, None)
            if previous is not None:  # its event is still to come: skip it then
                self._stale_events[fd] = self._stale_events.get(fd, 0) + 1
                self.on_peer_gone(previous)  # its connection closed: the fd is reused
        self._senders[fd] = sender

    def _read_disconnects(self) -> None:
        """Handle every disconnect event the monitor holds, without waiting."""
        if self._monitor is None:
            return
        with contextlib.suppress(zmq.ZMQError):  # EAGAIN: none left
            while True:
                frames = self._monitor.socket.recv_multipart(zmq.NOBLOCK)
                # Not reading the shell socket from here: a message is being taken.
                self._on_disconnect(frames, read_pending=False)

    def _on_disconnect(self, frames: list[bytes], read_pending: bool = True) -> None:
        from zmq.utils.monitor import parse_monitor_message

        fd = int(parse_monitor_message(frames)["value"])
        if self._stale_events.get(fd):
            self._stale_events[fd] -= 1  # that sender was forgotten when its fd came back
            return
        identity = self._senders.pop(fd, None)
        if identity is not None:
            if read_pending:
                self._read_pending()
            self.on_peer_gone(identity)

    def _read_pending(self) -> None:
        """Take in what the shell socket holds before acting on a disconnect: the gone
        host's last words may be among it (a ``queued`` notice decides whether a
        resumable run's call may be sent to the next host). On the stream's thread,
        through the stream itself: a read of its socket behind its back would take the
        socket's edge-triggered readiness signal, and the stream would sleep on."""
        stream: Any = self.stream
        if stream is not None and not stream.closed():
            stream.flush(zmq.POLLIN)

    def _watch_disconnects(self, stream: Any) -> None:
        from zmq.eventloop.zmqstream import ZMQStream

        try:
            monitor = stream.socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        except zmq.ZMQError:
            log.debug("progtc_kernel: cannot monitor the shell socket", exc_info=True)
            return
        self._monitor = ZMQStream(monitor, io_loop=stream.io_loop)
        self._monitor.on_recv(self._on_disconnect)
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
            header = session.unpack(head[1])
            msg_type = header.get("msg_type")
            if msg_type not in ("comm_msg", "comm_open"):
                return None
            content = session.unpack(head[4])
            if not (isinstance(content, dict) and self._ours(msg_type, content)):
                return None
            self.check(head)
            parent = session.unpack(head[2]) if msg_type == "comm_open" else {}
        except Exception:  # unreadable (RecursionError too), unsigned, or not ours
            return None  # let ipykernel see it, and complain about it if it must
        return {
            "header": header,
            "parent_header": parent,
            "metadata": {},
            "content": content,
            "buffers": [memoryview(f) for f in rest[5:]],
        }

    def _ours(self, msg_type: str, content: dict[str, Any]) -> bool:
        if msg_type == "comm_open":
            return self.opens is not None and content.get("target_name") == self.opens[0]
        return self.wanted(content.get("comm_id"))
