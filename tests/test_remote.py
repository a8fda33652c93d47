"""ToolKernel and ToolBridge on kernels behind a Jupyter Server, a Kernel Gateway
and an Enterprise Gateway (in an environment of its own).

Each server runs on loopback with a kernelspec per ipykernel line; the kernels do
not have the extension loaded until ToolKernel loads it. Nothing is mocked."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from progtc_kernel import (
    DisplayOutput,
    ExecutionFinished,
    ExtensionNotLoadedError,
    JupyterServer,
    ProgrammaticToolset,
    RemoteKernel,
    ServerError,
    StreamOutput,
    ToolBridge,
    ToolCallFinished,
    ToolCallStarted,
    ToolKernel,
)
from progtc_kernel.timeouts import Timeout

from .conftest import (
    TOOLS,
    bare_kernel_env,
    build_env,
    every_line,
    interrupt_during_call,
    kernel_env,
    selected_lines,
)
from .servers import (
    Frontend,
    JupyterProcess,
    Proxy,
    enterprise_gateway,
    jupyter_server,
    kernel_gateway,
    kernelspec,
    until,
)
from .test_cli import progtc_kernel


def _enterprise_gateway(home: Path) -> JupyterProcess:
    python = build_env("enterprise-gateway", ["jupyter_enterprise_gateway==3.3.0"])
    return enterprise_gateway(home, python)


SERVERS: dict[str, Callable[[Path], JupyterProcess]] = {
    "jupyter-server": jupyter_server,
    "kernel-gateway": kernel_gateway,
    "enterprise-gateway": _enterprise_gateway,
}


# Every server kind on the newest ipykernel line, and the other lines on a Jupyter
# Server (the websocket reaches the same reply routes; tests/test_ipykernel_versions.py
# checks those on every line). PROGTC_TEST_EVERY_LINE=1: every kind on every line.
# The fixture is parametrized by both itself (rather than depending on the session's
# kernel_python) so that pytest keys its cache by both: a server is never reused
# across lines.
SERVED = [
    (line, kind)
    for line in selected_lines()
    for kind in SERVERS
    if every_line() or line == selected_lines()[-1] or kind == "jupyter-server"
]
SERVED_IDS = [f"ipykernel-{line}-{kind}" for line, kind in SERVED]


@pytest.fixture(scope="module", params=SERVED, ids=SERVED_IDS)
async def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[JupyterProcess]:
    """A server on loopback whose kernelspec ``progtc`` runs this ipykernel line."""
    line, kind = request.param
    home = tmp_path_factory.mktemp(kind)
    kernelspec(home / "share", "progtc", kernel_env(line))
    kernelspec(home / "share", "no-progtc", bare_kernel_env(line))
    process = await SERVERS[kind](home).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
async def kernel(served: JupyterProcess) -> AsyncIterator[ToolKernel]:
    async with ToolKernel(
        TOOLS, kernel=RemoteKernel(served.server(), kernel_name="progtc"), timeout=120
    ) as k:
        yield k


@pytest.fixture
def remote_kernel(served: JupyterProcess) -> Callable[..., ToolKernel]:
    """A fresh ToolKernel on the server, with your own tools and options."""

    def make(tools: Any = TOOLS, *, kernel_id: str | None = None, **options: Any) -> ToolKernel:
        kernel_name = "progtc" if kernel_id is None else None
        kernel = RemoteKernel(served.server(), kernel_id, kernel_name=kernel_name)
        return ToolKernel(tools, kernel=kernel, **options)

    return make


@pytest.fixture
async def someone_elses_kernel(served: JupyterProcess) -> AsyncIterator[str]:
    """The id of a kernel someone else started on the server (as JupyterLab or E2B
    would), shut down after the test."""
    server = served.server()
    kernel_id = str((await server.request("POST", "api/kernels", {"name": "progtc"}))["id"])
    yield kernel_id
    await server.request("DELETE", f"api/kernels/{kernel_id}")


# -- the core scenarios -------------------------------------------------------------


async def test_code_calls_host_tools_over_the_websocket(kernel: ToolKernel) -> None:
    result = await kernel.execute(
        "from tools import get_weather\nprint(await get_weather('Oslo', 'NO'))"
    )
    assert result.stdout == "Weather in Oslo, NO: Sunny, 22°C\n"
    assert kernel.bridge.transport.framing == "v1"  # type: ignore[attr-defined]


async def test_2000_gathered_calls_all_come_back(kernel: ToolKernel) -> None:
    # The servers run with their default iopub rate limit (1000 msg/s).
    result = await kernel.execute(
        "import asyncio\nfrom tools import get_weather\n"
        "done = await asyncio.gather(*(get_weather(str(i), 'X') for i in range(2000)))\n"
        "print(len(done), done[1999])"
    )
    assert result.stdout == "2000 Weather in 1999, X: Sunny, 22°C\n", result.stderr
    assert len(result.tool_calls) == 2000


# Which route took the kernel's calls to its hosts since the last look (the counters
# the extension keeps), one word per route used.
SENT_ROUTES = (
    "from progtc_kernel.kernel_side import extension\n"
    "routes = extension.current().sent_routes\n"
    "print(*sorted(route for route, count in routes.items() if count))\n"
    "routes.clear()\n"
)

# A silent cell with one call. Once the host answered it, the kernel knows the host
# has seen every output before it (SENT_ROUTES's too): calls made with no output
# since then can take stdin. Counts routes from here on.
SETTLED = (
    "from tools import get_weather\n"
    "_ = await get_weather('Oslo', 'NO')\n"
    "from progtc_kernel.kernel_side import extension\n"
    "extension.current().sent_routes.clear()\n"
)

# Output and calls, alternating: flushed output, then output still buffered.
ALTERNATING = (
    "from tools import get_weather\n"
    "for i in range(20):\n"
    "    print(i, flush=True)\n"
    "    await get_weather(str(i), 'X')\n"
    "    print(f'{i} again')\n"
    "    await get_weather(str(i), 'Y')\n"
)


async def in_order_seen(kernel: ToolKernel, code: str) -> list[str]:
    """Printed lines and the calls' arguments, in the order the host saw them (a
    line may come in several chunks)."""
    seen: list[str] = []
    printed = ""
    async for event in kernel.stream(code):
        if isinstance(event, StreamOutput):
            printed += event.text
        elif isinstance(event, ToolCallStarted):
            seen += printed.splitlines()
            printed = ""
            seen.append(event.arguments["city"] + event.arguments["country"])
    return seen + printed.splitlines()


def alternating_order() -> list[str]:
    return [line for i in range(20) for line in (str(i), f"{i}X", f"{i} again", f"{i}Y")]


async def test_calls_travel_on_the_hosts_own_stdin_connection(kernel: ToolKernel) -> None:
    """The server forwards stdin to our connection alone, without the work it does
    for every iopub message: awaited and blocking calls from the cell take it."""
    await kernel.execute(SETTLED)
    result = await kernel.execute(
        "import asyncio\nfrom tools import get_weather\n"
        "done = await asyncio.gather(*(get_weather(str(i), 'X') for i in range(100)))\n"
        "def run():\n    return get_weather('Bern', 'CH')\n"
        "bern = run()\n"
        "print(len(set(done)), done[99])\n"
        "print(bern)"
    )
    assert result.stdout == (
        "100 Weather in 99, X: Sunny, 22°C\nWeather in Bern, CH: Sunny, 22°C\n"
    ), result.error
    assert len(result.tool_calls) == 101
    # (a message may still take iopub where stdin could not take it at that moment,
    # as how-it-works lists: seen once on a machine loaded 15 on 2 cores)
    assert "stdin" in (await kernel.execute(SENT_ROUTES)).stdout.split()


async def test_a_call_right_after_printed_output_follows_it_on_iopub(kernel: ToolKernel) -> None:
    """No order holds between two channels: a call made after output the host may
    not have seen yet goes on iopub behind it; once the host answered it, the next
    calls take stdin again."""
    await kernel.execute(SETTLED)
    code = (
        "from tools import get_weather\nprint('asking')\n"
        "rome = await get_weather('Rome', 'IT')\n"
        "print(rome, await get_weather('Bern', 'CH'), await get_weather('Nice', 'FR'))"
    )
    assert await in_order_seen(kernel, code) == [
        "asking",
        "RomeIT",
        "BernCH",
        "NiceFR",
        "Weather in Rome, IT: Sunny, 22°C Weather in Bern, CH: Sunny, 22°C "
        "Weather in Nice, FR: Sunny, 22°C",
    ]
    assert (await kernel.execute(SENT_ROUTES)).stdout == "iopub stdin\n"


async def test_output_and_calls_reach_the_host_in_the_cells_order(kernel: ToolKernel) -> None:
    """Over a Jupyter Server, iopub takes longer than stdin (the server checks and
    decodes each message): a call on stdin would overtake the output before it."""
    await kernel.execute(SETTLED)
    assert await in_order_seen(kernel, ALTERNATING) == alternating_order()
    assert (await kernel.execute(SENT_ROUTES)).stdout == "iopub\n"


async def test_calls_from_a_thread_take_iopub(kernel: ToolKernel) -> None:
    """ipykernel uses its stdin socket from the main thread only: a call made on
    another thread goes on iopub, as every call did before."""
    await kernel.execute(SETTLED)
    result = await kernel.execute(
        "import threading\nfrom tools import get_weather\nout = []\n"
        "thread = threading.Thread(target=lambda: out.append(get_weather('Rome', 'IT')))\n"
        "thread.start()\nthread.join()\nprint(out[0])"
    )
    assert result.stdout == "Weather in Rome, IT: Sunny, 22°C\n", result.error
    assert (await kernel.execute(SENT_ROUTES)).stdout == "iopub\n"


async def test_a_host_that_does_not_ask_for_stdin_gets_its_calls_on_iopub(
    remote_kernel: Callable[..., ToolKernel], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ToolBridge, "calls_on_stdin", False)
    async with remote_kernel() as kernel:
        result = await kernel.execute(
            "import asyncio\nfrom tools import get_weather\n"
            "done = await asyncio.gather(*(get_weather(str(i), 'X') for i in range(100)))\n"
            "print(len(set(done)))"
        )
        assert result.stdout == "100\n", result.error
        assert (await kernel.execute(SENT_ROUTES)).stdout == "iopub\n"


async def test_blocking_calls_in_def_run(kernel: ToolKernel) -> None:
    result = await kernel.execute(
        "from tools import search_database\n"
        "def run():\n    return [row['name'] for row in search_database('hotel', limit=2)]\n"
        "print(run())"
    )
    assert result.stdout == "['hotel 0', 'hotel 1']\n"


async def test_events_stream_live(kernel: ToolKernel) -> None:
    code = "from tools import get_weather\nprint('asking')\nprint(await get_weather('Rome', 'IT'))"
    kinds = [type(event) async for event in kernel.stream(code)]
    assert kinds[0] is StreamOutput
    assert kinds.index(ToolCallStarted) < kinds.index(ToolCallFinished)
    assert kinds[-1] is ExecutionFinished


async def test_display_outputs_come_back(kernel: ToolKernel) -> None:
    events = [
        event
        async for event in kernel.stream(
            "from IPython.display import HTML, display\ndisplay(HTML('<b>hi</b>'))\n42"
        )
    ]
    shown = [event.output for event in events if isinstance(event, DisplayOutput)]
    assert [output.kind for output in shown] == ["display_data", "execute_result"]
    assert shown[0].data["text/html"] == "<b>hi</b>"


async def test_a_failing_tool_is_a_catchable_tool_error(kernel: ToolKernel) -> None:
    result = await kernel.execute(
        "from tools import fail, ToolError\n"
        "try:\n    await fail('no luck')\nexcept ToolError as e:\n    print(type(e).__name__, e)"
    )
    assert result.ok
    assert "no luck" in result.stdout


async def test_state_stays_across_runs(kernel: ToolKernel) -> None:
    await kernel.execute("answer = 41")
    assert (await kernel.execute("print(answer + 1)")).stdout == "42\n"


async def test_a_slow_tool_times_out_in_the_kernel_and_is_cancelled_on_the_host(
    remote_kernel: Callable[..., ToolKernel],
) -> None:
    cancelled = asyncio.Event()

    async def slow() -> str:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()
        return "never"

    async with remote_kernel([slow], timeout=Timeout(tool_call=0.5)) as kernel:
        result = await kernel.execute(
            "from tools import slow, ToolTimeoutError\n"
            "try:\n    await slow()\nexcept ToolTimeoutError as e:\n    print('timed out')"
        )
        assert result.stdout == "timed out\n"
        await cancelled.wait()


async def test_a_run_timeout_interrupts_and_keeps_the_output(kernel: ToolKernel) -> None:
    result = await kernel.execute(
        "print('before', flush=True)\nimport time\ntime.sleep(600)", timeout=1
    )
    assert result.error is not None and result.error.kind == "timeout"
    assert result.stdout == "before\n"
    assert (await kernel.execute("print('still here')")).stdout == "still here\n"


async def test_an_interrupt_cancels_the_host_tool(remote_kernel: Callable[..., ToolKernel]) -> None:
    running, cancelled = asyncio.Event(), asyncio.Event()

    async def wait_forever() -> None:
        running.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    async with remote_kernel([wait_forever]) as kernel:
        kind = await interrupt_during_call(
            kernel, "from tools import wait_forever\nawait wait_forever()", running.wait
        )
        assert kind == "cancelled"
        await cancelled.wait()


async def test_a_kernel_that_dies_is_reported_and_replaced(
    remote_kernel: Callable[..., ToolKernel],
) -> None:
    async with remote_kernel() as kernel:
        died = await kernel.execute("import os\nos._exit(1)")
        assert died.error is not None and died.error.kind == "kernel_died"
        after = await kernel.execute(
            "from tools import get_weather\nprint(await get_weather('Lima', 'PE'))"
        )
        assert after.stdout == "Weather in Lima, PE: Sunny, 22°C\n"


# -- kernels someone else started -----------------------------------------------------


async def test_attach_by_kernel_id_leaves_the_kernel_running(
    served: JupyterProcess, remote_kernel: Callable[..., ToolKernel], someone_elses_kernel: str
) -> None:
    async with remote_kernel(kernel_id=someone_elses_kernel) as kernel:
        result = await kernel.execute(
            "from tools import get_weather\nprint(await get_weather('Oslo', 'NO'))"
        )
        assert result.stdout == "Weather in Oslo, NO: Sunny, 22°C\n"
    still_there = await served.server().kernel(someone_elses_kernel).model()
    assert still_there["id"] == someone_elses_kernel


async def test_a_bridge_serves_cells_someone_else_runs(
    served: JupyterProcess, someone_elses_kernel: str
) -> None:
    server = served.server()
    async with (
        Frontend(server, someone_elses_kernel) as someone_else,
        ToolBridge(server.kernel(someone_elses_kernel), tools=TOOLS),
    ):
        printed = await someone_else.run(
            "from tools import get_weather\nprint(get_weather('Bern', 'CH'))"
        )
        # Sent to the bridge's own connection, whoever ran the cell.
        routes = await someone_else.run(SENT_ROUTES)
    assert printed == "Weather in Bern, CH: Sunny, 22°C\n"
    assert routes == "stdin\n"


async def test_a_bridge_that_drops_while_others_stay_connected_registers_again(
    served: JupyterProcess, someone_elses_kernel: str
) -> None:
    """With another client connected the server does not buffer for us: it closes
    our channels, and the kernel forgets us. Back, the bridge registers again."""
    async with (
        Frontend(served.server(), someone_elses_kernel) as someone_else,
        Proxy(served.port) as proxy,
    ):
        via_proxy = JupyterServer(f"http://127.0.0.1:{proxy.port}", token=served.token)
        async with ToolBridge(via_proxy.kernel(someone_elses_kernel), tools=TOOLS) as bridge:
            back = asyncio.Event()
            bridge.transport.add_reconnect_listener(back.set)
            proxy.cut()
            await back.wait()
            await bridge.wait_ready()
            printed = await someone_else.run(
                "from tools import get_weather\nprint(get_weather('Bern', 'CH'))"
            )
    assert printed == "Weather in Bern, CH: Sunny, 22°C\n"


# -- faults and bad input ---------------------------------------------------------------


async def test_a_wrong_or_missing_token_says_to_pass_the_right_one(served: JupyterProcess) -> None:
    for token in ("wrong", ""):
        with pytest.raises(ServerError, match="token") as caught:
            async with ToolKernel(
                TOOLS, kernel=RemoteKernel(JupyterServer(served.url, token=token))
            ):
                pass
        assert caught.value.status in (401, 403)


async def test_an_unknown_kernel_id_is_named(served: JupyterProcess) -> None:
    with pytest.raises(ServerError, match="no kernel 'no-such-kernel'"):
        async with ToolKernel(TOOLS, kernel=RemoteKernel(served.server(), "no-such-kernel")):
            pass


async def test_an_unknown_kernelspec_lists_the_servers(served: JupyterProcess) -> None:
    with pytest.raises(ServerError, match=r"no kernelspec 'python9'.*progtc"):
        async with ToolKernel(TOOLS, kernel=RemoteKernel(served.server(), kernel_name="python9")):
            pass


async def test_a_kernel_with_only_ipykernel_gets_the_hosts_kernel_side(
    served: JupyterProcess,
) -> None:
    async with ToolKernel(
        TOOLS, kernel=RemoteKernel(served.server(), kernel_name="no-progtc")
    ) as kernel:
        assert kernel.bridge.kernel_info is not None
        assert kernel.bridge.kernel_info["injected"] is True
        result = await kernel.execute(
            "import asyncio\nfrom tools import get_weather, search_database\n"
            "w, hits = await asyncio.gather(get_weather('Oslo', 'NO'), search_database('x'))\n"
            "print(w, len(hits))"
        )
        assert result.stdout == "Weather in Oslo, NO: Sunny, 22°C 3\n"


async def test_a_bridge_brings_the_kernel_side_to_someone_elses_plain_kernel(
    served: JupyterProcess,
) -> None:
    server = served.server()
    kernel_id = str((await server.request("POST", "api/kernels", {"name": "no-progtc"}))["id"])
    try:
        async with (
            Frontend(server, kernel_id) as notebook,
            ToolBridge(server.kernel(kernel_id), tools=TOOLS),
        ):
            printed = await notebook.run(
                "from tools import get_weather\nprint(get_weather('Nuuk', 'GL'))"
            )
        assert printed == "Weather in Nuuk, GL: Sunny, 22°C\n"
    finally:
        await server.request("DELETE", f"api/kernels/{kernel_id}")


async def test_a_kernel_without_the_package_and_extension_installed_says_what_to_do(
    served: JupyterProcess,
) -> None:
    with pytest.raises(
        ExtensionNotLoadedError,
        match=r"the host was told not to bring its own \(extension='installed'\)",
    ):
        async with ToolKernel(
            TOOLS,
            kernel=RemoteKernel(served.server(), kernel_name="no-progtc"),
            extension="installed",
        ):
            pass


async def test_a_dropped_websocket_comes_back_and_no_call_is_lost_or_run_twice(
    served: JupyterProcess,
) -> None:
    async with Proxy(served.port) as proxy:
        server = JupyterServer(f"http://127.0.0.1:{proxy.port}", token=served.token)
        ran: list[int] = []

        async def double(n: int) -> int:
            ran.append(n)
            if n == 100:  # drop every connection while calls are in flight
                proxy.cut()
            await asyncio.sleep(0)
            return 2 * n

        async with ToolKernel(
            [double], kernel=RemoteKernel(server, kernel_name="progtc")
        ) as kernel:
            result = await kernel.execute(
                "import asyncio\nfrom tools import double\n"
                "got = await asyncio.gather(*(double(n) for n in range(500)))\n"
                "print(got == [2 * n for n in range(500)])"
            )
            assert result.stdout == "True\n", (result.stderr, result.error)
            assert sorted(ran) == list(range(500))  # each tool ran exactly once
            assert kernel.bridge.transport.reconnects >= 1  # type: ignore[attr-defined]

            ran.clear()
            blocking = await kernel.execute(
                "from tools import double\n"
                "def run():\n    return [double(n) for n in (7, 100, 8)]\n"
                "print(run())"
            )
            assert blocking.stdout == "[14, 200, 16]\n", (blocking.stderr, blocking.error)
            assert ran == [7, 100, 8]


@pytest.mark.parametrize(("line", "kind"), SERVED, ids=SERVED_IDS)
async def test_a_server_that_vanishes_mid_run_ends_the_run(
    line: str, kind: str, tmp_path: Path
) -> None:
    kernelspec(tmp_path / "share", "progtc", kernel_env(line))
    doomed = await SERVERS[kind](tmp_path).start()
    kernel_pid: int | None = None

    async def vanish() -> str:
        doomed.kill()
        return "too late"

    try:
        async with ToolKernel(
            [vanish], kernel=RemoteKernel(doomed.server(reconnect_timeout=2), kernel_name="progtc")
        ) as kernel:
            kernel_pid = int((await kernel.execute("import os\nprint(os.getpid())")).stdout)
            result = await kernel.execute("from tools import vanish\nawait vanish()")
            assert result.error is not None
            assert result.error.kind == "kernel_died", result.error
    finally:
        doomed.kill()
        if kernel_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(kernel_pid, signal.SIGKILL)


def test_the_cli_runs_a_script_on_the_server(served: JupyterProcess, tmp_path: Path) -> None:
    script = tmp_path / "weather.py"
    script.write_text(
        "from tools import get_weather\nprint(await get_weather('Paris', 'France'))\n"
    )
    done = progtc_kernel(
        "run",
        str(script),
        "--tools",
        "examples/tools.py",
        "--server",
        served.url,
        "--token",
        served.token,
        "--kernel-name",
        "progtc",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Sunny, 22°C\n"


def test_the_cli_names_a_wrong_combination_of_options(tmp_path: Path) -> None:
    done = progtc_kernel("run", "-", "--kernel-id", "abc", stdin="print(1)")
    assert done.returncode == 2
    assert "--kernel-id names a kernel on a server: give --server URL too" in done.stderr


async def test_a_toolset_runs_its_scripts_on_a_remote_kernel(served: JupyterProcess) -> None:
    kernel = ToolKernel(kernel=RemoteKernel(served.server(), kernel_name="progtc"))
    async with ProgrammaticToolset(TOOLS, kernel=kernel) as toolset:
        out = await toolset.execute_tool_script(
            "from tools import get_weather\ndef run():\n    return {'w': get_weather('Oslo', 'NO')}"
        )
    assert out == '{"w": "Weather in Oslo, NO: Sunny, 22°C"}'
    assert not kernel.running


# -- a server out of reach for a while ----------------------------------------------------


async def test_a_server_back_after_the_reconnect_timeout_is_used_again_state_kept(
    kernel_python: str, tmp_path: Path
) -> None:
    kernelspec(tmp_path / "share", "progtc", kernel_python)
    process = await jupyter_server(tmp_path).start()

    async def double(n: int) -> int:
        return 2 * n

    try:
        async with Proxy(process.port) as proxy:
            server = JupyterServer(
                f"http://127.0.0.1:{proxy.port}", token=process.token, reconnect_timeout=1
            )
            async with ToolKernel(
                [double], kernel=RemoteKernel(server, kernel_name="progtc")
            ) as kernel:
                await kernel.execute("kept = 21")
                proxy.down = True  # out of reach, for longer than reconnect_timeout
                proxy.cut()

                async def given_up() -> bool:
                    return not await kernel.lifecycle.is_alive()

                await until(given_up, "given up for lost")
                with pytest.raises(ServerError, match="nothing answers"):
                    await kernel.execute("print('unreachable')")  # tried, not restarted

                proxy.down = False  # back
                result = await kernel.execute("from tools import double\nprint(await double(kept))")
                assert result.stdout == "42\n", (result.stderr, result.error)
            assert await process.server().kernels() == []  # nothing left behind
    finally:
        process.stop()


async def test_a_server_that_came_back_without_the_kernel_gets_a_new_one(tmp_path: Path) -> None:
    line = selected_lines()[0]
    for home in ("first", "second"):
        kernelspec(tmp_path / home / "share", "progtc", kernel_env(line))
    first = await jupyter_server(tmp_path / "first").start()
    second = await jupyter_server(tmp_path / "second").start()

    async def double(n: int) -> int:
        return 2 * n

    try:
        async with Proxy(first.port) as proxy:
            server = JupyterServer(
                f"http://127.0.0.1:{proxy.port}", token=first.token, reconnect_timeout=1
            )
            async with ToolKernel(
                [double], kernel=RemoteKernel(server, kernel_name="progtc")
            ) as kernel:
                await kernel.execute("kept = 21")
                first.kill()  # its kernels die with it

                async def given_up() -> bool:
                    return not await kernel.lifecycle.is_alive()

                await until(given_up, "given up for lost")
                proxy.upstream_port = second.port  # the server is back, its kernels not
                result = await kernel.execute(
                    "from tools import double\nprint(await double(2), 'kept' in dir())"
                )
                assert result.stdout == "4 False\n", (result.stderr, result.error)
            assert await second.server().kernels() == []
    finally:
        first.stop()
        second.stop()


async def test_a_kernel_without_the_extension_logs_no_error_for_the_host_leaving(
    tmp_path: Path,
) -> None:
    kernelspec(tmp_path / "share", "no-progtc", build_env("ipykernel-only", ["ipykernel"]))
    process = await jupyter_server(tmp_path).start()  # its kernels log to its output
    try:
        with pytest.raises(ExtensionNotLoadedError):
            async with ToolKernel(
                TOOLS,
                kernel=RemoteKernel(process.server(), kernel_name="no-progtc"),
                extension="loaded",
            ):
                pass
        # Whatever the kernel wrote before it was shut down is in the log before this.
        with pytest.raises(ServerError):
            await process.server().request("GET", "api/no-such-thing")

        async def logged() -> bool:
            return "/api/no-such-thing" in process.log_text()

        await until(logged, "logged")
        assert "UNKNOWN CONTROL MESSAGE TYPE" not in process.log_text()
    finally:
        process.stop()
