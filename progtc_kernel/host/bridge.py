"""Serves host tools to one kernel: the host half of the protocol.

``ToolBridge`` opens a connection through the kernel's lifecycle, registers the tools
on a comm (loading the extension first where needed), waits for the kernel to
confirm, and registers again when a reconnect or a restart made the kernel forget
it. What the kernel says is read by ``dispatch.py``; the calls run in
``serving.py``; ``rate_limits.py`` recovers calls a Jupyter Server dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import uuid
from collections.abc import Callable
from typing import Any

import pydantic_core

from .._install import install_hint
from .._wire import BadMessages
from ..approval import (
    Approval,
    ApprovalGate,
    ApprovalRequest,
    Approver,
    CancelReason,
    RequiresApproval,
)
from ..exceptions import (
    ExtensionNotLoadedError,
    KernelDiedError,
    KernelError,
    ProtocolMismatchError,
)
from ..kernels.base import KernelLifecycle, KernelLike, Transport
from ..protocol import (
    COMM_TARGET,
    HOST_CLOSED,
    PROTOCOL_VERSION,
    CallIdsBody,
    CallsBody,
    CancelledBody,
    Channel,
    ErrorBody,
    Packed,
    ReadyBody,
    RegisterBody,
    pack,
)
from ..timeouts import DEFAULT_START, DEFAULT_TOOL_CALL, USE_DEFAULT, UseDefault, renamed, seconds
from .dispatch import KERNEL_PYTHON, dispatch_comm_msg, mismatch
from .events import Event
from .injection import (
    ExtensionPolicy,
    check_policy,
    load_expression,
    load_outcome,
    load_request,
)
from .rate_limits import RateLimitResender
from .serving import CallServer, ToolEventListener, serving
from .threads import DEFAULT_TOOL_THREADS, ToolThreads
from .tools import ToolRegistry, ToolsLike

__all__ = ["MessageListener", "ToolBridge", "ToolEventListener", "serving"]

MessageListener = Callable[[str, dict[str, Any]], None]

log = logging.getLogger("progtc_kernel")

# Where the kernel's messages to this host come: iopub, or calls on our own stdin
# connection (see protocol.RegisterBody).
_COMM_CHANNELS = frozenset({"iopub", "stdin"})


class ToolBridge:
    """Serves tools to code running in one kernel, whoever runs that code.

    It opens a connection of its own, so your client's messages stay yours, and loads
    the extension into the kernel if needed. It never starts, restarts or stops the
    kernel.

    Example:
        ```python
        async with ToolBridge(km, tools=[get_weather]):
            await run_cells_your_way(km)  # `from tools import get_weather` works there
        ```

    Args:
        kernel: What you hold, as ``ToolKernel`` takes it (``KernelLike``): a
            jupyter_client ``KernelManager`` or ``KernelClient``, a connection-info dict
            or connection-file path, a kernel on a Jupyter Server
            (``server.kernel(kernel_id)``); or a ``Transport``.
        tools: The tools to serve (see ``ToolRegistry``).
        tool_call_timeout: Seconds a call may take before the kernel gives up on it
            (``None``: no limit). Time spent waiting for a free thread does not count.
        max_in_flight: Calls outstanding at once; the kernel holds back the rest.
        tool_threads: How many sync tools may run at once, each on a thread of its own.
        extension: How the kernel gets the extension. ``"inject"`` (default) loads it
            if the kernel has not, from the kernel's environment when that has exactly
            this version, else from code this host brings along (nothing is written to
            the kernel's disk); ``"installed"`` loads only an installed copy;
            ``"loaded"`` sends nothing, for kernels that load it at start.
        tool_timeout: The old name of ``tool_call_timeout`` (deprecated).
        approve: Decides each call that needs approval (an ``Approver``: takes an
            ``ApprovalRequest``, returns an ``Approval``, sync or async); ``None``: such
            calls wait for ``decide``.
        requires_approval: Which calls need approval besides those of tools that
            require it themselves: ``True`` (all), a collection of tool names, or a
            function ``(tool, arguments) -> bool``.
        approval_timeout: Seconds a call may wait for a decision before it is denied
            (``None``: no limit). Not charged to ``tool_call_timeout``.
    """

    # Ask the kernel to send calls on our own stdin connection where the transport has
    # one (see protocol.RegisterBody); False keeps them all on iopub, as before
    # (the benchmarks compare both in one run).
    calls_on_stdin = True

    def __init__(
        self,
        kernel: KernelLike | Transport,
        tools: ToolsLike = None,
        *,
        tool_call_timeout: float | None = DEFAULT_TOOL_CALL,
        max_in_flight: int = 256,
        tool_threads: int = DEFAULT_TOOL_THREADS,
        extension: ExtensionPolicy = "inject",
        tool_timeout: float | UseDefault | None = USE_DEFAULT,
        approve: Approver | None = None,
        requires_approval: RequiresApproval = None,
        approval_timeout: float | None = None,
    ) -> None:
        self.extension = check_policy(extension)
        self.transport: Transport = _transport_for(kernel)
        self.tools = ToolRegistry.of(tools)
        if not isinstance(tool_timeout, UseDefault):  # its spelling before 0.2
            tool_call_timeout = renamed("tool_timeout", "tool_call_timeout=", tool_timeout)
        self.tool_call_timeout = seconds("tool_call_timeout", tool_call_timeout)
        self.max_in_flight = max_in_flight
        self.threads = ToolThreads(tool_threads)
        self.kernel_info: ReadyBody | None = None
        # Resumable runs whose host went, that this host took over as it registered.
        self.held_runs: list[str] = []
        self.comm_id = ""
        self.bad_messages = BadMessages(log, "host")
        self._registered = ""
        self._ready: asyncio.Future[ReadyBody] | None = None
        self._load_msg_id: str | None = None  # while the extension is being loaded
        self._refused: ExtensionNotLoadedError | None = None  # the comm, meanwhile
        self.approvals = ApprovalGate(
            approve, requires_approval, timeout=seconds("approval_timeout", approval_timeout)
        )
        self.calls = CallServer(
            self, self._send_noting_waits, self._emit, self.threads, max_in_flight, self.approvals
        )
        self._waiting_calls: set[int] = set()  # said to wait (queued), not started yet
        self._tool_listeners: list[ToolEventListener] = []
        self._message_listeners: list[MessageListener] = []
        self._started = False
        self._probes: set[str] = set()
        self._probe_seen: asyncio.Future[None] | None = None
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}  # control replies
        self._recovery: asyncio.Task[None] | None = None
        self._iopub_seen: asyncio.Future[None] | None = None
        self._rate_limits = RateLimitResender(self._resume)

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> ToolBridge:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(
        self, *, timeout: float | None = DEFAULT_START, fresh: bool = False
    ) -> ReadyBody:
        """Connect, register the tools and wait until the kernel confirms.

        ``async with ToolBridge(...)`` calls it.

        Args:
            timeout: Seconds it may take (``None``: no limit).
            fresh: The kernel is starting right now (its first iopub message is news).

        Returns:
            What the kernel side said it runs: protocol, package version, ipykernel...
        """
        if not self._started:
            self.transport.add_reconnect_listener(self._on_reconnect)
            await self.transport.start(self._on_message)
            self._started = True
        try:
            return await self.reopen(timeout=timeout, fresh=fresh)
        except BaseException:
            await self.close()
            raise

    async def reopen(
        self, *, timeout: float | None = DEFAULT_START, fresh: bool = False
    ) -> ReadyBody:
        """Register afresh (after a kernel restart) and wait until the kernel confirms."""
        await self._until_iopub_flows(timeout, fresh)
        self.open()
        return await self.wait_ready(timeout)

    async def _until_iopub_flows(self, timeout: float | None, fresh: bool) -> None:
        """A fresh iopub subscription misses what is published before it lands.

        A starting kernel announces itself on iopub: any message proves the way open.
        Otherwise ask for kernel info on control (it answers even while a cell runs)
        until a status message about a request comes through. Probes are held back
        from a starting kernel: ipykernel 6 fails on control messages that arrive
        before it has started."""
        loop = asyncio.get_running_loop()
        if fresh:
            seen = self._iopub_seen = loop.create_future()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(seen), min(timeout or 5, 5))
            if seen.done():
                return
        live = self._probe_seen = loop.create_future()
        deadline = math.inf if timeout is None else loop.time() + timeout
        try:
            while not live.done():
                self._probes.add(self.transport.send("control", "kernel_info_request", {}))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(live), 0.2)
                if not live.done() and loop.time() > deadline:
                    raise KernelDiedError(
                        f"the kernel did not answer within {timeout or 0:g} s; is it running?"
                    )
        finally:
            self._probes.clear()

    def open(self) -> None:
        """Open a fresh comm (after a kernel restart, too) without waiting for it."""
        self.cancel_calls()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(KernelError("the kernel restarted"))
            self._ready.exception()  # mark retrieved: nobody may be waiting
        self._ready = asyncio.get_running_loop().create_future()
        self.comm_id = uuid.uuid4().hex
        self.calls.forget_answers()
        self._waiting_calls.clear()
        self._refused = None
        if self.extension != "loaded":
            expression = load_expression(inject=self.extension == "inject")
            self._load_msg_id = self.transport.send(
                "shell", "execute_request", load_request(expression)
            )
        data, buffers = pack("register", self._register_body(), pydantic_core.to_json)
        self.transport.send(
            "shell",
            "comm_open",
            {"comm_id": self.comm_id, "target_name": COMM_TARGET, "data": data},
            buffers=buffers,
        )
        self._registered = self._registration()

    async def wait_ready(self, timeout: float | None = DEFAULT_START) -> ReadyBody:
        """Wait until the kernel confirms the comm (again, after a reconnect).

        Args:
            timeout: Seconds to wait (``None``: no limit).

        Returns:
            What the kernel side said it runs.
        """
        assert self._ready is not None, "call start() first"
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            ready = self._ready
            try:
                info = await asyncio.wait_for(
                    asyncio.shield(ready),
                    None if deadline is None else max(0.0, deadline - loop.time()),
                )
            except asyncio.TimeoutError:
                raise KernelError(
                    f"the kernel did not confirm the progtc_kernel comm within {timeout or 0:g} "
                    "s; is it busy, or not an IPython kernel?"
                ) from None
            except KernelError:
                if ready is self._ready:
                    raise
                continue  # superseded: registering again
            if ready is self._ready:
                break
        self.kernel_info = info
        # On shell, so that the kernel learns which connection is ours (see protocol).
        self._send("shell", pack("hello", {}))
        return info

    async def close(self) -> None:
        if not self._started:
            return
        self._started = False
        # The calls that wait here (for a thread, an approval) never start now, and the
        # kernel hears which they are: a resumable run's go to the next host. This
        # turn's notices leave first (they are sent at the end of a loop turn).
        await asyncio.sleep(0)
        waiting = sorted(self._waiting_calls)
        self.cancel_calls("host_closed")
        if self.comm_id and not self._comm_refused():
            # Control reaches a kernel even while a cell runs there, and handles messages
            # in order: its reply to the probe says the close was seen before our
            # connection drops (which the kernel would take for a crash).
            data, buffers = pack("close", {"reason": HOST_CLOSED, "waiting": waiting})
            with contextlib.suppress(Exception):  # a kernel gone or hung is left behind
                self.transport.send(
                    "control", "comm_msg", {"comm_id": self.comm_id, "data": data}, buffers=buffers
                )
                self.transport.send("shell", "comm_close", {"comm_id": self.comm_id, "data": {}})
                await self._reply_to(
                    self.transport.send("control", "kernel_info_request", {}), timeout=1
                )
        if self._recovery is not None:
            self._recovery.cancel()
        self._rate_limits.stop()
        await self.calls.wait_all()
        await self.transport.close()

    def _comm_refused(self) -> bool:
        """The kernel said no to our comm (no extension there): nothing to close, and a
        comm message on control would only make ipykernel log an error."""
        ready = self._ready
        return (
            ready is not None
            and ready.done()
            and not ready.cancelled()
            and isinstance(ready.exception(), (ExtensionNotLoadedError, ProtocolMismatchError))
        )

    async def _reply_to(self, msg_id: str, timeout: float) -> dict[str, Any]:
        """Wait (at most ``timeout``) for the control reply to ``msg_id``."""
        reply = self._replies[msg_id] = asyncio.get_running_loop().create_future()
        try:
            return await asyncio.wait_for(reply, timeout)
        finally:
            self._replies.pop(msg_id, None)

    def cancel_calls(self, reason: CancelReason = "cancelled") -> None:
        """Cancel every tool running for this kernel (it restarted, died, or we leave).

        Args:
            reason: Why, as ``ApprovalCancelled`` tells it for calls waiting for a decision.
        """
        self.calls.cancel_all(reason)

    # -- approval -----------------------------------------------------------------------

    async def decide(self, call_id: int, approval: Approval) -> None:
        """Decide a call that waits for approval (see ``ApprovalRequested``).

        Args:
            call_id: The request's ``call_id``.
            approval: ``Approval.allow()``, ``Approval.deny(message)`` or
                ``Approval.allow_for_run()``.

        Raises:
            ValueError: No call with this id waits for a decision (the message lists
                those that do).
        """
        self.approvals.decide(call_id, approval)

    async def confirm_waiting(self) -> None:
        """Wait until the kernel has confirmed that it counts the calls of resumable
        runs waiting here (for an approval, a thread) as not started: should this host
        go from then on, the next host gets them. See ``ToolKernel.confirm_waiting``."""
        await self.calls.confirm_waiting()

    @property
    def pending_approvals(self) -> list[ApprovalRequest]:
        """The calls waiting for a decision, oldest first."""
        return self.approvals.pending

    def _on_reconnect(self) -> None:
        """The connection dropped and came back (a websocket): tell the kernel which
        connection is ours now, and have it send again the calls still waiting for
        a result, since the drop may have lost a call or a result. ``wait_ready()``
        waits until the kernel is known to serve through us again."""
        if not (
            self.comm_id
            and self._ready is not None
            and self._ready.done()
            and not self._ready.exception()
        ):
            return
        self._send("shell", pack("hello", {}))
        self._send("control", pack("resume", {}))
        self.calls.ask_acks_again()  # the drop may have lost an ack
        self._ready = asyncio.get_running_loop().create_future()
        self._recovery = asyncio.ensure_future(self._recover(self._ready))

    async def _recover(self, ready: asyncio.Future[ReadyBody]) -> None:
        """Register afresh if the kernel forgot us while we were away: a server that
        buffers only for a kernel's last connection closed ours, or restarted it."""
        try:
            reply = await self._reply_to(
                self.transport.send("control", "comm_info_request", {"target_name": COMM_TARGET}),
                timeout=30,
            )
        except asyncio.TimeoutError:
            if not ready.done():
                ready.set_exception(KernelError("the kernel did not answer after reconnecting"))
                ready.exception()  # mark retrieved: nobody may be waiting
            return
        if self.comm_id in reply["content"].get("comms", {}):
            if not ready.done() and self.kernel_info is not None:
                ready.set_result(self.kernel_info)
            return
        log.info("progtc_kernel: the kernel forgot this host while it was away; registering again")
        await self._register_again()

    async def _register_again(self) -> None:
        self.open()
        try:
            await self.wait_ready()
        except KernelError as exc:
            log.warning("progtc_kernel: could not register again: %s", exc)

    # -- tools ----------------------------------------------------------------------

    def use_tools(self, tools: ToolsLike) -> None:
        """Serve this tool set from now on (sent to the kernel only when it changed).

        Args:
            tools: As for ``ToolRegistry``.
        """
        registry = ToolRegistry.of(tools)
        self.tools = registry
        if self.comm_id and self._registration() != self._registered:
            self._send("shell", pack("tools", self._register_body(), pydantic_core.to_json))
            self._registered = self._registration()

    def _register_body(self) -> RegisterBody:
        body: RegisterBody = {
            "tools": self.tools.specs(),
            "tool_timeout": self.tool_call_timeout,
            "max_in_flight": self.max_in_flight,
            "approval": self._tools_asking(),
        }
        if self.calls_on_stdin and getattr(self.transport, "carries_stdin", False):
            body["calls_on_stdin"] = True
        return body

    def _tools_asking(self) -> list[str]:
        return self.approvals.tools_asking(
            (name, tool.requires_approval or name in self.tools.approved_by_call)
            for name, tool in self.tools.items()
        )

    def _registration(self) -> str:
        """What the kernel was told: the tools, and which of them may need approval."""
        return f"{self.tools.fingerprint}:{','.join(self._tools_asking())}"

    # -- listeners ----------------------------------------------------------------------

    def add_tool_listener(self, listener: ToolEventListener) -> None:
        self._tool_listeners.append(listener)

    def add_message_listener(self, listener: MessageListener) -> None:
        """Receive every kernel message that is not part of the tool protocol."""
        self._message_listeners.append(listener)

    def remove_message_listener(self, listener: MessageListener) -> None:
        self._message_listeners.remove(listener)

    # -- incoming -------------------------------------------------------------------

    def _on_message(self, channel: str, msg: dict[str, Any]) -> None:
        if channel == "iopub" and self._iopub_seen is not None and not self._iopub_seen.done():
            self._iopub_seen.set_result(None)
        if self._probes and msg["parent_header"].get("msg_id") in self._probes:
            seen = self._probe_seen
            if channel == "iopub" and seen is not None and not seen.done():
                seen.set_result(None)
            return
        if channel == "control" and self._replies:
            reply = self._replies.get(msg["parent_header"].get("msg_id", ""))
            if reply is not None and not reply.done():
                reply.set_result(msg)
                return
        content = msg.get("content", {})
        msg_type = msg["header"]["msg_type"]
        if msg_type == "status" and content.get("execution_state") == "idle":
            self.approvals.end_run(msg["parent_header"].get("msg_id"))  # its grants end
        self._rate_limits.watch(channel, msg)
        # Calls come on our stdin connection where the kernel can send them there.
        if channel in _COMM_CHANNELS and content.get("comm_id") == self.comm_id:
            if msg_type == "comm_msg":
                dispatch_comm_msg(msg, self, self.bad_messages)
            elif msg_type == "comm_close":
                self._on_comm_close()
            return
        if (
            msg_type == "execute_reply"
            and self._load_msg_id is not None
            and msg["parent_header"].get("msg_id") == self._load_msg_id
        ):
            self._on_extension_loaded(content)
            return
        for listener in self._message_listeners:
            listener(channel, msg)

    def _resume(self) -> None:
        """Have the kernel send again every call still waiting for a result."""
        if self.comm_id:
            self._send("control", pack("resume", {}))
            self.calls.ask_acks_again()  # an ack may have been lost with them

    # -- what the kernel says on the comm (see dispatch.py) -----------------------------

    def on_calls(self, body: CallsBody, parent_id: str | None) -> None:
        self.calls.serve(self.tools, body["calls"], body["reply_channel"], parent_id)

    def on_cancelled(self, body: CancelledBody) -> None:
        self.calls.cancel(body["ids"], body["reason"])

    def on_queued(self, body: CallIdsBody) -> None:
        """The kernel counts these held calls as waiting here."""
        self.calls.acknowledged_queued(body["ids"])

    def on_started(self, body: CallIdsBody) -> None:
        """The kernel counts these held calls as started now: they may run."""
        self._waiting_calls.difference_update(body["ids"])
        self.calls.acknowledged(body["ids"])

    def on_ready(self, body: ReadyBody) -> None:
        # Now, before the calls of those runs, which the kernel sends right after.
        self.held_runs = list(dict.fromkeys([*self.held_runs, *body["held_runs"]]))
        self._resolve_ready(body)

    def on_error(self, body: ErrorBody) -> None:
        """The kernel could not use a message of ours (it says which, and why)."""
        ready = self._ready
        if ready is None or ready.done():  # registered: it failed the calls concerned
            self.bad_messages.report("refused by the kernel", body["message"])
        elif body.get("protocol") == PROTOCOL_VERSION:
            self._resolve_ready(
                ProtocolMismatchError(f"the kernel refused this host: {body['message']}")
            )
        else:  # protocol 1 kernels sent the message alone
            self._resolve_ready(ProtocolMismatchError(mismatch(body)))

    def _on_comm_close(self) -> None:
        if self._ready is not None and self._ready.done() and not self._ready.exception():
            # Registered, then closed by the kernel: it took our connection for gone
            # (a websocket that dropped and came back). Register again.
            log.info("progtc_kernel: the kernel closed this host's comm; registering again")
            self._recovery = asyncio.ensure_future(self._register_again())
            return
        refused = ExtensionNotLoadedError(
            "the kernel refused the progtc_kernel comm: the extension is not loaded there, "
            "and extension='loaded' told this host not to load it. Leave extension at its "
            "default ('inject'), or start the kernel with --ext=progtc_kernel"
        )
        if self._load_msg_id is not None:
            # The reply to loading the extension (on shell) says why better, and may come
            # after this (on iopub): let it decide.
            self._refused = refused
        else:
            self._resolve_ready(refused)

    def _on_extension_loaded(self, reply: dict[str, Any]) -> None:
        self._load_msg_id = None
        content = load_outcome(reply)
        if content.get("status") != "error":
            if self._refused is not None:
                self._resolve_ready(self._refused)
            return
        if content.get("ename") == "ModuleNotFoundError":
            reason = (
                f"{content.get('evalue')}. Leave extension at its default ('inject') "
                "to have this host bring it, or install it there: "
                f"{install_hint(python=KERNEL_PYTHON)}"
            )
        else:
            reason = (
                f"the kernel could not load progtc_kernel ({content.get('ename')}: "
                f"{content.get('evalue')})"
            )
        self._resolve_ready(ExtensionNotLoadedError(reason))

    def _resolve_ready(self, outcome: ReadyBody | Exception) -> None:
        if self._ready is None or self._ready.done():
            return
        if isinstance(outcome, Exception):
            self._ready.set_exception(outcome)
        else:
            self._ready.set_result(outcome)

    # -- sending -------------------------------------------------------------------

    def _send(self, channel: Channel, message: Packed) -> None:
        """Send one protocol message (built by ``protocol.pack``) on our comm."""
        data, buffers = message
        self.transport.send(
            channel, "comm_msg", {"comm_id": self.comm_id, "data": data}, buffers=buffers
        )

    def _send_noting_waits(self, channel: Channel, message: Packed) -> None:
        """Send a message of the call server, noting which calls wait (``close``
        tells the kernel)."""
        kind = message.data.get("type")
        if kind in ("queued", "started"):
            body = json.loads(message.buffers[0])
            ids = body["ids"]
            if kind == "queued":
                self._waiting_calls.update(ids)
            elif not body.get("ack"):  # acked: they wait until the kernel answers
                self._waiting_calls.difference_update(ids)
        self._send(channel, message)

    def _emit(self, parent_id: str | None, event: Event) -> None:
        for listener in self._tool_listeners:
            listener(parent_id, event)


def _transport_for(kernel: Any) -> Transport:
    if isinstance(kernel, Transport):
        return kernel
    if isinstance(kernel, KernelLifecycle):  # e.g. JupyterServer(...).kernel(kernel_id)
        return kernel.connect()
    if hasattr(kernel, "get_connection_info") or isinstance(kernel, (str, os.PathLike, dict)):
        # A KernelManager, a KernelClient, connection info: the lifecycle of that
        # kernel opens the connection (and is not started: someone else runs it).
        from ..kernels.resolve import resolve_kernel

        return resolve_kernel(kernel).connect()
    raise TypeError(
        f"ToolBridge cannot reach a kernel through {type(kernel).__name__}; pass a "
        "KernelManager, a KernelClient, a connection-info dict or file, a remote kernel "
        "(JupyterServer(url, token=...).kernel(kernel_id)), or a Transport"
    )
