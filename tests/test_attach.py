"""Tools for a person at a notebook: ``progtc-kernel attach`` serves a kernel it did
not start (a local one through its connection file, one on a Jupyter Server by id),
and two hosts share one kernel with every call answered once, by the documented host.

The person's cells run on a client of their own, as JupyterLab's would; the hosts
are the real command in a subprocess, or ``ToolBridge``s. Nothing is mocked."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import AsyncKernelManager

from progtc_kernel import ToolBridge
from progtc_kernel.cli import main

from .conftest import plain_kernel
from .servers import Frontend, JupyterProcess, free_port, jupyter_server, kernelspec
from .test_bridge import run_cell

ROOT = Path(__file__).resolve().parent.parent

HOST_TOOLS = '''\
import asyncio

async def get_weather(city: str, country: str) -> str:
    """Current weather for a city."""
    return f"Sunny in {city}, {country}"

def add(a: int, b: int) -> int:
    return a + b

async def book(city: str) -> str:
    raise ValueError(f"no rooms in {city}")

async def wait() -> None:
    """Never returns: for calls that are pending when something happens."""
    await asyncio.Event().wait()
'''

CALLS = """\
from tools import get_weather, add, book, ToolError
print(await get_weather("Oslo", "NO"))
def total():
    return add(2, 3)          # a blocking call, in a plain def
print(total())
try:
    await book("Paris")
except ToolError as e:
    print("caught:", e.error_type, e.message)
"""
CALLS_PRINT = "Sunny in Oslo, NO\n5\ncaught: ValueError no rooms in Paris\n"

WAIT_FOR_HOST_TO_LEAVE = """\
import tools
try:
    await tools.wait()
except tools.HostDisconnectedError as e:
    print(e.message)
