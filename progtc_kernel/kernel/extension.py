"""The IPython extension: ``%load_ext progtc_kernel`` or ``--ext=progtc_kernel``.

It registers the ``progtc_kernel`` comm target, takes replies on the control
channel (and, once a host connects, straight off the shell socket), and puts the
``tools`` module in ``sys.modules``. A host connects by opening a comm; each open
comm is one ``KernelBridge``. Calls go to the host whose client ran the current
cell, or to the most recently connected one.
"""

from __future__ import annotations

import json
import logging
import platform
import sys
from typing import Any

from ..protocol import (
    COMM_TARGET,
    HOST_CLOSED,
    PROTOCOL_VERSION,
    ReadyBody,
    RegisterBody,
    body_bytes,
    unpack_header,
)
from . import _ipykernel
from .bridge import KernelBridge
from .tools_module import ToolsModule

log = logging.getLogger("progtc_kernel")


class Extension:
    """The kernel-side state: open host connections and the ``tools`` module."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.bridges: dict[str, KernelBridge] = {}
        self.shell: _ipykernel.ShellInterception | None = None
        self.tools = ToolsModule(self.current_bridge)
        self._replaced_tools = sys.modules.get("tools")

    def load(self) -> None:
        import comm

        comm.get_comm_manager().register_target(COMM_TARGET, self.on_open)
        _ipykernel.install_control_route(self.kernel, self.owns, self.on_message)
        if self._replaced_tools is not None:
            log.warning("progtc_kernel: the module 'tools' now refers to host tools, "
                        "shadowing %r", self._replaced_tools)
        sys.modules["tools"] = self.tools

    def unload(self) -> None:
        import comm

        comm.get_comm_manager().unregister_target(COMM_TARGET, self.on_open)
        for comm_id in list(self.bridges):
            self.close(comm_id, "the progtc_kernel extension was unloaded")
        if sys.modules.get("tools") is self.tools:
            del sys.modules["tools"]
            if self._replaced_tools is not None:
                sys.modules["tools"] = self._replaced_tools

    def owns(self, comm_id: str) -> bool:
        return comm_id in self.bridges

    def current_bridge(self) -> KernelBridge | None:
        if not self.bridges:
            return None
        session = _ipykernel.parent_session(self.kernel)
        for bridge in reversed(self.bridges.values()):
            if bridge.host_session == session:
                return bridge
        return next(reversed(self.bridges.values()))

    # -- comm events ----------------------------------------------------------------

    def on_open(self, comm: Any, msg: dict[str, Any]) -> None:
        version, _ = unpack_header(msg["content"].get("data") or {})
        bridge = self._new_bridge(comm, msg)
        if version != PROTOCOL_VERSION:
            bridge._send("error", {"message": (
                f"the host speaks progtc_kernel protocol {version}, this kernel "
                f"speaks {PROTOCOL_VERSION}: install the same progtc-kernel version "
                "in the kernel's environment and the host's")})
            return
        body: RegisterBody = json.loads(body_bytes(msg.get("buffers")))
        bridge.configure(body)
        self.bridges[comm.comm_id] = bridge
        comm.on_msg(self.on_message)
        comm.on_close(lambda close_msg: self.close(comm.comm_id, HOST_CLOSED))
        ready: ReadyBody = {
            "protocol": PROTOCOL_VERSION,
            "ipykernel": _ipykernel.ipykernel_version(),
            "python": platform.python_version(),
            "shell_replies": bridge.shell_replies is not None,
        }
        bridge._send("ready", ready)

    def _new_bridge(self, comm: Any, msg: dict[str, Any]) -> KernelBridge:
        if self.shell is None:
            shell = _ipykernel.ShellInterception(self.kernel, self.owns, self.on_message)
            self.shell = shell if shell.install() else None
        return KernelBridge(
            self.kernel, comm.comm_id, comm.topic, msg["header"].get("session"),
            shell_replies=self.shell, loop=self.kernel.io_loop.asyncio_loop,
        )

    def on_message(self, msg: dict[str, Any]) -> None:
        """A host message, from whichever thread brought it."""
        content = msg["content"]
        bridge = self.bridges.get(content.get("comm_id", ""))
        if bridge is None:
            return
        _, msg_type = unpack_header(content.get("data") or {})
        body = json.loads(body_bytes(msg.get("buffers")))
        if msg_type == "results":
            bridge.take_results(body["results"])
        elif msg_type == "tools":
            bridge.configure(body)
        elif msg_type == "close":
            self.close(bridge.comm_id, body.get("reason") or HOST_CLOSED)
        else:
            log.warning("progtc_kernel: unknown message type %r", msg_type)

    def close(self, comm_id: str, reason: str) -> None:
        bridge = self.bridges.pop(comm_id, None)
        if bridge is not None:
            bridge.close(reason)


_extension: Extension | None = None


def load_ipython_extension(ipython: Any) -> None:
    global _extension
    if _extension is not None:
        return
    kernel = _ipykernel.current_kernel()
    if kernel is None:
        raise RuntimeError(
            "progtc_kernel runs inside a Jupyter kernel (ipykernel); in a terminal "
            "IPython there is no client to serve tools. Use progtc_kernel.ToolKernel.")
    _extension = Extension(kernel)
    _extension.load()


def unload_ipython_extension(ipython: Any) -> None:
    global _extension
    if _extension is not None:
        _extension.unload()
        _extension = None
