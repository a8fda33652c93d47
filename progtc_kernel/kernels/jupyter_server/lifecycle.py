"""``RemoteKernel``: a kernel's lifecycle through a Jupyter Server's REST API
(``/api/kernels``): started here and owned (shut down on close), or attached to by
id and left running. Its transports are websockets (``websocket.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ...exceptions import KernelDiedError, KernelNotStartedError, KernelStartError, ServerError
from ..base import Transport
from .websocket import WebsocketTransport

if TYPE_CHECKING:
    from .rest import JupyterServer

log = logging.getLogger("progtc_kernel")


class RemoteKernel:
    """A kernel on a ``JupyterServer``, driven through its REST API: give it to
    ``ToolKernel`` as ``kernel=``.

    Without ``kernel_id`` a kernel is started on the server and owned: restarted when it
    dies, shut down on close. With it, the running kernel is attached to: never
    restarted behind your back, left running on close.

    Example:
        ```python
        server = JupyterServer("http://127.0.0.1:8888", token="T")
        async with ToolKernel(tools, kernel=RemoteKernel(server, kernel_name="python3")):
            ...
        ```

    Args:
        server: The server the kernel runs on.
        kernel_id: A running kernel's id, to attach to it.
        kernel_name: The kernelspec of a kernel to start; default: the server's.
        env: Environment variables for a kernel to start, on servers that pass them on.

    Raises:
        TypeError: ``kernel_name`` or ``env`` given with ``kernel_id`` (they describe a
            kernel to start).
    """

    def __init__(
        self,
        server: JupyterServer,
        kernel_id: str | None = None,
        *,
        kernel_name: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if kernel_id is not None and (kernel_name is not None or env is not None):
            raise TypeError(
                "kernel_name= and env= describe a kernel to start; they cannot "
                "apply to the running kernel given by kernel_id="
            )
        self.server = server
        self.kernel_id = kernel_id
        self.kernel_name = kernel_name
        self.env = dict(env) if env is not None else None
        self.owned = kernel_id is None
        self.ended: str | None = None  # why the kernel counts as gone
        self._server_restarts = False  # the server said it restarts the kernel itself
        self._waiting: list[asyncio.Future[None]] = []  # wait() calls, until it is gone

    def __repr__(self) -> str:
        return f"RemoteKernel({self.server.url!r}, kernel_id={self.kernel_id!r})"

    @property
    def _path(self) -> str:
        return f"api/kernels/{quote(str(self.kernel_id), safe='')}"

    async def start(self) -> None:
        if not self.owned:
            await self.model()  # it exists, and the token is right
            return
        body: dict[str, Any] = {}
        # Asked first, with the short request timeout: a server that does not answer,
        # or refuses the token, is told apart before a long wait for a kernel to start.
        specs = (await self.server.kernelspecs()).get("kernelspecs", {})
        if self.kernel_name is not None:
            if self.kernel_name not in specs:
                raise ServerError(
                    f"{self.server.url} has no kernelspec {self.kernel_name!r}; it has "
                    f"{', '.join(sorted(specs)) or 'none'}: give one of those as kernel_name=",
                    404,
                )
            body["name"] = self.kernel_name
        if self.env is not None:
            body["env"] = self.env
        try:
            model = await self.server.request(
                "POST", "api/kernels", body, timeout=self.server.start_timeout
            )
        except ServerError as exc:
            if exc.status != 500:
                raise
            raise KernelStartError(
                f"{self.server.url} could not start a {self.kernel_name or 'default'} kernel "
                f"({exc}); the server's log says why (does the kernelspec's interpreter "
                "exist there?)"
            ) from None
        self.kernel_id = str(model["id"])
        self.ended = None

    async def model(self) -> dict[str, Any]:
        """The server's description of this kernel (``GET /api/kernels/{id}``)."""
        try:
            return dict(await self.server.request("GET", self._path))
        except ServerError as exc:
            if exc.status == 404:
                raise ServerError(self.server.no_kernel(str(self.kernel_id)), 404) from None
            raise

    def connect(self) -> WebsocketTransport:
        if self.kernel_id is None:
            raise KernelNotStartedError("the kernel is not started yet: await start() first")
        return WebsocketTransport(self.server, self.kernel_id, on_gone=self._gone)

    def _gone(self, reason: str, server_restarts: bool) -> None:
        if self.ended is None:
            self.ended = reason
            self._server_restarts = server_restarts
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self) -> None:
        """Return once the kernel is gone, as the server tells over the websocket: it
        reports the kernel restarting (its process died) or dead, the kernel's last
        words say it shuts down, or the connection cannot come back."""
        if self.kernel_id is None or self.ended is not None:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            await waiter
        finally:
            with contextlib.suppress(ValueError):
                self._waiting.remove(waiter)

    @property
    def server_restarts(self) -> bool:
        """The server reported the kernel restarting: it brings a new one up itself."""
        return self.ended is not None and self._server_restarts

    def renew(self) -> None:
        """The server restarted the kernel by itself (its restarter): the new process
        is the kernel now, and ``wait()`` waits for its end."""
        self.ended = None
        self._server_restarts = False

    def connection_lost(self, transport: Transport) -> bool:
        """The server was out of reach for longer than its ``reconnect_timeout``: the
        kernel may well have survived it."""
        return isinstance(transport, WebsocketTransport) and transport.gave_up

    async def reconnect(self, transport: Transport) -> bool:
        """Use the server again after ``transport`` gave the connection up for lost.

        True: the kernel survived, and is connected to again (its state kept). False: it
        is gone (the server restarted, say), and a new kernel of ours was started in its
        place. Raises ``ServerError`` while the server still cannot be reached (a later
        call tries again), ``KernelDiedError`` when a kernel attached to is gone."""
        assert isinstance(transport, WebsocketTransport)
        try:
            await self.model()
            survived = True
        except ServerError as exc:
            if exc.status != 404:
                raise
            if not self.owned:
                raise KernelDiedError(
                    f"the kernel {self.kernel_id} is gone from {self.server.url}: {exc}"
                ) from None
            await self.start()
            transport.kernel_id = str(self.kernel_id)
            survived = False
        self.ended = None
        self._server_restarts = False
        await transport.reconnect(tell_listeners=survived)
        return survived

    async def is_alive(self) -> bool:
        """What the server said over the websocket: alive until it reports the
        kernel restarting or dead, or the connection cannot come back."""
        return self.kernel_id is not None and self.ended is None

    async def interrupt(self) -> None:
        await self.server.request("POST", f"{self._path}/interrupt")

    async def restart(self) -> None:
        """A fresh kernel process. One the server is restarting already (it died, and
        the server's restarter caught it) is left to the server: asking again while it
        restarts fails (HTTP 500)."""
        if not (self.ended is not None and self._server_restarts):
            await self.server.request(
                "POST", f"{self._path}/restart", timeout=self.server.start_timeout
            )
        self.ended = None
        self._server_restarts = False

    async def shutdown(self) -> None:
        if not self.owned or self.kernel_id is None:
            return
        try:
            await self.server.request("DELETE", self._path)
        except ServerError as exc:
            if exc.status != 404:  # gone already is what we wanted
                log.warning("progtc_kernel: could not shut down kernel %s: %s", self.kernel_id, exc)

    def startup_failure(self) -> str:
        return (
            f"the kernel {self.kernel_id} on {self.server.url} {self.ended or 'died'} "
            "while starting; the server's log says why"
        )
