"""``progtc-kernel serve`` under attack: who may run code, and what no client may do.

Each test injects the fault for real against a server started here on loopback:
a request without the key, from another site, with a forged ``Host``, of the wrong
type; a Jupyter Server with a password and the extension loaded; websocket frames
that lie about their size; too many tool names; output nobody reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClosedError, websocket_connect

from progtc_kernel import AsyncProgtcClient
from progtc_kernel.server.progtc_api import MAX_BODY_BYTES, MAX_TOOL_NAMES
from progtc_kernel.server.websocket import MAX_MESSAGE_BYTES

from .servers import TOKEN, JupyterProcess, free_port, jupyter_server, pool_status, until

pytestmark = pytest.mark.timeout(300)

MAX_OUTPUT = 6_000_000  # more than a loopback socket buffers (tcp_wmem's 4 MB at most)


def progtc_serve(home: Path, *args: str, env: dict[str, str] | None = None) -> JupyterProcess:
    port = free_port()
    return JupyterProcess(
        [sys.executable, "-m", "progtc_kernel.cli", "serve", "--port", str(port), *args],
        port,
        home,
        env=env,
    )


@pytest.fixture(scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[JupyterProcess]:
    """The key from the environment, as the help says to give it."""
    process = progtc_serve(
        tmp_path_factory.mktemp("serve-security"),
        "--pool-size",
        "1",
        "--max-output",
        str(MAX_OUTPUT),
        "--send-timeout",
        "15",
        env={"PROGTC_API_KEY": TOKEN},
    )
    await process.start()
    yield process
    process.stop()


@pytest.fixture
async def http(served: JupyterProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=served.url, headers={"X-Progtc-API-Key": TOKEN}, timeout=120
    ) as client:
        yield client


async def events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            yield json.loads(line[len("data: ") :])


def leaves_a_mark(path: Path) -> dict[str, Any]:
    """A request whose code, if it ever runs, creates ``path``."""
    return {"tool_names": [], "code": f"open({str(path)!r}, 'w').close()\nprint('ran')"}


# -- who may run code ----------------------------------------------------------------


async def test_the_key_comes_from_the_environment_and_stays_out_of_ps(
    served: JupyterProcess, http: httpx.AsyncClient
) -> None:
    assert served.process is not None
    command_line = Path(f"/proc/{served.process.pid}/cmdline").read_bytes()
    assert TOKEN.encode() not in command_line
    ran = await http.post("/execute-code", json={"tool_names": [], "code": "print('ok')"})
    assert '"stdout":"ok\\n"' in ran.text
    help_text = subprocess.run(
        [sys.executable, "-m", "progtc_kernel.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "PROGTC_API_KEY" in help_text and "shows in ps" in help_text


async def test_without_a_key_serve_makes_one_prints_it_and_asks_for_it(tmp_path: Path) -> None:
    process = await progtc_serve(tmp_path, "--pool-size", "1", env={"PROGTC_API_KEY": ""}).start()
    try:
        printed = re.search(r"API key \(generated[^)]*\): (\S+)", process.log_text())
        assert printed, process.log_text()
        mark = tmp_path / "ran"
        async with httpx.AsyncClient(base_url=process.url, timeout=120) as anyone:
            refused = await anyone.post("/execute-code", json=leaves_a_mark(mark))
        assert refused.status_code == 401 and not mark.exists()
        async with httpx.AsyncClient(base_url=process.url, timeout=120) as holder:
            ran = await holder.post(
                "/execute-code",
                json=leaves_a_mark(mark),
                headers={"X-Progtc-API-Key": printed.group(1)},
            )
        assert '"stdout":"ran\\n"' in ran.text and mark.exists()
    finally:
        process.stop()


async def test_a_request_from_a_web_page_never_runs_code(
    served: JupyterProcess, tmp_path: Path
) -> None:
    """What a page on another site can send without a preflight (text/plain, no
    header of ours); the preflight for one with the key header, which the server does
    not allow; a forged Host (DNS rebinding); a body that is not JSON."""
    mark = tmp_path / "ran"
    body = json.dumps(leaves_a_mark(mark))
    key = {"X-Progtc-API-Key": TOKEN}
    evil = {"Origin": "http://evil.example"}
    async with httpx.AsyncClient(base_url=served.url, timeout=120) as browser:
        cross_origin = await browser.post(
            "/execute-code", content=body, headers={**evil, "Content-Type": "text/plain"}
        )
        assert cross_origin.status_code == 404  # as Jupyter's own APIs answer
        preflight = await browser.options(
            "/execute-code",
            headers={
                **evil,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-progtc-api-key,content-type",
            },
        )
        assert "Access-Control-Allow-Origin" not in preflight.headers
        rebound = {"Host": "attacker.example", "Content-Type": "application/json"}
        forged = await browser.post("/execute-code", content=body, headers={**rebound, **key})
        jupyters_own = await browser.get("/api/kernels", headers={**rebound, **key})
        assert forged.status_code == jupyters_own.status_code == 403
        for untyped in ({"Content-Type": "text/plain"}, {**evil, "Content-Type": "text/plain"}):
            plain = await browser.post("/execute-code", content=body, headers={**key, **untyped})
            assert plain.status_code == 415
            assert "Content-Type: application/json" in plain.json()["detail"]
        assert not mark.exists()
        same_site = await browser.post(
            "/execute-code",
            content=body,
            headers={**key, "Content-Type": "application/json", "Origin": served.url},
        )
        assert same_site.status_code == 200 and mark.exists()


async def test_a_password_protected_jupyter_server_keeps_its_protection(tmp_path: Path) -> None:
    """The extension loaded into someone's Jupyter Server, which uses a password (and
    so has no token): our handlers let in whom the server lets in, nobody else."""
    from jupyter_server.auth.security import passwd

    hashed: str = passwd("s3cret")  # type: ignore[no-untyped-call]
    process = await jupyter_server(
        tmp_path,
        f"--PasswordIdentityProvider.hashed_password={hashed}",
        "--ServerApp.jpserver_extensions={'progtc_kernel.server': True}",
        "--ProgtcKernelApp.pool_size=1",
        token="",
    ).start()
    mark = tmp_path / "ran"
    try:
        async with httpx.AsyncClient(base_url=process.url, timeout=120) as anyone:
            assert (await anyone.get("/api/kernels")).status_code == 403  # Jupyter's own
            for headers in (
                {},
                {"X-Progtc-API-Key": ""},
                {"Authorization": "Bearer"},
                {"X-Progtc-API-Key": "guess"},
            ):
                refused = await anyone.post(
                    "/execute-code", json=leaves_a_mark(mark), headers=headers
                )
                assert refused.status_code == 401, headers
            assert not mark.exists()
        async with httpx.AsyncClient(base_url=process.url, timeout=120) as person:
            await person.get("/login")  # the login form sets the XSRF cookie
            xsrf = person.cookies["_xsrf"]
            await person.post("/login", data={"password": "s3cret", "_xsrf": xsrf})
            ran = await person.post(
                "/execute-code", json=leaves_a_mark(mark), headers={"X-XSRFToken": xsrf}
            )
        assert '"stdout":"ran\\n"' in ran.text and mark.exists()
    finally:
        process.stop()


# -- what no client may do ------------------------------------------------------------


async def test_a_websocket_frame_that_lies_about_its_size_is_refused(
    served: JupyterProcess,
) -> None:
    """16 bytes whose count says 2**63 offsets (v1) or 2**31 - 1 buffers (legacy):
    Jupyter Server's decoders would build lists that long. The socket is closed,
    saying why, and the server goes on. A frame over the size cap is refused too."""
    server = served.server()
    lease = await server.request("POST", "progtc-kernel/api/kernels", {"session": "frames"})
    url = f"ws://127.0.0.1:{served.port}/api/kernels/{lease['id']}/channels"
    v1 = ["v1.kernel.websocket.jupyter.org"]
    frames = [
        (v1, (2**63).to_bytes(8, "little") + bytes(8), 1007, "says it has"),
        (None, struct.pack("!i", 2**31 - 1) + bytes(12), 1007, "says it has"),
        (v1, bytes(MAX_MESSAGE_BYTES + 1), 1009, ""),
    ]
    try:
        for subprotocols, frame, code, reason in frames:
            websocket = await websocket_connect(
                HTTPRequest(url, headers={"Authorization": f"token {TOKEN}"}),
                subprotocols=subprotocols,
            )
            with contextlib.suppress(WebSocketClosedError):  # closed while it is sent
                await websocket.write_message(frame, binary=True)
            while await websocket.read_message() is not None:
                pass  # the kernel's status messages, then the close
            if code == 1009:  # tornado sends 1009 and drops the connection at once
                assert websocket.close_code in (1009, None)
            else:
                assert websocket.close_code == code, websocket.close_reason
                assert reason in (websocket.close_reason or "")
            assert "frames" in (await pool_status(served))["pool"]["sessions"]  # it answers
    finally:
        await server.request("DELETE", "progtc-kernel/api/sessions/frames")
    async with AsyncProgtcClient(base_url=served.url, api_key=TOKEN) as client:
        result = await client.execute_code("print('still serving')")
    assert result.stdout == "still serving\n"


async def test_tool_names_and_bodies_are_bounded_and_python_names_refused(
    http: httpx.AsyncClient,
) -> None:
    too_many = await http.post(
        "/execute-code", json={"code": "", "tool_names": [f"tool_{i}" for i in range(3000)]}
    )
    assert too_many.status_code == 422
    assert f"at most {MAX_TOOL_NAMES}" in too_many.json()["detail"][0]["msg"]
    for dunder in ("__getattr__", "__init__"):
        refused = await http.post("/execute-code", json={"code": "", "tool_names": [dunder]})
        assert refused.status_code == 422 and "belong to Python" in refused.text
    huge = await http.post("/execute-code", json={"code": "#" * MAX_BODY_BYTES, "tool_names": []})
    assert huge.status_code == 413 and f"at most {MAX_BODY_BYTES:,}" in huge.text


async def test_the_server_answers_while_the_most_tools_are_built(http: httpx.AsyncClient) -> None:
    names = [f"tool_{i}" for i in range(MAX_TOOL_NAMES)]
    code = f"from tools import {names[-1]}\nprint(await {names[-1]}())"
    async with http.stream(
        "POST", "/execute-code", json={"tool_names": names, "code": code}
    ) as response:
        ping = asyncio.ensure_future(http.get("/ping"))  # while the tools are built
        stream = events(response)
        call = await anext(stream)
        assert (await ping).status_code == 200
        await http.post(
            "/tool-results",
            json={"execution_id": call["execution_id"], "tool_call_id": call["id"], "result": 7},
        )
        assert await anext(stream) == {"type": "success", "stdout": "7\n", "stderr": ""}


PRINTS_TOO_MUCH = (
    "import sys\nfor _ in range(12):\n    sys.stdout.write('x' * 1_000_000)\n"
    "    sys.stdout.flush()\nprint('never reached')"
)


async def test_an_execution_that_prints_too_much_is_stopped_and_says_so(
    served: JupyterProcess, http: httpx.AsyncClient
) -> None:
    before = (await pool_status(served))["progtc_api"]["output_stopped"]
    async with http.stream(
        "POST", "/execute-code", json={"tool_names": [], "code": PRINTS_TOO_MUCH}
    ) as response:
        final = await anext(events(response))
    assert final["type"] == "runtime_error" and final["stdout"] == "x" * MAX_OUTPUT
    assert "more than 6,000,000 characters" in final["message"]
    assert "--max-output" in final["stderr"]
    assert (await pool_status(served))["progtc_api"]["output_stopped"] == before + 1


async def test_a_client_that_never_reads_is_cut_off(served: JupyterProcess) -> None:
    """It asks for an execution whose final message is larger than the socket
    buffers, and reads nothing: the server cuts it off and lets its kernel go."""
    before = (await pool_status(served))["progtc_api"]["clients_cut_off"]
    body = json.dumps({"tool_names": [], "code": PRINTS_TOO_MUCH}).encode()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", served.port))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(
        b"POST /execute-code HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"X-Progtc-API-Key: %s\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (TOKEN.encode(), len(body), body)
    )
    await writer.drain()

    async def cut_off() -> bool:
        status = await pool_status(served)
        return bool(
            status["progtc_api"]["clients_cut_off"] == before + 1
            and status["progtc_api"]["running"] == 0
            and status["pool"]["leased"] == 0
        )

    await until(cut_off, "the client that reads nothing cut off", deadline=240)
    received = await reader.read()  # what was on its way, then the end: the server closed
    writer.close()
    assert b"200 OK" in received and len(received) < MAX_OUTPUT


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0])
async def test_a_timeout_that_is_no_number_of_seconds_is_refused(
    served: JupyterProcess, bad: float
) -> None:
    """NaN compares false with everything: taken as given, it turned timeouts off."""
    with pytest.raises(ValueError, match=r"request_timeout=.* finite number of seconds"):
        AsyncProgtcClient(base_url=served.url, api_key=TOKEN, request_timeout=bad)
    async with AsyncProgtcClient(base_url=served.url, api_key=TOKEN) as client:
        for call in (
            client.execute_code("print(1)", timeout=bad),
            client.execute_code("print(1)", tool_call_timeout=bad),
            client.wait_for_server(timeout=bad),
            client.ping(timeout=bad),
        ):
            with pytest.raises(ValueError, match=r"timeout=.* finite number of seconds"):
                await call
        assert (await client.execute_code("print(1)", timeout=20)).stdout == "1\n"
