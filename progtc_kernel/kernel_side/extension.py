"""The IPython extension: ``%load_ext progtc_kernel`` or ``--ext=progtc_kernel``.

It registers the ``progtc_kernel`` comm target, takes replies on the control
channel (and, once a host connects, straight off the shell socket), and puts the
``tools`` module in ``sys.modules``. A host connects by opening a comm; each open
comm is one ``KernelBridge``. With several hosts, ``tools`` offers every tool any
of them serves, and a call goes to the host whose client ran the current cell if
that host serves the tool, else to the most recently connected host that does (so
a host attached for a notebook serves the cells the notebook's frontend runs). A
host that disconnects (its socket closes, even without a word) is forgotten at once,
except for the calls of resumable runs it never started: those wait for the next host
(``held.py``).
"""

from __future__ import annotations

import json
import logging
import platform
import sys
from collections import Counter
from typing import Any, cast

from .._version import __version__
from .._wire import BadMessages
from ..protocol import (
    COMM_TARGET,
    HOST_BODIES,
    HOST_CLOSED,
    PROTOCOL_VERSION,
    CallIdsBody,
    CloseBody,
    ErrorBody,
    ReadyBody,
    RegisterBody,
    ResultsBody,
    body_bytes,
    body_problem,
    pack,
)
from . import _ipykernel, tracebacks
from .bridge import KernelBridge
from .held import HeldRuns
from .held import grace_of as held_grace
from .tools_module import ToolsModule
from .tools_module import describe as describe_tools
from .tracing import CellTrace

log = logging.getLogger("progtc_kernel")

HOST_GONE = "the host disconnected (its connection to the kernel closed)"


