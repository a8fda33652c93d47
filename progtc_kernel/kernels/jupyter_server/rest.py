"""``JupyterServer``: where a Jupyter Server (or gateway) is and how to authenticate
(a token, extra headers such as E2B's traffic token), and its REST API, with errors
that name the fix; and the HTTP clients its requests go through."""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

from ...exceptions import ServerError
from ...timeouts import (
    DEFAULT_RECONNECT,
    DEFAULT_REMOTE_START,
    DEFAULT_REQUEST,
    USE_DEFAULT,
    YEAR,
    UseDefault,
    seconds,
)
from .lifecycle import RemoteKernel
from .websocket import MAX_MESSAGE_SIZE, PING_INTERVAL, PING_TIMEOUT, V1_PROTOCOL

# How a refused token's fix is named, unless the API in use has its own spelling.
TOKEN_OPTION = "JupyterServer(url, token=...)"


class JupyterServer:
    """A Jupyter Server, Kernel Gateway or Enterprise Gateway, reached over HTTP(S).

    Example:
        ```python
        server = JupyterServer("http://127.0.0.1:8888", token="T")
        async with ToolKernel(tools=[get_weather], kernel=RemoteKernel(server)) as kernel: ...
        ```

    Args:
        url: The server's base URL. A URL ``jupyter server`` printed works too: its
            ``?token=`` is used and a trailing ``/lab`` or ``/tree`` dropped.
        token: The server's token, sent as an ``Authorization`` header (``""``: none).
        headers: More headers for every request and websocket.
        request_timeout: Seconds one REST request may take (``None``: no limit).
        start_timeout: Seconds starting or restarting a kernel may take (a gateway on a
            cluster may pull an image; ``None``: no limit).
        reconnect_timeout: Seconds a dropped websocket keeps trying to come back before
            the kernel counts as gone (``None``: no limit).
        validate_cert: Check HTTPS certificates.
        token_option: How the user of the API in use gives the token, for the fix a
            refused token names (``AsyncProgtcClient`` says ``api_key=``, the CLI
            ``--token``).
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        request_timeout: float | None = DEFAULT_REQUEST,
        start_timeout: float | None = DEFAULT_REMOTE_START,
        reconnect_timeout: float | None = DEFAULT_RECONNECT,
        validate_cert: bool = True,
        token_option: str = TOKEN_OPTION,
    ) -> None:
        self.url, token_in_url = _base_url(url)
        self.token = token if token is not None else token_in_url
        self.headers = dict(headers or {})
        self.request_timeout = seconds("request_timeout", request_timeout)
        self.start_timeout = seconds("start_timeout", start_timeout)
        self.reconnect_timeout = seconds("reconnect_timeout", reconnect_timeout)
        self.validate_cert = validate_cert
        self.token_option = token_option

    @classmethod
    def e2b(
        cls, sandbox: Any, *, port: int = 8888, token: str = "", **options: Any
    ) -> JupyterServer:
        """The Jupyter Server inside an E2B sandbox (sync or async ``Sandbox``).

        It is reached at ``https://<sandbox.get_host(port)>``; a sandbox whose public
        traffic is off gets its ``E2B-Traffic-Access-Token`` header sent along. E2B's stock
        code-interpreter template works as it is; the template in ``e2b/`` of the checkout
        loads the extension at kernel start (see the README there).

        Args:
            sandbox: The E2B sandbox.
            port: The port its Jupyter Server listens on.
            token: The server's token (the stock template's has none).
            **options: As for ``JupyterServer`` (``headers``, ``start_timeout``...).

        Returns:
            The server.
        """
        from .e2b import sandbox_address

        url, headers = sandbox_address(sandbox, port, options.pop("headers", None))
        return cls(url, token, headers=headers, **options)

    def __repr__(self) -> str:
        return f"JupyterServer({self.url!r})"

    # -- kernels --------------------------------------------------------------------

    def kernel(self, kernel_id: str) -> RemoteKernel:
        """A running kernel by id: attached to, left running on close.

        Args:
            kernel_id: The kernel's id (``GET /api/kernels`` lists them).

        Returns:
            ``RemoteKernel(self, kernel_id)``.
        """
        return RemoteKernel(self, kernel_id)

    def new_kernel(
        self, kernel_name: str | None = None, *, env: Mapping[str, str] | None = None
    ) -> RemoteKernel:
        """A kernel to start on the server, owned: shut down on close.

        Args:
            kernel_name: Its kernelspec; default: the server's.
            env: Its environment variables, on servers that pass them on.

        Returns:
            ``RemoteKernel(self, kernel_name=kernel_name, env=env)``.
        """
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
                "--JupyterWebsocketPersonality.list_kernels=True)",
                403,
            ) from None

    async def kernelspecs(self) -> dict[str, Any]:
        """The server's kernelspecs (``GET /api/kernelspecs``)."""
        return dict(await self.request("GET", "api/kernelspecs"))

    # -- REST -----------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        timeout: float | UseDefault | None = USE_DEFAULT,
    ) -> Any:
        """Call the server's REST API.

        Args:
            method: The HTTP method: ``"GET"``, ``"POST"``, ``"DELETE"``...
            path: The path under the base URL, as ``"api/kernels"``.
            body: What to send as JSON, if anything.
            timeout: Seconds it may take (``None``: no limit; default: ``request_timeout``).

        Returns:
            The decoded JSON answer; ``None`` when it is empty.

        Raises:
            ServerError: A refused token, a server that does not answer, a path that does
                not exist, or what the server said; the message names the fix.
        """
        from tornado.httpclient import HTTPClientError, HTTPRequest

        if isinstance(timeout, UseDefault):
            timeout = self.request_timeout
        payload = json.dumps(body) if body is not None else ("" if method == "POST" else None)
        request = HTTPRequest(
            self.url + path,
            method=method,
            body=payload,
            headers=self._headers(),
            connect_timeout=_tornado_seconds(_shorter(timeout, self.request_timeout)),
            request_timeout=_tornado_seconds(timeout),
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

    def _unreachable(self, exc: BaseException, timeout: float | None) -> ServerError:
        if "timeout" in str(exc).lower():
            return ServerError(
                f"{self.url} did not answer within {timeout or 0:g} s: is the server "
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

    def no_kernel(self, kernel_id: str) -> str:
        """Why there is no such kernel, and what to give instead.

        Args:
            kernel_id: the id asked for.
        """
        return (
            f"there is no kernel {kernel_id!r} on {self.url}: give the id of a running "
            "kernel (GET /api/kernels lists them), or leave kernel_id out to start one"
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
            connect_timeout=_tornado_seconds(self.request_timeout),
            request_timeout=_tornado_seconds(self.request_timeout),
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
                raise ServerError(self.no_kernel(kernel_id), 404) from None
            if exc.code == 599:
                raise self._unreachable(exc, self.request_timeout) from None
            raise self._refused(
                "GET", f"api/kernels/{kernel_id}/channels", exc.code, exc.response
            ) from None
        except OSError as exc:
            raise self._unreachable(exc, self.request_timeout) from None


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
        # (Jupyter Server's APIs say "message"; progtc's API on serve says "detail")
        return str(decoded.get("message") or decoded.get("reason") or decoded.get("detail") or "")
    return ""


def _shorter(a: float | None, b: float | None) -> float | None:
    """The shorter of two timeouts (``None``: no limit)."""
    return b if a is None else a if b is None else min(a, b)


def _tornado_seconds(timeout: float | None) -> float:
    """A timeout as tornado takes it: it has no "no limit" (``None`` is its default of
    20 s), so a year stands for it."""
    return YEAR if timeout is None else timeout