"""


class Attach:
    """``progtc-kernel attach ARGS`` in the background, its stderr read line by line."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.env = {**os.environ, "NO_COLOR": "1", "PYTHONIOENCODING": "utf-8", **(env or {})}
        self.lines: list[str] = []
        self._more = asyncio.Event()
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Attach:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from progtc_kernel.cli import main; raise SystemExit(main())",
            "attach",
            *self.args,
            cwd=ROOT,
            env=self.env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.ensure_future(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._process is not None and self._reader is not None
        if self._process.returncode is None:
            self._process.kill()
        await self._process.wait()
        await self._reader

    async def _read(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        async for line in self._process.stderr:
            self.lines.append(line.decode("utf-8").rstrip("\n"))
            self._more.set()
        self._more.set()

    async def line(self, start: str, timeout: float = 60) -> str:
        """The first line of its stderr that starts with ``start``, once it is there."""

        async def seen() -> str:
            while True:
                self._more.clear()
                found = next((line for line in self.lines if line.startswith(start)), None)
                if found is not None:
                    return found
                if self._reader is not None and self._reader.done():
                    raise AssertionError(f"no line starting {start!r} in {self.lines}")
                await self._more.wait()

        return await asyncio.wait_for(seen(), timeout)

    async def detach(self) -> int:
        """Ctrl-C; returns the exit status."""
        return await self.ended(signal.SIGINT)

    async def ended(self, signum: int | None = None) -> int:
        """Its exit status, once it exits (after ``signum``, if given)."""
        assert self._process is not None and self._reader is not None
        if signum is not None:
            self._process.send_signal(signum)
        status = await asyncio.wait_for(self._process.wait(), 60)
        await self._reader
        return status


@pytest.fixture(scope="module")
def host_tools(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("host") / "host_tools.py"
    path.write_text(HOST_TOOLS)
    return str(path)


@pytest.fixture
async def person(kernel_python: str) -> AsyncIterator[tuple[AsyncKernelManager, Any]]:
    """A kernel the way a person runs it (no extension loaded), and their own client."""
    km = await plain_kernel(kernel_python)
    client = km.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
        yield km, client
    finally:
        client.stop_channels()
        if km.has_kernel:
            await km.shutdown_kernel(now=True)


# -- a local kernel, through its connection file --------------------------------------


async def test_attach_serves_a_local_kernel_until_ctrl_c_and_again_after(
    person: tuple[AsyncKernelManager, Any], host_tools: str
) -> None:
    km, client = person
    runtime_dir, name = os.path.split(km.connection_file)
    kernel_id = name.removeprefix("kernel-").removesuffix(".json")

    # By kernel id, looked up in Jupyter's runtime directory as `jupyter console` does.
    async with Attach(
        "--existing", kernel_id, "--tools", host_tools, env={"JUPYTER_RUNTIME_DIR": runtime_dir}
    ) as host:
        serving = await host.line("serving ")
        assert serving.startswith(
            f"serving add, book, get_weather, wait to kernel {km.connection_file} (ipykernel "
        )
        assert await run_cell(client, CALLS) == CALLS_PRINT
        await host.line("✗ book ValueError: no rooms in Paris")
        assert "→ get_weather(city='Oslo', country='NO')" in host.lines
        assert "→ add(a=2, b=3)" in host.lines

        # Ctrl-C detaches: a call pending then fails at once, with a clear error.
        cell = asyncio.ensure_future(run_cell(client, WAIT_FOR_HOST_TO_LEAVE))
        await host.line("→ wait()")
        assert await host.detach() == 0
        assert await cell == "the host closed the connection\n"
        assert host.lines[-1] == f"detached from kernel {km.connection_file}"

    # The kernel keeps working; the tools say there is no host.
    assert await run_cell(client, "print(6 * 7)") == "42\n"
    assert await run_cell(client, "get_weather('Rome', 'IT')") == (
        "HostDisconnectedError: tool 'get_weather' failed: HostDisconnectedError: no host "
        "is serving tools to this kernel; connect one with progtc_kernel.ToolKernel or "
        "progtc_kernel.ToolBridge"
    )

    # Attached again (by path), the host serves the functions imported before.
    async with Attach("--existing", km.connection_file, "--tools", host_tools) as host:
        await host.line("serving ")
        assert (
            await run_cell(client, "print(await get_weather('Rome', 'IT'), total())")
            == "Sunny in Rome, IT 5\n"
        )
        assert await host.detach() == 0


async def test_a_restarted_kernel_is_served_again(
    person: tuple[AsyncKernelManager, Any], host_tools: str
) -> None:
    km, client = person
    async with Attach("--existing", km.connection_file, "--tools", host_tools) as host:
        await host.line("serving ")
        await km.restart_kernel(now=False)  # what JupyterLab's "Restart Kernel" does
        await host.line("the kernel restarted: serving it again")
        await client.wait_for_ready(timeout=60)
        assert await run_cell(client, "import tools\nprint(tools.add(1, 2))") == "3\n"
        assert await host.detach() == 0


async def test_a_kernel_that_is_shut_down_ends_attach_with_status_1(
    person: tuple[AsyncKernelManager, Any], host_tools: str
) -> None:
    km, _ = person
    async with Attach("--existing", km.connection_file, "--tools", host_tools) as host:
        await host.line("serving ")
        await km.shutdown_kernel(now=True)
        assert await host.ended() == 1
        assert host.lines[-1] == (
            f"progtc-kernel: error: kernel {km.connection_file} went "
            "away (its connection file was removed: it was shut "
            "down); detached"
        )


@pytest.mark.fast
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--tools", "examples/tools.py"],
            "name one kernel: --existing CONNECTION_FILE for a "
            "local kernel, or --server URL --kernel-id ID for a kernel on a Jupyter Server",
        ),
        (
            [
                "--existing",
                "k.json",
                "--server",
                "http://127.0.0.1:9",
                "--tools",
                "examples/tools.py",
            ],
            "name one kernel",
        ),
        (
            ["--server", "http://127.0.0.1:9", "--tools", "examples/tools.py"],
            "give the kernel to serve on that server: --kernel-id ID",
        ),
        (
            ["--existing", "no-such-kernel", "--tools", "examples/tools.py"],
            "no kernel matches 'no-such-kernel' (looked in the current directory and",
        ),
        (["--existing", "k.json"], "give the tools to serve: --tools MODULE_OR_FILE"),
        (["--existing", "k.json", "--tools", "no/such.py"], "tools file not found: no/such.py"),
    ],
)
def test_usage_errors_exit_2_and_say_what_to_do(
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("NO_COLOR", "1")
    assert main(["attach", *args]) == 2
    assert message in " ".join(capsys.readouterr().err.split())


@pytest.mark.fast
def test_a_kernel_that_does_not_answer_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "kernel-stale.json"  # a kernel that is gone left its file behind
    ports = {f"{name}_port": free_port() for name in ("shell", "iopub", "stdin", "control", "hb")}
    stale.write_text(
        json.dumps(
            {
                **ports,
                "ip": "127.0.0.1",
                "key": "k",
                "transport": "tcp",
                "signature_scheme": "hmac-sha256",
            }
        )
    )
    assert (
        main(
            [
                "attach",
                "--existing",
                str(stale),
                "--tools",
                str(ROOT / "examples/tools.py"),
                "--start-timeout",
                "1",
            ]
        )
        == 2
    )
    assert (
        f"could not attach to kernel {stale}: the kernel did not answer within 1 s; is it running?"
    ) in " ".join(capsys.readouterr().err.split())


# -- a kernel on a Jupyter Server, by id -------------------------------------------------


@pytest.fixture(scope="module")
async def lab_server(
    kernel_python: str, bare_kernel_python: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[JupyterProcess]:
    """The Jupyter Server a JupyterLab runs on, with kernelspec ``progtc`` for an
    ipykernel line and ``no-progtc`` for a Python without progtc-kernel."""
    home = tmp_path_factory.mktemp("lab")
    kernelspec(home / "share", "progtc", kernel_python)
    kernelspec(home / "share", "no-progtc", bare_kernel_python)
    process = await jupyter_server(home).start()
    yield process
    process.stop()


@pytest.fixture
async def start_kernel(lab_server: JupyterProcess) -> AsyncIterator[Callable[..., Any]]:
    """Starts kernels on the server as JupyterLab does (REST); shut down after the test."""
    server = lab_server.server()
    started: list[str] = []

    async def start(name: str = "progtc") -> str:
        kernel_id = str((await server.request("POST", "api/kernels", {"name": name}))["id"])
        started.append(kernel_id)
        return kernel_id

    yield start
    for kernel_id in started:
        await server.request("DELETE", f"api/kernels/{kernel_id}")


async def test_attach_serves_a_kernel_on_a_jupyter_server(
    lab_server: JupyterProcess, start_kernel: Callable[..., Any], host_tools: str
) -> None:
    server = lab_server.server()
    kernel_id = await start_kernel()
    async with (
        Frontend(server, kernel_id) as notebook,
        Attach(
            "--server",
            lab_server.url,
            "--token",
            lab_server.token,
            "--kernel-id",
            kernel_id,
            "--tools",
            host_tools,
        ) as host,
    ):
        serving = await host.line("serving ")
        assert f"to kernel {kernel_id} on {lab_server.url}/ (ipykernel " in serving
        assert await notebook.run(CALLS) == CALLS_PRINT

        # The toolbar's interrupt (a REST interrupt) stops a blocking call and cancels
        # the tool on the host.
        cell = asyncio.ensure_future(notebook.run("import tools\ntools.wait()"))
        await host.line("→ wait()")
        await server.kernel(kernel_id).interrupt()
        # (A KeyboardInterrupt; ipykernel 7 runs every cell as a task, so there the
        # call ends the task as cancelled.)
        assert (await cell).split(":")[0] in ("KeyboardInterrupt", "CancelledError")
        await host.line("✗ wait cancelled")

        # Restarted from the toolbar, the kernel is served again.
        await server.request("POST", f"api/kernels/{kernel_id}/restart")
        await host.line("the kernel restarted: serving it again")
        assert await notebook.run("from tools import add\nprint(add(20, 22))") == "42\n"

        assert await host.ended(signal.SIGTERM) == 0  # as a service manager stops it
        assert await notebook.run("print(add(1, 1))") == (
            "HostDisconnectedError: tool 'add' failed: HostDisconnectedError: no host is "
            "serving tools to this kernel; connect one with progtc_kernel.ToolKernel or "
            "progtc_kernel.ToolBridge\n"
        )


async def test_attach_serves_a_kernel_with_only_ipykernel_and_names_a_missing_one(
    lab_server: JupyterProcess, start_kernel: Callable[..., Any], host_tools: str
) -> None:
    plain = await start_kernel("no-progtc")  # JupyterLab's plain "Python 3" kernel
    server = ["--server", lab_server.url, "--token", lab_server.token]
    async with (
        Frontend(lab_server.server(), plain) as notebook,
        Attach(*server, "--kernel-id", plain, "--tools", host_tools) as host,
    ):
        await host.line("serving ")
        assert await notebook.run(CALLS) == CALLS_PRINT
        assert await host.ended(signal.SIGTERM) == 0

    async with Attach(*server, "--kernel-id", "nope", "--tools", host_tools) as host:
        assert await host.ended() == 2
    assert f"there is no kernel 'nope' on {lab_server.url}/" in " ".join(host.lines)


async def test_a_kernel_shut_down_on_the_server_ends_attach_with_status_1(
    lab_server: JupyterProcess, host_tools: str
) -> None:
    server = lab_server.server()
    kernel_id = str((await server.request("POST", "api/kernels", {"name": "progtc"}))["id"])
    async with Attach(
        "--server",
        lab_server.url,
        "--token",
        lab_server.token,
        "--kernel-id",
        kernel_id,
        "--tools",
        host_tools,
    ) as host:
        await host.line("serving ")
        await server.request("DELETE", f"api/kernels/{kernel_id}")
        assert await host.ended() == 1
    assert host.lines[-1].endswith("went away (it was shut down); detached")


# -- two hosts on one kernel ------------------------------------------------------------


def tagged(host: str, ran: Counter[str]) -> dict[str, Callable[[int], str]]:
    """Tools that say which host answered, and count what each ran."""

    def tool(name: str) -> Callable[[int], str]:
        def call(n: int) -> str:
            ran[f"{name}({n})"] += 1
            return f"{host}:{n}"

        return call

    names = {"A": ["shared", "only_a"], "B": ["shared", "only_b"]}[host]
    return {name: tool(name) for name in names}


async def run_as(bridge: ToolBridge, code: str) -> str:
    """Run a cell through a host's own connection (as ToolKernel does); its stdout."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[str] = loop.create_future()
    printed: list[str] = []
    msg_id = ""

    def on_message(channel: str, msg: dict[str, Any]) -> None:
        if msg["parent_header"].get("msg_id") != msg_id or done.done():
            return
        if msg["header"]["msg_type"] == "stream":
            printed.append(msg["content"]["text"])
        elif msg["header"]["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            done.set_result("".join(printed))

    bridge.add_message_listener(on_message)
    msg_id = bridge.transport.send(
        "shell",
        "execute_request",
        {
            "code": code,
            "silent": False,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": False,
        },
    )
    try:
        return await asyncio.wait_for(done, 60)
    finally:
        bridge.remove_message_listener(on_message)


GATHER = """\
import asyncio
from tools import shared, only_a, only_b
got = await asyncio.gather(*[f(n) for f in (shared, only_a, only_b) for n in range(20)])
print(sorted(set(g.split(":")[0] + str(i // 20) for i, g in enumerate(got))))
"""


async def test_two_hosts_each_call_is_answered_once_by_the_documented_host(
    person: tuple[AsyncKernelManager, Any],
) -> None:
    km, client = person
    ran_a: Counter[str] = Counter()
    ran_b: Counter[str] = Counter()
    async with ToolBridge(km, tools=tagged("A", ran_a)) as host_a:
        host_b = ToolBridge(km, tools=tagged("B", ran_b))
        await host_b.start()  # the most recently connected
        try:
            # The person's cells see every tool; each goes to the newest host serving it.
            assert (
                await run_cell(client, "import tools\nprint(dir(tools)[-3:])")
                == "['only_a', 'only_b', 'shared']\n"
            )
            assert await run_cell(client, GATHER) == "['A1', 'B0', 'B2']\n"
            assert ran_a == Counter({f"only_a({n})": 1 for n in range(20)})
            assert ran_b == Counter(
                {**{f"shared({n})": 1 for n in range(20)}, **{f"only_b({n})": 1 for n in range(20)}}
            )

            # A cell a host runs itself goes to that host, for the tools it serves.
            assert (
                await run_as(host_a, "import tools\nprint(tools.shared(101), tools.only_b(102))")
                == "A:101 B:102\n"
            )
        finally:
            await host_b.close()

        # B left: its calls fail clearly, the shared tool falls to A.
        assert await run_cell(client, "print(shared(103))\nonly_b(104)") == (
            "A:103\nToolError: tool 'only_b' failed: LookupError: no tool named 'only_b'; "
            "available tools: only_a, shared"
        )
        assert await run_cell(client, "from tools import only_b") == (
            "ImportError: module 'tools' has no tool 'only_b'; available tools: only_a, shared"
        )

        # B back: it serves again, the function imported before included.
        async with ToolBridge(km, tools=tagged("B", ran_b)):
            assert await run_cell(client, "print(only_b(105), shared(106))") == "B:105 B:106\n"
    # Every call ran once, on one host: 22 on A (only_a x 20, shared(101), shared(103)),
    # 43 on B (shared x 20, only_b x 20, only_b(102), only_b(105), shared(106)).
    assert set(ran_a.values()) == set(ran_b.values()) == {1}
    assert (len(ran_a), len(ran_b)) == (22, 43)