class Extension:
    """The kernel-side state: open host connections and the ``tools`` module."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.bridges: dict[str, KernelBridge] = {}
        self.comms: dict[str, Any] = {}  # the ipykernel Comm of each bridge
        # Made at the first connection: with --ext the extension loads before the
        # kernel has started its streams.
        self.shell: _ipykernel.ShellInterception | None = None
        self.tools = ToolsModule(self.hosts)
        self.bad_messages = BadMessages(log, "kernel")
        self.routes: Counter[str] = Counter()  # which route brought each host message
        self.sent_routes: Counter[str] = Counter()  # which route took calls to hosts
        self._listens_on_stdin: dict[str, bool] = {}  # by comm id: what the host said
        self.interrupt_wakeup = _ipykernel.InterruptWakeup()
        self.held: HeldRuns | None = None  # made with the first resumable run
        self.cell_trace = CellTrace()
        self._replaced_tools = sys.modules.get("tools")

    def load(self) -> None:
        import comm

        comm.get_comm_manager().register_target(COMM_TARGET, self.on_open)
        _ipykernel.install_control_route(self.kernel, self.owns, self.on_message)
        # Now if loaded by a cell, else before the first cell (the loop runs by then).
        self.interrupt_wakeup.install()
        self.kernel.shell.events.register("pre_execute", self.on_run_start)
        self.kernel.shell.events.register("post_execute", self.on_run_end)
        if self._replaced_tools is not None:
            log.warning(
                "progtc_kernel: the module 'tools' now refers to host tools, shadowing %r",
                self._replaced_tools,
            )
        sys.modules["tools"] = self.tools
        tracebacks.install(self.kernel.shell)

    def unload(self) -> None:
        import comm

        tracebacks.uninstall(self.kernel.shell)
        comm.get_comm_manager().unregister_target(COMM_TARGET, self.on_open)
        self.kernel.shell.events.unregister("pre_execute", self.on_run_start)
        self.kernel.shell.events.unregister("post_execute", self.on_run_end)
        self.interrupt_wakeup.uninstall()
        for comm_id in list(self.bridges):
            self.close(comm_id, "the progtc_kernel extension was unloaded", hold=False)
        if sys.modules.get("tools") is self.tools:
            del sys.modules["tools"]
            if self._replaced_tools is not None:
                sys.modules["tools"] = self._replaced_tools

    def owns(self, comm_id: object) -> bool:
        return isinstance(comm_id, str) and comm_id in self.bridges

    def hosts(self) -> list[KernelBridge]:
        """The connected hosts in the order calls prefer them: the host whose client
        ran the current cell, then the others, most recently connected first."""
        newest_first = list(self.bridges.values())[::-1]  # one C-level copy: thread-safe
        if len(newest_first) >= 2:
            session = _ipykernel.parent_session(self.kernel)
            newest_first.sort(key=lambda bridge: bridge.host_session != session)
        if self.held is not None and self.held.current_run_held():
            # Last: a call of a held run that no attached host serves waits for one.
            newest_first.append(self.held)
        return newest_first

    # -- comm events ----------------------------------------------------------------

    def on_open(self, comm: Any, msg: dict[str, Any]) -> None:
        version, _ = _routing(msg["content"].get("data")) or (0, "")
        parent = msg  # the request this answers (as ipykernel's parent header is)
        if self.shell is None:
            self.shell = _ipykernel.ShellInterception(
                self.kernel,
                self.owns,
                self.on_message,
                self.on_host_gone,
                opens=(COMM_TARGET, self.open_from_shell),
            )
        shell = self.shell
        bridge = KernelBridge(
            self.kernel,
            comm.comm_id,
            comm.topic,
            msg["header"].get("session"),
            shell_replies=shell,
            loop=_ipykernel.event_loop(self.kernel),
        )
        if version != PROTOCOL_VERSION:
            bridge.send(pack("error", _refusal(_mismatch(version))), parent)
            return
        try:
            body = json.loads(body_bytes(msg.get("buffers")))
            problem = body_problem("register", body)
            if problem is not None:
                raise ValueError(problem)
            bridge.configure(cast(RegisterBody, body))  # its shape checked just above
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            bridge.send(pack("error", _refusal(f"unreadable register message: {exc}")), parent)
            return
        self.bridges[comm.comm_id] = bridge
        self._listens_on_stdin[comm.comm_id] = body.get("calls_on_stdin") is True
        bridge.sent_routes = self.sent_routes
        self.comms[comm.comm_id] = comm
        describe_tools(self.tools)
        comm.on_msg(lambda comm_msg: self.on_message(comm_msg, "comm"))
        comm.on_close(lambda close_msg: self.close(comm.comm_id, HOST_CLOSED))

        def ready(shell_replies: bool) -> None:
            body: ReadyBody = {
                "protocol": PROTOCOL_VERSION,
                "package": __version__,
                "injected": bool(globals().get("__injected__")),
                "ipykernel": _ipykernel.ipykernel_version(),
                "python": platform.python_version(),
                "shell_replies": shell_replies,
                "held_runs": self.held.orphaned_runs() if self.held is not None else [],
            }
            bridge.send(pack("ready", body), parent)
            # What the host has seen once it says hello: stdin calls start from there.
            bridge.iopub = _ipykernel.iopub_count(self.kernel)
            bridge.host_seen = bridge.iopub.value
            if self.held is not None:  # after ready: the host takes calls from now on
                self.held.hand_over(bridge)

        # Ready only once replies can take the shell route: the host may use it next.
        shell.when_installed(ready)

    def open_from_shell(self, msg: dict[str, Any], route: str) -> None:
        """A host's comm_open, taken off the shell socket (a cell may be running)."""
        _ipykernel.open_comm(msg)

    def on_message(self, msg: dict[str, Any], route: str) -> None:
        """A host message, from whichever thread (route) brought it.

        Never raises: whatever a client sends, a malformed message is dropped, counted
        and logged once per kind, and the route that brought it keeps serving."""
        try:
            self._on_message(msg, route)
        except Exception as exc:  # a case the checks missed: still only this message
            self.bad_messages.report(f"unhandled {type(exc).__name__}", exc)

    def _on_message(self, msg: dict[str, Any], route: str) -> None:
        content = msg.get("content")
        if not isinstance(content, dict):
            return
        comm_id = content.get("comm_id")
        bridge = self.bridges.get(comm_id) if isinstance(comm_id, str) else None
        if bridge is None:
            return
        self.routes[route] += 1
        routing = _routing(content.get("data"))
        if routing is None:
            self.bad_messages.report("routing", "comm data must be {'v': <int>, 'type': <str>}")
            return
        version, msg_type = routing
        try:
            body = json.loads(body_bytes(msg.get("buffers")))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            self._refuse(bridge, "unreadable body", f"unreadable {msg_type!r} message: {exc}")
            return
        if version != PROTOCOL_VERSION:
            self._refuse(bridge, "protocol version", _mismatch(version))
            if msg_type == "results":  # fail the calls it answers: nothing else will
                bridge.fail(_result_ids(body), _mismatch(version))
            return
        problem = body_problem(msg_type, body)
        if problem is not None:
            if msg_type in HOST_BODIES:
                self._refuse(
                    bridge, f"bad {msg_type!r} message", f"bad {msg_type!r} message: {problem}"
                )
            else:
                self._refuse(bridge, "unknown type", problem)
            return
        self._dispatch(bridge, msg_type, body)

    def _dispatch(self, bridge: KernelBridge, msg_type: str, body: dict[str, Any]) -> None:
        """Act on a message whose body ``body_problem`` found sound."""
        if msg_type == "results":
            problems = bridge.take_results(cast(ResultsBody, body)["results"])
            if problems:  # those calls failed in the kernel; the host hears why
                self._refuse(bridge, "malformed result", "; ".join(problems))
        elif msg_type in ("queued", "started"):
            notice = cast(CallIdsBody, body)
            marked = bridge.mark_queued(notice["ids"], msg_type == "queued")
            if msg_type == "queued" and notice.get("ack"):
                bridge.send(pack("queued", {"ids": notice["ids"]}))  # counted as waiting
            elif msg_type == "started" and notice.get("ack") and marked:
                # Counted as started from now (a host gone later may have run them):
                # the host runs them only when this reaches it. Calls no longer this
                # host's (handed over, cancelled) get no ack, so they never run here.
                bridge.send(pack("started", {"ids": marked}))
        elif msg_type == "tools":
            try:
                bridge.configure(cast(RegisterBody, body))
            except ValueError as exc:
                self._refuse(bridge, "tools", f"bad 'tools' message: {exc}")
                return
            describe_tools(self.tools)
        elif msg_type == "hello":
            # Seen by the shell interception: it now knows this host's connection.
            self._use_stdin_route(bridge)
        elif msg_type == "resume":
            bridge.resend_in_flight()
        elif msg_type == "close":
            close = cast(CloseBody, body)
            # Said here, not left to the notices: those may come on another channel.
            bridge.mark_queued(close.get("waiting", []), True)
            self.close(bridge.comm_id, close["reason"] or HOST_CLOSED)
        else:  # register: it comes with the comm_open, once
            self._refuse(bridge, "bad 'register' message", "register only by opening a comm")

    def _use_stdin_route(self, bridge: KernelBridge) -> None:
        """Send this host's calls on its stdin connection from now on, if it said it
        listens there. Only once ``hello`` came: the host has seen ``ready`` (a call
        cannot overtake it) and its stdin connection is up (it connected it first).
        Its ZMQ identity is its session id, for jupyter_client and Jupyter Server."""
        if self._listens_on_stdin.get(bridge.comm_id) and bridge.host_session:
            bridge.stdin_identity = bridge.host_session.encode()

    def _refuse(self, bridge: KernelBridge, kind: str, message: str) -> None:
        """A host message this kernel cannot use: logged (once per kind), and the host
        told why in an ``error`` message."""
        self.bad_messages.report(kind, message)
        bridge.send(pack("error", _refusal(message)))

    # -- each run, as it starts and ends (IPython's pre/post_execute) -----------------

    def on_run_start(self, *_: object) -> None:
        """(IPython's pre_execute: silent runs have it too.) The interrupt wake-up is
        installed (once the loop runs), a run that asks to be resumable is held from
        now, and a traced run's trace context is set."""
        self.interrupt_wakeup.install()
        parent = _ipykernel.parent_header(self.kernel)
        if self.held is None and held_grace(parent) is not None:
            self.held = HeldRuns(self.kernel, _ipykernel.event_loop(self.kernel))
        if self.held is not None:
            self.held.run_starts(parent)
        self.cell_trace.pre_execute(parent)

    def on_run_end(self, *_: object) -> None:
        """(IPython's post_execute.) The run is no longer held, nor traced."""
        if self.held is not None:
            self.held.run_ends(_ipykernel.parent_header(self.kernel))
        self.cell_trace.post_execute()

    def on_host_gone(self, session: str) -> None:
        """A client's shell connection closed: forget the hosts it was."""
        for comm_id, bridge in list(self.bridges.items()):
            if bridge.host_session == session:
                self.close(comm_id, HOST_GONE)

    def close(self, comm_id: str, reason: str, *, hold: bool = True) -> None:
        """Forget a host. The calls of held runs it never started wait for the next
        host (``hold``), whether it left without a word or said ``close``: a run
        started as resumable outlives the host that started it, either way."""
        bridge = self.bridges.pop(comm_id, None)
        held = self.held if hold else None
        self._listens_on_stdin.pop(comm_id, None)
        if bridge is not None:
            if held is not None:  # first: the code goes on as soon as a call fails
                held.host_leaves(bridge)
            kept = bridge.close(reason, held.holds_call if held is not None else None)
            if held is not None:
                held.keep(kept)
                for other in list(self.bridges.values()):
                    held.hand_over(other)
        comm = self.comms.pop(comm_id, None)
        if comm is not None and reason != HOST_CLOSED:
            # Say so on iopub (and forget the comm): a host whose connection came back
            # hears it and registers again; one that asks (comm_info_request) learns
            # it is gone. A host that closed sends its own comm_close.
            comm.close({"reason": reason})
        describe_tools(self.tools)


