"""Kernels on a Jupyter Server, a Kernel Gateway or an Enterprise Gateway.

* ``JupyterServer``: where a server is and how to authenticate (a token, extra
  headers such as E2B's traffic token), and its REST API, with errors that name
  the fix.
* ``RemoteKernel``: a kernel's lifecycle through REST (``/api/kernels``): started
  here and owned (shut down on close), or attached to by id and left running.
* ``WebsocketTransport``: one connection to the kernel websocket
  (``/api/kernels/{id}/channels``), with a session id of its own, on tornado's
  websocket client. Messages are built by ``jupyter_client.session.Session``; the
  server signs them for the kernel. It speaks ``v1.kernel.websocket.jupyter.org``
  where the server offers it and the legacy JSON framing otherwise, and after a
  drop it reconnects with the same session id, so that the server replays what it
  buffered meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import struct
import uuid
import weakref
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

from .._wire import BadMessages
from ..host.errors import KernelStartError, ServerError
from .base import ChannelName, MessageCallback

log = logging.getLogger("progtc_kernel")

V1_PROTOCOL = "v1.kernel.websocket.jupyter.org"
# Larger than tornado's 10 MiB default: a tool's arguments travel in one message.
MAX_MESSAGE_SIZE = 256 * 2**20
# Pings keep proxies from closing an idle connection, and notice one that died.
PING_INTERVAL = 10.0
PING_TIMEOUT = 10.0
# How a refused token's fix is named, unless the API in use has its own spelling.
TOKEN_OPTION = "JupyterServer(url, token=...)"
# Statuses the server itself publishes when a kernel dies: it restarts it, or gives up.
_DEATH_STATES = frozenset({"restarting", "dead"})


class JupyterServer:
    """A Jupyter Server, Kernel Gateway or Enterprise Gateway, reached over HTTP(S).

    ::

        server = JupyterServer("http://127.0.0.1:8888", token="T")
        async with ToolKernel(tools=[get_weather], server=server) as kernel: ...

    ``url``: the server's base URL (a URL ``jupyter server`` printed works too: its
    ``?token=`` is used and a trailing ``/lab`` or ``/tree`` dropped). ``token``:
    the server's token, sent as an ``Authorization`` header (``""``: none).
    ``headers``: more headers for every request and websocket. ``request_timeout``:
    seconds a REST request may take. ``start_timeout``: seconds starting or
    restarting a kernel may take (a gateway on a cluster may pull an image).
    ``reconnect_timeout``: how long a dropped websocket keeps trying to come back
    before the kernel counts as gone. ``validate_cert``: check HTTPS certificates.
    ``token_option``: how the user of the API in use gives the token, as the fix a
    refused token names (``AsyncProgtcClient`` says ``api_key=``, the CLI ``--token``).
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        request_timeout: float = 10.0,
        start_timeout: float = 120.0,
        reconnect_timeout: float = 30.0,
        validate_cert: bool = True,
        token_option: str = TOKEN_OPTION,
    ) -> None:
        self.url, token_in_url = _base_url(url)
        self.token = token if token is not None else token_in_url
        self.headers = dict(headers or {})
        self.request_timeout = request_timeout
        self.start_timeout = start_timeout
        self.reconnect_timeout = reconnect_timeout
        self.validate_cert = validate_cert
        self.token_option = token_option

    @classmethod
    def e2b(
        cls, sandbox: Any, *, port: int = 8888, token: str = "", **options: Any
    ) -> JupyterServer:
        """The Jupyter Server inside an E2B sandbox (sync or async ``Sandbox``).

        It is reached at ``https://<sandbox.get_host(port)>``; a sandbox whose
        public traffic is off gets its ``E2B-Traffic-Access-Token`` header sent
        along. Its kernels need progtc-kernel: build them from ``e2b/`` (see the
        README there). ``options``: as for ``JupyterServer``."""
        headers = dict(options.pop("headers", None) or {})
        traffic_token = getattr(sandbox, "traffic_access_token", None)
        if traffic_token:
            headers["E2B-Traffic-Access-Token"] = str(traffic_token)
        host = str(sandbox.get_host(port))
        scheme = "http" if host.startswith("localhost") else "https"  # E2B's debug mode
        return cls(f"{scheme}://{host}", token, headers=headers, **options)

    def __repr__(self) -> str:
        return f"JupyterServer({self.url!r})"

    # -- kernels --------------------------------------------------------------------

    def kernel(self, kernel_id: str) -> RemoteKernel:
        """A running kernel by id: attached to, left running on close."""
        return RemoteKernel(self, kernel_id)

    def new_kernel(
        self, kernel_name: str | None = None, *, env: Mapping[str, str] | None = None
    ) -> RemoteKernel:
        """A kernel to start on the server (its default kernelspec, or
        ``kernel_name``), owned: shut down on close."""
        return RemoteKernel(self, kernel_name=kernel_name, env=env)

    async def kernels(self) -> list[dict[str, Any]]:
        """The kernels running on the server (``GET /api/kernels``)."""
        try:
            return list(await self.request("GET", "api/kernels"))
        except ServerError as exc:
            if exc.status != 403:
                raise
            raise ServerError(
                f"{self.url} refused to list its kernels (HTTP 403): the token is wrong, or "
                "the server does not list kernels (a Kernel Gateway needs "
                "--KernelGatewayApp.list_kernels=True)",
                403,
            ) from None

    async def kernelspecs(self) -> dict[str, Any]:
        """The server's kernelspecs (``GET /api/kernelspecs``)."""
        return dict(await self.request("GET", "api/kernelspecs"))

    # -- REST -----------------------------------------------------------------------

    async def request(
        self, method: str, path: str, body: Any = None, *, timeout: float | None = None
    ) -> Any:
        """Call the REST API; returns the decoded JSON answer (None when empty).

        Raises ``ServerError`` naming the fix: a refused token, a server that does
        not answer, a path that does not exist, or what the server said."""
        from tornado.httpclient import HTTPClientError, HTTPRequest

        timeout = timeout or self.request_timeout
        payload = json.dumps(body) if body is not None else ("" if method == "POST" else None)
        request = HTTPRequest(
            self.url + path,
            method=method,
            body=payload,
            headers=self._headers(),
            connect_timeout=min(timeout, self.request_timeout),
            request_timeout=timeout,
            validate_cert=self.validate_cert,
        )
        try:
            response = await _http_client().fetch(request)
        except HTTPClientError as exc:
            if exc.code == 599:  # no HTTP answer: timeout, connection closed
                raise self._unreachable(exc, timeout) from None
            raise self._refused(method, path, exc.code, exc.response) from None
        except OSError as exc:
            raise self._unreachable(exc, timeout) from None
        return json.loads(response.body) if response.body else None

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", **self.headers}
        if self.token:
            headers["Authorization"] = f"token {self.token}"
        return headers

    def _unreachable(self, exc: BaseException, timeout: float) -> ServerError:
        if "timeout" in str(exc).lower():
            return ServerError(
                f"{self.url} did not answer within {timeout:g} s: is the server "
                "running and reachable from here?"
            )
        return ServerError(
            f"nothing answers at {self.url} ({exc}): is the server running, and "
            "is the URL right (scheme, host, port, base path)?"
        )

    def _refused(self, method: str, path: str, status: int, response: Any) -> ServerError:
        said = _server_message(response)
        if status == 403 and said not in ("", "Forbidden"):  # refused for a reason it gives
            return ServerError(f"{self.url} refused {method} {path} (HTTP 403): {said}", status)
        if status in (401, 403):
            listed = (
                "; `jupyter server list` shows a local server's"
                if self.token_option == TOKEN_OPTION
                else ""
            )
            how = (
                f"pass the server's token: {self.token_option}{listed}"
                if self.token
                else f"this server wants a token: {self.token_option} (a server without one "
                "must run with --ServerApp.disable_check_xsrf=True, as E2B's does)"
            )
            return ServerError(f"{self.url} refused the token (HTTP {status}): {how}", status)
        if status == 404 and not path.startswith("api/kernels/"):
            return ServerError(
                f"{self.url}{path} does not exist (HTTP 404): is this a Jupyter "
                "Server's base URL (with its base path, if it has one)?",
                status,
            )
        return ServerError(
            f"{method} {self.url}{path} failed (HTTP {status})" + (f": {said}" if said else ""),
            status,
        )

    # -- websockets -----------------------------------------------------------------

    async def connect_websocket(
        self, kernel_id: str, session_id: str, on_frame: Callable[[str | bytes | None], None]
    ) -> Any:
        """Open the kernel's websocket for this session; raises ``ServerError``.

        ``on_frame`` gets every frame as it is read (None when the connection closes):
        a callback, not ``read_message``, saves each message a few loop turns."""
        from tornado.httpclient import HTTPClientError, HTTPRequest
        from tornado.websocket import websocket_connect

        scheme, rest = self.url.split("://", 1)
        url = (
            f"{'wss' if scheme == 'https' else 'ws'}://{rest}api/kernels/"
            f"{quote(kernel_id, safe='')}/channels?session_id={quote(session_id)}"
        )
        request = HTTPRequest(
            url,
            headers=self._headers(),
            validate_cert=self.validate_cert,
            connect_timeout=self.request_timeout,
            request_timeout=self.request_timeout,
        )
        try:
            return await websocket_connect(
                request,
                on_message_callback=on_frame,
                subprotocols=[V1_PROTOCOL],
                max_message_size=MAX_MESSAGE_SIZE,
                ping_interval=PING_INTERVAL,
                ping_timeout=PING_TIMEOUT,
            )
        except HTTPClientError as exc:
            if exc.code == 404:
                raise ServerError(no_kernel(self, kernel_id), 404) from None
            if exc.code == 599:
                raise self._unreachable(exc, self.request_timeout) from None
            raise self._refused(
                "GET", f"api/kernels/{kernel_id}/channels", exc.code, exc.response
            ) from None
        except OSError as exc:
            raise self._unreachable(exc, self.request_timeout) from None


