"""``progtc-kernel attach``: serve tools to a kernel someone else runs, such as the
kernel of a notebook open in JupyterLab.

It reaches a running kernel (a local one through its connection file, or one on a
Jupyter Server by id), registers the ``--tools`` there, traces every call on stderr,
and serves until Ctrl-C or SIGTERM. Then it detaches cleanly: the kernel is told at
once, calls still pending there fail with ``HostDisconnectedError``, and the kernel
keeps running. Exit status: 0 after a clean detach, 1 when the kernel went away,
2 for usage errors (a kernel that cannot be reached, or lacks progtc-kernel).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import signal
from typing import TYPE_CHECKING, Any

from ..timeouts import Timeout
from ._common import (
    CLI_TOKEN,
    TerminalApprover,
    UsageError,
    add_approve_option,
    add_timeout_options,
    approval_policy,
    console,
    error_text,
    load_tools,
)

if TYPE_CHECKING:
    from rich.console import Console

    from ..host.bridge import ToolBridge
    from ..host.tools import ToolRegistry
    from ..kernels.base import KernelLifecycle
    from ._common import Subcommands

# How long a kernel may stay away (a restart takes a few seconds) before it counts
# as gone, and how often, while it is away, attach looks whether it is back.
GONE_AFTER = 15.0
PROBE_INTERVAL = 0.2  # also: how often a restarting kernel is asked whether it is up
# What jupyter console's bare --existing picks: the most recently used kernel.
ANY_KERNEL = "kernel-*.json"


def add_parser(commands: Subcommands) -> None:
    attach = commands.add_parser(
        "attach",
        help="serve tools to a running kernel (a notebook's) until Ctrl-C",
        description="Serve the --tools to a kernel that is already running, such as the "
        "kernel of a notebook open in JupyterLab: code there can then `from tools import "
        "...` and call them. A trace of tool calls goes to stderr. Runs until Ctrl-C or "
        "SIGTERM, then detaches and leaves the kernel running. Exit status: 0 after a "
        "clean detach, 1 when the kernel went away, 2 for usage errors.",
    )
    kernel = attach.add_argument_group("the kernel: --existing, or --server with --kernel-id")
    kernel.add_argument(
        "--existing",
        nargs="?",
        const=ANY_KERNEL,
        metavar="CONNECTION_FILE",
        help="a local kernel's connection file, or its file name or kernel id as `jupyter "
        "console --existing` takes them (looked up here and in Jupyter's runtime "
        "directory; `%%connect_info` in the notebook shows it); alone: the most recently "
        "used kernel",
    )
    kernel.add_argument(
        "--server", metavar="URL", help="the Jupyter Server (JupyterLab's) that runs the kernel"
    )
    kernel.add_argument(
        "--token",
        metavar="T",
        default=os.environ.get("JUPYTER_TOKEN"),
        help="the server's token (default: $JUPYTER_TOKEN)",
    )
    kernel.add_argument(
        "--kernel-id",
        metavar="ID",
        help="the kernel's id on the server (GET /api/kernels lists them)",
    )
    attach.add_argument(
        "--tools",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE",
        help="a module name or .py file with the tools: its TOOLS list or dict, else the "
        "names in __all__, else its public functions (repeat to combine)",
    )
    add_approve_option(attach)
    add_timeout_options(
        attach,
        Timeout(),
        kinds=("tool_call", "start", "request", "approval"),
        helps={
            "start": "give up when the kernel does not answer within S seconds (when "
            "attaching, and when it restarts)",
            "request": "fail an HTTP request to --server after S seconds",
        },
        deprecated={"tool_call": ["--tool-timeout"], "start": ["--timeout"]},
    )
    attach.set_defaults(handler=command)


def command(args: argparse.Namespace) -> int:
    if not args.tools:
        raise UsageError("give the tools to serve: --tools MODULE_OR_FILE (repeatable)")
    tools = load_tools(args.tools)
    args.requires_approval = approval_policy(args.tools, args.approve, list(tools))
    lifecycle, where = _kernel(args)
    return asyncio.run(_attach(lifecycle, where, tools, args))


def _kernel(args: argparse.Namespace) -> tuple[KernelLifecycle, str]:
    """The kernel the options name, and how to name it to the person."""
    if (args.existing is None) == (args.server is None):
        raise UsageError(
            "name one kernel: --existing CONNECTION_FILE for a local kernel, "
            "or --server URL --kernel-id ID for a kernel on a Jupyter Server"
        )
    if args.existing is not None:
        if args.kernel_id:
            raise UsageError(
                "--kernel-id names a kernel on a server: give --server URL instead of --existing"
            )
        from ..kernels.local import AttachedKernel

        path = _connection_file(args.existing)
        return AttachedKernel(path), f"kernel {path}"
    if not args.kernel_id:
        raise UsageError(
            "give the kernel to serve on that server: --kernel-id ID (GET "
            "/api/kernels lists them; in JupyterLab, the kernel's id is in "
            "its connection file name, shown by `%connect_info`)"
        )
    from ..kernels.jupyter_server import JupyterServer

    try:
        server = JupyterServer(
            args.server,
            token=args.token,
            token_option=CLI_TOKEN,
            request_timeout=args.request_timeout,
        )
    except ValueError as exc:
        raise UsageError(f"--server: {exc}") from None
    return server.kernel(args.kernel_id), f"kernel {args.kernel_id} on {server.url}"


def _connection_file(existing: str) -> str:
    from jupyter_client.connect import find_connection_file
    from jupyter_core.paths import jupyter_runtime_dir

    try:
        return find_connection_file(existing)
    except OSError:
        what = (
            "no kernel is running" if existing == ANY_KERNEL else f"no kernel matches {existing!r}"
        )
        raise UsageError(
            f"{what} (looked in the current directory and {jupyter_runtime_dir()}): give "
            "the path of a running kernel's connection file; `%connect_info` in the "
            "notebook shows it"
        ) from None


async def _attach(
    lifecycle: KernelLifecycle, where: str, tools: ToolRegistry, args: argparse.Namespace
) -> int:
    from ..exceptions import ExtensionNotLoadedError, KernelError
    from ..host.bridge import ToolBridge
    from .run import Printer

    out = console()
    printer = Printer(out, timeout=None)
    approver = TerminalApprover(out, "progtc-kernel attach")
    try:
        await lifecycle.start()  # the kernel exists, the token is right
        bridge = ToolBridge(
            lifecycle,
            tools,
            tool_call_timeout=args.tool_call_timeout,
            approve=approver if args.requires_approval else None,
            requires_approval=args.requires_approval,
            approval_timeout=args.approval_timeout,
        )
        bridge.add_tool_listener(lambda parent, event: printer.show(event))
        host = _Host(lifecycle, bridge, args.start_timeout, out)
        info = await bridge.start(timeout=args.start_timeout)
    except (KernelError, OSError, ValueError) as exc:
        await lifecycle.shutdown()
        if isinstance(exc, ExtensionNotLoadedError):
            raise UsageError(f"could not attach to {where}: {exc}") from None
        if isinstance(exc, ValueError):  # JSON that is no connection info
            raise UsageError(
                f"could not attach to {where}: its connection file is unreadable ({exc})"
            ) from None
        raise UsageError(f"could not attach to {where}: {exc}") from None
    out.print(
        f"serving {', '.join(sorted(tools))} to {where} (ipykernel "
        f"{info['ipykernel']}, Python {info['python']}); Ctrl-C detaches",
        markup=False,
    )
    try:
        gone = await host.serve_until_stopped()
    finally:
        await host.detach()
        approver.close()
    if gone:
        out.print(error_text(f"{where} went away ({gone}); detached"))
        return 1
    out.print(f"detached from {where}", markup=False)
    return 0


class _Host:
    """An attached host while it serves: it registers again in a restarted kernel,
    notices a kernel that went away, and detaches cleanly."""

    def __init__(
        self, lifecycle: KernelLifecycle, bridge: ToolBridge, timeout: float | None, out: Console
    ) -> None:
        self.lifecycle = lifecycle
        self.bridge = bridge
        self.timeout = timeout
        self.out = out
        self.kernel_session: str | None = None  # the kernel process's own session id
        self.registering: asyncio.Task[None] | None = None
        self.probing: asyncio.Task[None] | None = None
        bridge.add_message_listener(self._on_message)

    async def serve_until_stopped(self) -> str | None:
        """Serve (the bridge answers calls by itself) until Ctrl-C or SIGTERM, or until
        the kernel is gone; returns why it is gone (None: stopped)."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C cancels instead
                loop.add_signal_handler(signum, stop.set)
        try:
            while True:
                # While the kernel is there nothing is polled: its end wakes us.
                if await _first(stop.wait(), self.lifecycle.wait()) == 0:
                    return None
                gone = await self._back_or_gone(stop)
                if gone or stop.is_set():
                    return gone
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError):
                    loop.remove_signal_handler(signum)

    async def _back_or_gone(self, stop: asyncio.Event) -> str | None:
        """The kernel's process ended: a restart (it comes back: None) or for good
        (why). A restarting kernel is away for a moment: only a long absence counts."""
        from ..kernels.jupyter_server import RemoteKernel

        if isinstance(self.lifecycle, RemoteKernel):  # its server told what happened
            if self.lifecycle.server_restarts:
                self.lifecycle.renew()  # the server brings the kernel up again itself
                return None
            return f"it {self.lifecycle.ended}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GONE_AFTER
        while loop.time() < deadline:
            gone, answering = await _liveness(self.lifecycle)
            if gone:
                return gone
            if answering:
                return None
            # Pacing the looks while it is away; its return is no event we can wait on.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), PROBE_INTERVAL)
            if stop.is_set():
                return None
        return f"it has not answered for {GONE_AFTER:g} s"

    async def detach(self) -> None:
        """Close our comm (the kernel fails our pending calls at once and forgets us),
        then our connections; the kernel itself is left running."""
        for task in (self.registering, self.probing):
            if task is not None:
                task.cancel()
        await self.bridge.close()
        await self.lifecycle.shutdown()  # for a kernel attached to, it only lets go

    def _on_message(self, channel: str, msg: dict[str, Any]) -> None:
        """A new kernel process (a restart from JupyterLab's toolbar, or the server
        replacing a kernel that died) knows no host: register there again. It says
        ``starting``; if that was missed, its status messages carry a new session id.
        (Unparented statuses other than ``starting`` are the server's own notes.)"""
        if channel != "iopub":
            return
        msg_type, content = msg["header"].get("msg_type"), msg["content"]
        state = content.get("execution_state") if msg_type == "status" else None
        if (msg_type == "shutdown_reply" and content.get("restart")) or state == "restarting":
            self._until_a_new_kernel_answers()
        if msg_type != "status" or not (state == "starting" or msg["parent_header"].get("msg_id")):
            return
        known, self.kernel_session = self.kernel_session, msg["header"].get("session")
        if state == "starting" or (known is not None and known != self.kernel_session):
            if self.registering is not None:
                self.registering.cancel()
            self.registering = asyncio.ensure_future(self._register_again())

    def _until_a_new_kernel_answers(self) -> None:
        """The kernel is being replaced (its last words, or the server's note). Its
        successor's ``starting`` may reach nobody, and its first status messages may
        wait for someone to ask it something: ask it, until its answer (a status with a
        new session id) shows that it is up. (On shell: ipykernel 6 logs errors for
        control messages that reach it before it has started.)"""
        if self.probing is not None and not self.probing.done():
            return

        async def probe(old: str | None) -> None:
            loop = asyncio.get_running_loop()
            deadline = math.inf if self.timeout is None else loop.time() + self.timeout
            while self.kernel_session == old and loop.time() < deadline:
                self.bridge.transport.send("shell", "kernel_info_request", {})
                await asyncio.sleep(PROBE_INTERVAL)  # pacing: the answer is the event

        self.probing = asyncio.ensure_future(probe(self.kernel_session))

    async def _register_again(self) -> None:
        from ..exceptions import KernelError

        try:
            await self.bridge.reopen(timeout=self.timeout)
        except KernelError as exc:
            self.out.print(
                error_text(
                    f"the kernel restarted, and the tools could not be "
                    f"registered there again: {exc}"
                )
            )
            return
        self.out.print("the kernel restarted: serving it again", markup=False)


async def _first(*waits: Any) -> int:
    """Await the first of these to finish (the others are cancelled); its index."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
    return next(index for index, task in enumerate(tasks) if task in done)


async def _liveness(lifecycle: KernelLifecycle) -> tuple[str | None, bool]:
    """``(why the kernel is gone for good, or None; whether it answers now)``, learned
    without sending the kernel a message: from the server's REST API, or from the
    local kernel's connection file and heartbeat."""
    from ..exceptions import ServerError
    from ..kernels.jupyter_server import RemoteKernel
    from ..kernels.local import AttachedKernel

    if isinstance(lifecycle, RemoteKernel):
        try:
            model = await lifecycle.model()
        except ServerError as exc:
            return ("it was shut down" if exc.status == 404 else None), False
        return (
            "the server reports it dead" if model.get("execution_state") == "dead" else None
        ), True
    if (
        isinstance(lifecycle, AttachedKernel)
        and isinstance(lifecycle.connection, str)
        and not os.path.exists(lifecycle.connection)
    ):
        return "its connection file was removed: it was shut down", False
    return None, await lifecycle.is_alive()
