"""Real Jupyter servers on loopback for the tests, and a proxy to put in front of them.

* ``JupyterProcess``: a Jupyter Server, Kernel Gateway or Enterprise Gateway run as
  a child process, up once it prints the URL it listens on (read from its log, not
  polled), stopped with SIGTERM so that it shuts its kernels down.
* ``kernelspec``: a kernelspec for a given Python, optionally with an IPython
  profile that loads the extension (as E2B's template and kernel images do).
* ``Proxy``: a TCP (or TLS) proxy that can insist on a header and can cut every
  connection at once: a proxy's idle timeout or a network blip, on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from progtc_kernel import JupyterServer
from progtc_kernel.kernels.jupyter_server import WebsocketTransport

TOKEN = "progtc-test-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kernelspec(share: Path, name: str, python: str, *, profile_extension: bool = False) -> None:
    """Write kernelspec ``name`` under ``share/kernels`` for ``python``; with
    ``profile_extension`` its kernels load progtc_kernel from their IPython profile."""
    folder = share / "kernels" / name
    folder.mkdir(parents=True, exist_ok=True)
    spec: dict[str, Any] = {
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python ({name})",
        "language": "python",
        "metadata": {"debugger": False},
    }
    if profile_extension:
        ipython_dir = share / f"ipython-{name}"
        profile = ipython_dir / "profile_default"
        profile.mkdir(parents=True, exist_ok=True)
        (profile / "ipython_kernel_config.py").write_text(
            'c.InteractiveShellApp.extensions = ["progtc_kernel"]\n'
        )
        spec["env"] = {"IPYTHONDIR": str(ipython_dir)}
    (folder / "kernel.json").write_text(json.dumps(spec))


class JupyterProcess:
    """A server process, its URL, and the ``JupyterServer`` that reaches it."""

    def __init__(
        self,
        argv: Sequence[str],
        port: int,
        home: Path,
        *,
        token: str = TOKEN,
        env: dict[str, str] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.port = port
        self.home = home
        self.token = token
        self.url = f"http://127.0.0.1:{port}"
        self.log = home / f"server-{port}.log"
        self.env = {
            **os.environ,
            "JUPYTER_PATH": str(home / "share"),
            "JUPYTER_CONFIG_DIR": str(home / "config"),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
            "JUPYTER_DATA_DIR": str(home / "data"),
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def server(self, **options: Any) -> JupyterServer:
        # A loaded machine (2 busy cores, a server pushing megabytes of output) can take
        # longer than the 10 s a request is given by default: give the tests' requests
        # time enough that only a server that is gone fails them.
        options.setdefault("request_timeout", 120)
        return JupyterServer(self.url, token=self.token, **options)

    async def start(self, timeout: float = 120) -> JupyterProcess:
        """Start, and return once the server says where it listens."""
        loop = asyncio.get_running_loop()
        listening: asyncio.Future[None] = loop.create_future()
        self.process = subprocess.Popen(
            self.argv, env=self.env, cwd=self.home, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        # (stderr joins stdout: some servers print their URL on one, some on the other)
        threading.Thread(target=self._watch, args=(loop, listening), daemon=True).start()
        try:
            await asyncio.wait_for(listening, timeout)
            await asyncio.wait_for(self._until_listening(), timeout)
        except BaseException:
            self.stop()
            raise
        return self

    async def _until_listening(self) -> None:
        """Jupyter Server logs its URL one loop turn before it binds the port: connect
        until the port takes the connection (or the process is gone)."""
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except ConnectionRefusedError:
                if self.process is None or self.process.poll() is not None:
                    raise RuntimeError(f"the server exited: {self.log_text()}") from None
                await asyncio.sleep(0.02)  # retry pacing; the connection is the event
                continue
            writer.close()
            return

    def _watch(self, loop: asyncio.AbstractEventLoop, listening: asyncio.Future[None]) -> None:
        assert self.process is not None and self.process.stdout is not None
        marker = f"127.0.0.1:{self.port}"
        with self.log.open("wb") as log:
            for line in iter(self.process.stdout.readline, b""):
                log.write(line)
                log.flush()
                if marker in line.decode("utf-8", "replace"):
                    loop.call_soon_threadsafe(_settle, listening, None)
        loop.call_soon_threadsafe(
            _settle,
            listening,
            RuntimeError(f"{self.argv[:4]} exited before listening; its log: {self.log_text()}"),
        )

    def log_text(self) -> str:
        return self.log.read_text("utf-8", "replace")[-3000:] if self.log.exists() else ""

    def stop(self) -> None:
        """SIGTERM: the server shuts its kernels down and exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """SIGKILL: the server vanishes without a word (its kernels follow it, since
        ipykernel exits when its parent process dies)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()


def _settle(future: asyncio.Future[None], outcome: BaseException | None) -> None:
    if future.done():
        return
    if outcome is None:
        future.set_result(None)
    else:
        future.set_exception(outcome)


def jupyter_server(home: Path, *args: str, token: str = TOKEN) -> JupyterProcess:
    port = free_port()
    (home / "root").mkdir(parents=True, exist_ok=True)
    return JupyterProcess(
        [
            sys.executable,
            "-m",
            "jupyter_server",
            "--ip=127.0.0.1",
            f"--port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            "--allow-root",
            f"--ServerApp.root_dir={home / 'root'}",
            "--no-browser",
            *args,
        ],
        port,
        home,
        token=token,
    )


def kernel_gateway(home: Path, *args: str, token: str = TOKEN) -> JupyterProcess:
    port = free_port()
    return JupyterProcess(
        [
            sys.executable,
            "-m",
            "kernel_gateway",
            "--KernelGatewayApp.ip=127.0.0.1",
            f"--KernelGatewayApp.port={port}",
            "--KernelGatewayApp.port_retries=0",
            f"--KernelGatewayApp.auth_token={token}",
            *args,
        ],
        port,
        home,
        token=token,
    )


def enterprise_gateway(home: Path, python: str, *args: str, token: str = TOKEN) -> JupyterProcess:
    """Enterprise Gateway, from its own environment (``python``'s): it pins
    jupyter_server<2 and jupyter_client<7. Kernels run as local processes here, as
    they would in a cluster's pods."""
    port = free_port()
    return JupyterProcess(
        [
            str(Path(python).parent / "jupyter-enterprisegateway"),
            "--EnterpriseGatewayApp.ip=127.0.0.1",
            f"--EnterpriseGatewayApp.port={port}",
            "--EnterpriseGatewayApp.port_retries=0",
            f"--EnterpriseGatewayApp.auth_token={token}",
            # It refuses kernels for root unless told whom to refuse; the tests run as root
            # (a real client names its user in the kernel's env: KERNEL_USERNAME).
            "--EnterpriseGatewayApp.unauthorized_users=nobody",
            *args,
        ],
        port,
        home,
        token=token,
    )


class Frontend:
    """Someone else's client of a kernel on a server (a JupyterLab tab, an E2B code
    context): it runs cells over a websocket of its own and collects what they print."""

    def __init__(self, server: JupyterServer, kernel_id: str) -> None:
        self.transport = WebsocketTransport(server, kernel_id)
        self._runs: dict[str, tuple[list[str], asyncio.Event]] = {}

    async def __aenter__(self) -> Frontend:
        await self.transport.start(self._on_message)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.transport.close()

    async def run(self, code: str) -> str:
        """Run a cell; returns its printed output once the kernel is idle again."""
        printed: list[str] = []
        idle = asyncio.Event()
        msg_id = self.transport.send(
            "shell",
            "execute_request",
            {
                "code": code,
                "silent": False,
                "store_history": True,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
        )
        self._runs[msg_id] = (printed, idle)
        await idle.wait()
        del self._runs[msg_id]
        return "".join(printed)

    def _on_message(self, channel: str, msg: dict[str, Any]) -> None:
        run = self._runs.get(msg["parent_header"].get("msg_id", ""))
        if run is None:
            return
        printed, idle = run
        if msg["msg_type"] == "stream":
            printed.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            printed.append(f"{msg['content']['ename']}: {msg['content']['evalue']}\n")
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            idle.set()


class Proxy:
    """Forwards TCP connections to ``upstream``; can require a header, speak TLS,
    and cut every connection at once."""

    def __init__(
        self,
        upstream_port: int,
        *,
        require_header: tuple[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.upstream_port = upstream_port
        self.require_header = require_header
        self.tls = tls
        self.port = 0
        self.requests_seen = 0
        self.refused = 0
        self.down = False  # drop every new connection at once: the server is out of reach
        self._server: asyncio.AbstractServer | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        for handler in list(self._handlers):
            handler.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    def cut(self) -> int:
        """Close every open connection, both ways; returns how many there were."""
        links = list(self._links)
        for writer in links:
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._links.clear()
        return len(links) // 2

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            await self._forward(reader, writer)
        except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
            writer.transport.abort()  # the proxy is closing, or the client left early
        finally:
            self._handlers.discard(handler)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests_seen += 1
        if self.require_header and not _has_header(head, *self.require_header):
            self.refused += 1
            writer.write(
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            await writer.drain()
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._links.update((writer, up_writer))
        up_writer.write(head)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        self._links.difference_update((writer, up_writer))


def _has_header(head: bytes, name: str, value: str) -> bool:
    wanted = f"{name.lower()}: {value}"
    return any(
        line.strip().lower() == wanted.lower() for line in head.decode("latin-1").split("\r\n")
    )


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, OSError):
        pass
    finally:
        writer.transport.abort()


def jupyter_lab(home: Path, *args: str, token: str = TOKEN) -> JupyterProcess:
    """JupyterLab on loopback, serving notebooks from ``home/root``: no browser of its
    own, no update checks or news (the tests are offline)."""
    port = free_port()
    (home / "root").mkdir(parents=True, exist_ok=True)
    return JupyterProcess(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--ip=127.0.0.1",
            f"--port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            "--allow-root",
            f"--ServerApp.root_dir={home / 'root'}",
            "--no-browser",
            "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
            "--LabApp.news_url=None",
            *args,
        ],
        port,
        home,
        token=token,
    )


async def pool_status(process: JupyterProcess) -> dict[str, Any]:
    """``progtc-kernel serve``'s status: its version, its pool, its ceilings."""
    answer: dict[str, Any] = await process.server().request("GET", "progtc-kernel/api/status")
    return answer


async def until(
    condition: Callable[[], Awaitable[bool]], what: str, deadline: float = 60.0
) -> None:
    """Wait for a condition of a server's state (it has no event to wait on)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not await condition():
        if loop.time() > end:
            raise AssertionError(f"still not {what} after {deadline:g} s")
        await asyncio.sleep(0.05)  # polling pace, not synchronization