def _routing(data: Any) -> tuple[int, str] | None:
    """The (protocol version, message type) a message's comm data names, or None
    for data that is not ``{"v": <int>, "type": <str>}``."""
    if not isinstance(data, dict):
        return None
    version, msg_type = data.get("v"), data.get("type")
    if type(version) is not int or not isinstance(msg_type, str):
        return None
    return version, msg_type


def _result_ids(body: Any) -> list[int]:
    """The call ids a ``results`` body answers, as far as they can be read."""
    results = body.get("results") if isinstance(body, dict) else None
    if not isinstance(results, list):
        return []
    ids = (result.get("id") for result in results if isinstance(result, dict))
    return [i for i in ids if type(i) is int]


def _refusal(message: str) -> ErrorBody:
    """An ``error`` body: what was wrong, and which protocol this kernel speaks."""
    return {"message": message, "protocol": PROTOCOL_VERSION, "package": __version__}


def _mismatch(version: int) -> str:
    return (
        f"the host speaks progtc_kernel protocol {version}, this kernel's extension "
        f"(progtc-kernel {__version__}) speaks {PROTOCOL_VERSION}"
    )


_extension: Extension | None = None


def current() -> Extension | None:
    """The loaded extension of this kernel, if any (for diagnostics)."""
    return _extension


def load_ipython_extension(ipython: Any) -> None:
    global _extension
    if _extension is not None:
        return
    kernel = _ipykernel.current_kernel()
    if kernel is None:
        raise RuntimeError(
            "progtc_kernel runs inside a Jupyter kernel (ipykernel); in a terminal "
            "IPython there is no client to serve tools. Use progtc_kernel.ToolKernel."
        )
    _extension = Extension(kernel)
    _extension.load()


def unload_ipython_extension(ipython: Any) -> None:
    global _extension
    if _extension is not None:
        _extension.unload()
        _extension = None