class RemoteKernel:
    """A kernel on a ``JupyterServer``, driven through its REST API.

    Give ``kernel_id`` to attach to a running kernel: it is never restarted behind
    your back and keeps running on close. Without it, a kernel is started on the
    server (``kernel_name``: its kernelspec, default the server's; ``env``: extra
    environment variables, for servers that pass them on) and owned: restarted when
    it dies, shut down on close."""

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
                raise ServerError(no_kernel(self.server, str(self.kernel_id)), 404) from None
            raise

    def connect(self) -> WebsocketTransport:
        if self.kernel_id is None:
            raise RuntimeError("the kernel is not started yet: await start() first")
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
        reports the kernel restarting (its process died) or dead, or the connection
        cannot come back (the kernel was shut down, the server is out of reach)."""
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

    async def reconnect(self, transport: WebsocketTransport) -> bool:
        """Use the server again after ``transport`` gave the connection up for lost.

        True: the kernel survived, and is connected to again (its state kept). False: it
        is gone (the server restarted, say), and a new kernel of ours was started in its
        place. Raises ``ServerError`` while the server still cannot be reached (a later
        call tries again), ``KernelDiedError`` when a kernel attached to is gone."""
        from ..host.errors import KernelDiedError

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


class WebsocketTransport:
    """One connection to a kernel's websocket, with a session id of its own."""

    def __init__(
        self,
        server: JupyterServer,
        kernel_id: str,
        *,
        on_gone: Callable[[str, bool], None] | None = None,
    ) -> None:
        """``on_gone(reason, server_restarts)``: called when the server reports the
        kernel restarting (``server_restarts``: True) or dead, or the connection is
        lost for good."""
        from jupyter_client.session import Session

        self.server = server
        self.kernel_id = kernel_id
        # The server signs messages for the kernel: this key signs nothing, it only
        # keeps Session from warning that messages go unsigned.
        self.session = Session(key=uuid.uuid4().hex.encode())
        self.framing: str | None = None  # "v1" or "legacy", once connected
        self.bad_messages = BadMessages(log, "host")
        self.reconnects = 0
        self._on_gone = on_gone
        self._on_message: MessageCallback | None = None
        self._connection: Any = None
        self._generation = 0  # which connection is the current one
        self._early: list[str | bytes] | None = None  # read before the framing was known
        self._backlog: list[tuple[bytes, bool]] = []  # written while disconnected
        self._reconnecting: asyncio.Task[None] | None = None
        self._reconnect_listeners: list[Callable[[], None]] = []
        self._closing = False
        self.gave_up = False  # the connection was lost for longer than reconnect_timeout

    @property
    def session_id(self) -> str:
        return str(self.session.session)

    def add_reconnect_listener(self, listener: Callable[[], None]) -> None:
        self._reconnect_listeners.append(listener)

    async def start(self, on_message: MessageCallback) -> None:
        self._on_message = on_message
        await self._connect()

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
        pack = self.session.pack
        parts = [
            pack(msg["header"]),
            pack(msg["parent_header"]),
            pack(msg["metadata"]),
            pack(msg["content"]),
        ]
        if self.framing == "legacy":
            frame, binary = _legacy_frame(channel, parts, buffers or [])
        else:
            frame, binary = _v1_frame(channel, [*parts, *(buffers or ())]), True
        self._write(frame, binary)
        return str(msg["header"]["msg_id"])

    def _write(self, frame: bytes, binary: bool) -> None:
        from tornado.websocket import WebSocketClosedError

        if self._connection is None:
            self._backlog.append((frame, binary))  # sent when the connection is back
            return
        try:
            written = self._connection.write_message(frame, binary=binary)
        except WebSocketClosedError:
            self._backlog.append((frame, binary))
            return
        # A write that fails later is recovered by `resume` (see protocol.py). One still
        # pending when the loop ends is cancelled: nothing to report then either.
        written.add_done_callback(_ignore_outcome)

    async def reconnect(self, *, tell_listeners: bool = True) -> None:
        """Connect again after having given up (the server is back): with the same
        session id, so that the server replays what it kept for it."""
        self._closing, self.gave_up = False, False
        await self._connect()
        self.reconnects += 1
        if tell_listeners:
            for listener in self._reconnect_listeners:
                listener()

    async def close(self) -> None:
        self._closing = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnecting
            self._reconnecting = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # -- connection ---------------------------------------------------------------

    async def _connect(self) -> None:
        self._generation += 1
        generation = self._generation
        # Frames may be read before the connection is handed to us (a server replays
        # what it buffered at once): they wait here until the framing is known.
        self._early = []
        try:
            connection = await self.server.connect_websocket(
                self.kernel_id,
                self.session_id,
                on_frame=lambda frame: self._on_frame(frame, generation),
            )
        except BaseException:
            self._early = None
            raise
        legacy = connection.selected_subprotocol != V1_PROTOCOL
        if self.framing is not None and (self.framing == "legacy") != legacy:
            self._early = None
            connection.close()  # frames in the backlog were built for the other framing
            raise ServerError("the server changed its websocket protocol on reconnect")
        self.framing = "legacy" if legacy else "v1"
        self._connection = connection
        early, self._early = self._early, None
        for frame in early:
            self._dispatch(frame)
        backlog, self._backlog = self._backlog, []
        for frame, binary in backlog:
            self._write(frame, binary)

    def _on_frame(self, frame: str | bytes | None, generation: int) -> None:
        if frame is None:  # this connection closed
            if generation == self._generation and not self._closing:
                self._connection = None
                self._reconnecting = asyncio.ensure_future(self._come_back())
        elif self._early is not None:
            self._early.append(frame)
        else:
            self._dispatch(frame)

    def _dispatch(self, frame: str | bytes) -> None:
        try:
            channel, msg = _decode(frame, legacy=self.framing == "legacy")
        except Exception as exc:
            self.bad_messages.report("unreadable websocket message", exc)
            return
        msg_type, content = msg["header"].get("msg_type"), msg["content"]
        state = content.get("execution_state")
        if channel == "iopub" and state in _DEATH_STATES and msg_type == "status":
            self._gone(
                f"was reported {state} by the server (the kernel process died)",
                server_restarts=state == "restarting",
            )
        elif channel == "iopub" and msg_type == "shutdown_reply" and not content.get("restart"):
            # Its last words, to every client: the server closes our connection only
            # seconds later.
            self._gone("was shut down", server_restarts=False)
        try:
            assert self._on_message is not None
            self._on_message(channel, msg)
        except Exception as exc:
            self.bad_messages.report(f"unhandled {channel} message", repr(exc))

    async def _come_back(self) -> None:
        if await self._reconnect():
            for listener in self._reconnect_listeners:
                listener()

    async def _reconnect(self) -> bool:
        """Connect again with the same session id until ``reconnect_timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.server.reconnect_timeout
        delay = 0.05
        while not self._closing:
            try:
                await self._connect()
            except Exception as exc:  # every failure to connect is retried, until the deadline
                if isinstance(exc, ServerError) and exc.status is not None:
                    self.gave_up = True
                    self._gone(f"cannot be reached any more ({exc})", server_restarts=False)
                    return False  # no such kernel any more, a token no longer valid
                if loop.time() >= deadline:
                    self.gave_up = True
                    self._gone(f"cannot be reached any more: {exc}", server_restarts=False)
                    return False
                await asyncio.sleep(delay)  # pacing the retries, not waiting for an event
                delay = min(delay * 2, 1.0)
            else:
                self.reconnects += 1
                log.info("progtc_kernel: reconnected to kernel %s", self.kernel_id)
                return True
        return False

    def _gone(self, reason: str, *, server_restarts: bool) -> None:
        if self._on_gone is not None:
            self._on_gone(reason, server_restarts)


# One HTTP client per event loop. Tornado's shared one runs at most 10 requests at
# once and fails the rest after their timeout: twenty executions starting together
# would time out waiting in its queue.
_HTTP_CLIENTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
    weakref.WeakKeyDictionary()
)
MAX_CONCURRENT_REQUESTS = 256


def _http_client() -> Any:
    from tornado.httpclient import AsyncHTTPClient

    loop = asyncio.get_running_loop()
    client = _HTTP_CLIENTS.get(loop)
    if client is None:
        client = AsyncHTTPClient(force_instance=True, max_clients=MAX_CONCURRENT_REQUESTS)
        _HTTP_CLIENTS[loop] = client
    return client


_RATE_LIMIT_NOTICES = ("IOPub message rate exceeded.", "IOPub data rate exceeded.")
_WINDOW = re.compile(r"rate_limit_window=([0-9.]+)")


def rate_limit_window(channel: str, msg: dict[str, Any]) -> float | None:
    """If ``msg`` is a Jupyter Server's notice that it drops iopub messages past its
    rate limits (tool calls among them, until its window has passed), that window in
    seconds; else None. The server sends it on stderr, once per episode."""
    content = msg.get("content") or {}
    if (
        channel != "iopub"
        or msg.get("header", {}).get("msg_type") != "stream"
        or content.get("name") != "stderr"
    ):
        return None
    text = str(content.get("text", ""))
    if not text.startswith(_RATE_LIMIT_NOTICES):
        return None
    window = _WINDOW.search(text)
    return float(window.group(1)) if window else 3.0  # Jupyter Server's default


def _ignore_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: asyncio would log it as never retrieved


def no_kernel(server: JupyterServer, kernel_id: str) -> str:
    return (
        f"there is no kernel {kernel_id!r} on {server.url}: give the id of a running "
        "kernel (GET /api/kernels lists them), or leave kernel_id out to start one"
    )


# -- framing ------------------------------------------------------------------------


def _v1_frame(channel: str, parts: list[bytes]) -> bytes:
    """``v1.kernel.websocket.jupyter.org``: u64 count, u64 offsets, channel, parts."""
    name = channel.encode()
    offsets = [8 * (len(parts) + 3), 8 * (len(parts) + 3) + len(name)]
    for part in parts:
        offsets.append(offsets[-1] + len(part))
    return b"".join([struct.pack(f"<{len(offsets) + 1}Q", len(offsets), *offsets), name, *parts])


def _legacy_frame(channel: str, parts: list[bytes], buffers: list[bytes]) -> tuple[bytes, bool]:
    """The legacy framing: JSON with a ``channel`` key; binary (u32 big-endian count
    and offsets, then the JSON and the buffers) when there are buffers."""
    header, parent, metadata, content = parts
    text = b'{"channel":%s,"header":%s,"parent_header":%s,"metadata":%s,"content":%s}' % (
        json.dumps(channel).encode(),
        header,
        parent,
        metadata,
        content,
    )
    if not buffers:
        return text, False
    pieces = [text, *buffers]
    offsets = [4 * (len(pieces) + 1)]
    for piece in pieces[:-1]:
        offsets.append(offsets[-1] + len(piece))
    return b"".join([struct.pack(f"!{len(pieces) + 1}I", len(pieces), *offsets), *pieces]), True


def _decode(frame: str | bytes, legacy: bool) -> tuple[str, dict[str, Any]]:
    if isinstance(frame, str):  # legacy, no buffers
        msg = json.loads(frame)
        msg.setdefault("buffers", [])
        return str(msg.pop("channel")), msg
    view = memoryview(frame)
    if not legacy:
        count = struct.unpack_from("<Q", frame)[0]
        offsets = struct.unpack_from(f"<{count}Q", frame, 8)
        channel = bytes(view[offsets[0] : offsets[1]]).decode()
        parts = [view[offsets[i] : offsets[i + 1]] for i in range(1, count - 1)]
        header, parent, metadata, content = (json.loads(bytes(part)) for part in parts[:4])
        return channel, {
            "header": header,
            "msg_id": header.get("msg_id"),
            "msg_type": header.get("msg_type"),
            "parent_header": parent,
            "metadata": metadata,
            "content": content,
            "buffers": parts[4:],
        }
    count = struct.unpack_from("!I", frame)[0]
    bounds = [*struct.unpack_from(f"!{count}I", frame, 4), len(frame)]
    msg = json.loads(bytes(view[bounds[0] : bounds[1]]))
    msg["buffers"] = [view[bounds[i] : bounds[i + 1]] for i in range(1, count)]
    return str(msg.pop("channel")), msg


def _base_url(url: str) -> tuple[str, str]:
    """The base URL (ending in ``/``) and the token in its query, if any."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"{url!r} is not a server URL: give one like http://127.0.0.1:8888 "
            "(or https://... for a remote server)"
        )
    path = parts.path.rstrip("/")
    for suffix in ("/lab", "/tree"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
    token = parse_qs(parts.query).get("token", [""])[0]
    return urlunsplit((parts.scheme, parts.netloc, path + "/", "", "")), token


def _server_message(response: Any) -> str:
    body = getattr(response, "body", None) or b""
    try:
        decoded = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return "" if text.startswith("<") else text[:300]  # a page for browsers says nothing
    if isinstance(decoded, dict):
        return str(decoded.get("message") or decoded.get("reason") or "")
    return ""
