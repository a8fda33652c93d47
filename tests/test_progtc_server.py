"""``progtc-kernel serve`` and ``AsyncProgtcClient``: progtc's API on warm Jupyter kernels.

Every test talks to a real server started here on loopback (a Jupyter Server with
this package's extension), through the real kernel websocket.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from progtc_kernel import AsyncProgtcClient, ServerError, ToolCallStarted
from progtc_kernel.types import ErrorCode, ExecuteCodeError, ExecuteCodeSuccess, MessageType

from .servers import TOKEN, JupyterProcess, free_port, jupyter_server, pool_status, until

pytestmark = pytest.mark.timeout(300)


def progtc_serve(home: Path, *args: str, api_key: str = TOKEN) -> JupyterProcess:
    """``progtc-kernel serve`` on a free loopback port, as a child process."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "progtc_kernel.cli",
        "serve",
        "--port",
        str(port),
        "--api-key",
        api_key,
        *args,
    ]
    return JupyterProcess(argv, port, home, token=api_key)


@pytest.fixture(scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[JupyterProcess]:
    # No bound on waiting for a kernel: twenty executions at once share eight kernels.
    process = await progtc_serve(
        tmp_path_factory.mktemp("serve"),
        "--pool-size",
        "2",
        "--max-kernels",
        "8",
        "--pool-timeout",
        "none",
    ).start()
    yield process
    process.stop()


@pytest.fixture
async def client(served: JupyterProcess) -> AsyncIterator[AsyncProgtcClient]:
    async with AsyncProgtcClient(base_url=served.url, api_key=served.token) as client:
        yield client


async def get_weather(city: str, country: str) -> str:
    return f"Weather in {city}, {country}: Sunny, 22°C"


async def search_database(query: str) -> list[dict[str, Any]]:
    return [{"id": 1, "name": "Result"}]


async def test_the_client_takes_a_jupyter_server_and_uses_its_settings(
    served: JupyterProcess,
) -> None:
    from progtc_kernel import JupyterServer

    # The URL ``jupyter server`` prints, token and all: JupyterServer reads the token
    # from it, and the client uses that server (its headers, certificates, timeouts).
    server = JupyterServer(f"{served.url}?token={served.token}", headers={"X-Run": "1"})
    async with AsyncProgtcClient(server) as client:
        result = await client.execute_code(
            "from tools import get_weather\nprint(await get_weather('Oslo', 'NO'))",
            tool_call_handlers={"get_weather": get_weather},
        )
    assert result.stdout == "Weather in Oslo, NO: Sunny, 22°C\n"


# -- the seed's quick start, with only the import changed -----------------------------


async def test_the_seed_quick_start_works_with_only_the_import_changed(
    served: JupyterProcess,
) -> None:
    from progtc_kernel import AsyncProgtcClient

    client = AsyncProgtcClient(
        base_url=served.url,
        api_key=served.token,
    )
    code = """
from tools import get_weather

weather = await get_weather("London", "UK")
print(f"The weather is: {weather}")
"""
    result = await client.execute_code(
        code=code,
        tool_call_handlers={
            "get_weather": get_weather,
            "search_database": search_database,
        },
    )
    assert result.stdout == "The weather is: Weather in London, UK: Sunny, 22°C\n"
    match result.type:
        case MessageType.SUCCESS:
            assert isinstance(result, ExecuteCodeSuccess)
        case MessageType.ERROR:
            raise AssertionError(f"{result.code}: {result.message}")


async def test_the_seed_gather_example_and_progtc_02_spellings(client: AsyncProgtcClient) -> None:
    await client.wait_for_server(timeout=30)
    assert await client.ping()
    code = """
from tools import get_weather, search_database
import asyncio

weather, results = await asyncio.gather(
    get_weather("Tokyo", "Japan"),
    search_database("hotels"),
)

print(f"Weather: {weather}")
print(f"Results: {results}")
"""
    result = await client.execute_code(
        code,
        tools={"get_weather": get_weather, "search_database": search_database},
        headers={"X-Request-Id": "r-1"},
    )
    assert result.type == MessageType.SUCCESS
    assert result.stdout.splitlines() == [
        "Weather: Weather in Tokyo, Japan: Sunny, 22°C",
        "Results: [{'id': 1, 'name': 'Result'}]",
    ]
    assert [call.name for call in result.tool_calls] == ["get_weather", "search_database"]


# -- isolation, errors, timeouts ----------------------------------------------------


async def test_each_execution_gets_a_fresh_kernel(client: AsyncProgtcClient) -> None:
    first = await client.execute_code("secret = 42\nimport os\nprint(os.getpid())")
    second = await client.execute_code("import os\nprint(os.getpid())\nprint(secret)")
    assert first.type == MessageType.SUCCESS
    assert isinstance(second, ExecuteCodeError)
    assert second.code == ErrorCode.CODE_RUNTIME_ERROR
    assert second.message == "NameError: name 'secret' is not defined"
    assert first.stdout != second.stdout.splitlines()[0] + "\n"  # another process


async def test_each_error_code(client: AsyncProgtcClient) -> None:
    runtime = await client.execute_code("print('before')\n1 / 0")
    assert isinstance(runtime, ExecuteCodeError)
    assert (runtime.code, runtime.message) == (
        ErrorCode.CODE_RUNTIME_ERROR,
        "ZeroDivisionError: division by zero",
    )
    assert runtime.stdout == "before\n"
    assert "ZeroDivisionError" in runtime.stderr and "1 / 0" in runtime.traceback

    syntax = await client.execute_code("print('never')\nx = = 1")
    assert isinstance(syntax, ExecuteCodeError)
    assert syntax.code == ErrorCode.CODE_COMPILATION_ERROR
    assert syntax.message.startswith("SyntaxError") and syntax.stdout == ""

    timeout = await client.execute_code(
        "import time\nprint('partial', flush=True)\ntime.sleep(60)", timeout=1
    )
    assert isinstance(timeout, ExecuteCodeError)
    assert timeout.code == ErrorCode.CODE_TIMEOUT_ERROR
    assert timeout.stdout == "partial\n"  # progtc lost it; a kernel keeps it


async def test_a_failing_handler_is_a_tool_error_the_code_can_catch(
    client: AsyncProgtcClient,
) -> None:
    async def book(hotel: str) -> str:
        raise RuntimeError(f"{hotel} is full")

    result = await client.execute_code(
        """
from tools import book, ToolError
try:
    await book("Ritz")
except ToolError as exc:
    print("caught:", exc)
""",
        {"book": book},
    )
    assert result.type == MessageType.SUCCESS
    assert result.stdout == "caught: tool 'book' failed: RuntimeError: Ritz is full\n"
    assert [(call.name, call.ok) for call in result.tool_calls] == [("book", False)]


async def test_a_kernel_that_dies_is_a_clear_error_and_the_pool_heals(
    served: JupyterProcess, client: AsyncProgtcClient
) -> None:
    died = await client.execute_code("print('bye', flush=True)\nimport os\nos._exit(1)")
    assert isinstance(died, ExecuteCodeError)
    assert died.code == ErrorCode.KERNEL_DIED
    again = await client.execute_code("print('alive')")
    assert again.type == MessageType.SUCCESS and again.stdout == "alive\n"

    async def healed() -> bool:
        pool = (await pool_status(served))["pool"]
        return bool(pool["leased"] == 0 and pool["warm"] == pool["size"])

    await until(healed, "back to two warm kernels")


# -- more than progtc ----------------------------------------------------------------


async def test_live_callbacks_and_display_outputs(client: AsyncProgtcClient) -> None:
    seen: list[tuple[str, Any]] = []

    async def on_stdout(text: str) -> None:
        seen.append(("stdout", text))

    result = await client.execute_code(
        "from tools import get_weather\n"
        "from IPython.display import HTML, display\n"
        "print(await get_weather('Oslo', 'Norway'), flush=True)\n"
        "import sys; print('careful', file=sys.stderr)\n"
        "display(HTML('<b>table</b>'))\n",
        {"get_weather": get_weather},
        on_stdout=on_stdout,
        on_stderr=lambda text: seen.append(("stderr", text)),
        on_tool_call=lambda event: seen.append(
            (
                type(event).__name__,
                event.name if isinstance(event, ToolCallStarted) else event.call.ok,
            )
        ),
    )
    assert result.type == MessageType.SUCCESS
    assert ("ToolCallStarted", "get_weather") in seen and ("ToolCallFinished", True) in seen
    assert ("stdout", "Weather in Oslo, Norway: Sunny, 22°C\n") in seen
    assert ("stderr", "careful\n") in seen
    assert [output.data["text/html"] for output in result.outputs] == ["<b>table</b>"]


async def test_200_gathered_calls_and_a_1_mb_result(client: AsyncProgtcClient) -> None:
    def double(x: int) -> int:
        return 2 * x

    def blob() -> str:
        return "x" * 1_000_000

    result = await client.execute_code(
        """
import asyncio
from tools import double, blob
values = await asyncio.gather(*(double(i) for i in range(200)))
big = await blob()
print(sum(values), len(big))
""",
        {"double": double, "blob": blob},
    )
    assert result.stdout == f"{2 * sum(range(200))} 1000000\n"
    assert len(result.tool_calls) == 201 and all(call.ok for call in result.tool_calls)


async def test_a_persistent_session_keeps_state_until_closed(
    served: JupyterProcess, client: AsyncProgtcClient
) -> None:
    await client.execute_code("counter = 1", session="alice")
    result = await client.execute_code("counter += 1\nprint(counter)", session="alice")
    assert result.stdout == "2\n"
    other = await client.execute_code("print('counter' in dir())", session="bob")
    assert other.stdout == "False\n"
    assert (await pool_status(served))["pool"]["sessions"] == ["alice", "bob"]
    await client.close_session("alice")
    await client.close_session("bob")
    assert (await pool_status(served))["pool"]["sessions"] == []
    fresh = await client.execute_code("print('counter' in dir())", session="alice")
    assert fresh.stdout == "False\n"
    await client.close_session("alice")


async def test_helper_modules(client: AsyncProgtcClient) -> None:
    modules = {
        "helpers": "from tools import get_weather\n\n"
        "async def report(city):\n"
        "    return (await get_weather(city, 'FR')).upper()\n",
        "constants": "CITY = 'Paris'\n",
    }
    result = await client.execute_code(
        "from helpers import report\nfrom constants import CITY\nprint(await report(CITY))",
        {"get_weather": get_weather},
        modules=modules,
    )
    assert result.stdout == "WEATHER IN PARIS, FR: SUNNY, 22°C\n"

    broken = await client.execute_code("import broken", modules={"broken": "def f(:\n"})
    assert isinstance(broken, ExecuteCodeError) and "SyntaxError" in broken.message
    for name, why in [
        ("a.b", "not a valid identifier"),
        ("tools", "reserved"),
        ("json", "conflicts with existing modules: json"),
    ]:
        with pytest.raises(ValueError, match=why):
            await client.execute_code("pass", modules={name: "x = 1"})


async def test_client_timeouts_never_exceed_the_servers_ceiling(tmp_path: Path) -> None:
    process = await progtc_serve(
        tmp_path, "--pool-size", "1", "--code-execution-timeout", "5", "--tool-call-timeout", "1"
    ).start()
    try:
        client = AsyncProgtcClient(process.url, api_key=process.token)
        slow = await client.execute_code("import time\ntime.sleep(60)", timeout=600)
        assert isinstance(slow, ExecuteCodeError) and slow.code == ErrorCode.CODE_TIMEOUT_ERROR

        async def hang() -> None:
            await asyncio.Event().wait()

        stuck = await client.execute_code(
            "from tools import hang, ToolTimeoutError\n"
            "try:\n    await hang()\nexcept ToolTimeoutError as exc:\n    print('gave up')",
            {"hang": hang},
            tool_call_timeout=600,
        )
        assert stuck.stdout == "gave up\n"
    finally:
        process.stop()


# -- faults ----------------------------------------------------------------------------


async def test_a_wrong_or_missing_key_is_refused(served: JupyterProcess) -> None:
    for key in ("wrong", None):
        client = AsyncProgtcClient(served.url, api_key=key)
        assert await client.ping()  # no key needed to see the server is up
        with pytest.raises(ServerError, match="refused the token") as caught:
            await client.execute_code("print(1)")
        assert caught.value.status == 403
        assert "api_key=" in str(caught.value)


async def test_20_concurrent_executions_from_several_clients_stay_isolated(
    served: JupyterProcess,
) -> None:
    clients = [AsyncProgtcClient(served.url, api_key=served.token) for _ in range(4)]

    async def run(n: int) -> Any:
        def whoami() -> int:
            return n

        return await clients[n % 4].execute_code(
            "from tools import whoami\nimport asyncio\n"
            "mine = await whoami()\nawait asyncio.sleep(0.2)\n"
            "assert 'previous' not in dir()\nprevious = mine\nprint(mine)",
            {"whoami": whoami},
        )

    results = await asyncio.gather(*(run(n) for n in range(20)))
    assert [result.stdout for result in results] == [f"{n}\n" for n in range(20)]


async def test_an_exhausted_pool_makes_requests_wait_then_fail_clearly(tmp_path: Path) -> None:
    process = await progtc_serve(
        tmp_path, "--pool-size", "1", "--max-kernels", "1", "--pool-timeout", "1"
    ).start()
    try:
        client = AsyncProgtcClient(process.url, api_key=process.token)

        async def warm() -> bool:
            return bool((await pool_status(process))["pool"]["warm"] == 1)

        await until(warm, "warm")
        started = asyncio.Event()
        release = asyncio.Event()

        async def hold() -> None:
            started.set()
            await release.wait()

        holding = asyncio.ensure_future(
            client.execute_code("from tools import hold\nawait hold()", {"hold": hold})
        )
        await started.wait()
        with pytest.raises(ServerError, match="--max-kernels") as caught:
            await client.execute_code("print('no room')")
        assert caught.value.status == 503
        release.set()
        assert (await holding).type == MessageType.SUCCESS
        await client.aclose()  # its kernel let go of
        await until(warm, "warm again")
        again = await client.execute_code("print('room again')")
        assert again.stdout == "room again\n"
    finally:
        process.stop()


CLIENT_THAT_VANISHES = """
import asyncio, sys
from progtc_kernel import AsyncProgtcClient

async def stuck():
    print("called", flush=True)
    await asyncio.Event().wait()

async def main():
    client = AsyncProgtcClient(sys.argv[1], api_key=sys.argv[2])
    await client.execute_code("from tools import stuck\\nawait stuck()", {"stuck": stuck})

asyncio.run(main())
"""


async def test_a_client_that_vanishes_mid_run_has_its_kernel_reaped(
    served: JupyterProcess, tmp_path: Path
) -> None:
    script = tmp_path / "vanishing.py"
    script.write_text(CLIENT_THAT_VANISHES)
    child = subprocess.Popen(
        [sys.executable, str(script), served.url, served.token], stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        assert await asyncio.to_thread(child.stdout.readline) == b"called\n"
        assert (await pool_status(served))["pool"]["leased"] == 1
    finally:
        child.kill()
        child.wait()

    async def reaped() -> bool:
        return bool((await pool_status(served))["pool"]["leased"] == 0)

    await until(reaped, "reaped")


async def test_cancelling_execute_code_releases_its_kernel_at_once(
    served: JupyterProcess, client: AsyncProgtcClient
) -> None:
    called = asyncio.Event()

    async def stuck() -> None:
        called.set()
        await asyncio.Event().wait()

    run = asyncio.ensure_future(
        client.execute_code("from tools import stuck\nawait stuck()", {"stuck": stuck})
    )
    await called.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert (await pool_status(served))["pool"]["leased"] == 0


# -- other servers, and the command itself ----------------------------------------


async def test_a_plain_jupyter_server_works_too(tmp_path: Path) -> None:
    process = await jupyter_server(tmp_path).start()
    try:
        client = AsyncProgtcClient(process.url, api_key=process.token)
        result = await client.execute_code(
            "from tools import get_weather\nprint(await get_weather('Rome', 'Italy'))",
            {"get_weather": get_weather},
        )
        assert result.stdout == "Weather in Rome, Italy: Sunny, 22°C\n"
        await client.execute_code("kept = 'yes'", session="s")
        kept = await client.execute_code("print(kept)", session="s")
        assert kept.stdout == "yes\n"
        await client.aclose()
        assert await process.server().kernels() == []
    finally:
        process.stop()


SHORT_SCRIPT = """
import asyncio, sys
from progtc_kernel import AsyncProgtcClient

async def add(a: int, b: int) -> int:
    return a + b

async def main():
    client = AsyncProgtcClient(sys.argv[1], api_key=sys.argv[2])  # no `async with`
    for n in range(3):
        result = await client.execute_code(
            f"from tools import add\\nprint(await add({n}, 1))", {"add": add})
        print(result.stdout, end="", flush=True)

asyncio.run(main())
"""


async def test_a_short_script_leaves_no_kernel_and_no_noise_on_a_plain_server(
    tmp_path: Path,
) -> None:
    process = await jupyter_server(tmp_path).start()
    try:
        script = tmp_path / "short.py"
        script.write_text(SHORT_SCRIPT)
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, str(script), process.url, process.token],
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert (done.returncode, done.stdout, done.stderr) == (0, "1\n2\n3\n", "")
        assert await process.server().kernels() == []
    finally:
        process.stop()


async def test_a_wrong_key_names_the_fix_of_the_api_in_use(tmp_path: Path) -> None:
    process = await jupyter_server(tmp_path).start()
    try:
        client = AsyncProgtcClient(process.url, api_key="wrong")
        with pytest.raises(ServerError, match="refused the token") as caught:
            await client.execute_code("print(1)")
        assert "api_key=" in str(caught.value)
        assert "JupyterServer(" not in str(caught.value)
        assert "jupyter server list" not in str(caught.value)

        done = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "progtc_kernel.cli",
                "run",
                "-",
                "--server",
                process.url,
                "--token",
                "wrong",
            ],
            input="print(1)",
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2, done.stderr
        assert "--token" in done.stderr and "JupyterServer(" not in done.stderr
    finally:
        process.stop()


def kernel_processes(home: Path) -> list[int]:
    """Kernel processes whose connection file lives in this server's runtime dir."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"ipykernel" in cmdline and str(home).encode() in cmdline:
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
async def test_the_server_stops_on_ctrl_c_or_sigterm_reaping_every_kernel(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    process = await progtc_serve(tmp_path, "--pool-size", "2").start()
    try:
        client = AsyncProgtcClient(process.url, api_key=process.token)
        await client.execute_code("x = 1", session="kept")

        async def warm() -> bool:
            return bool((await pool_status(process))["pool"]["warm"] == 2)

        await until(warm, "two warm kernels")
        assert len(kernel_processes(tmp_path)) == 3
        assert process.process is not None
        process.process.send_signal(stop_signal)
        assert await asyncio.to_thread(process.process.wait, 60) == 0
        assert kernel_processes(tmp_path) == []
        assert "listening on http://127.0.0.1:" in process.log_text()
    finally:
        process.stop()


def test_serve_refuses_a_public_address_without_a_key() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PROGTC_API_KEY"}
    done = subprocess.run(
        [sys.executable, "-m", "progtc_kernel.cli", "serve", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2
    assert "without an API key" in done.stderr and "--api-key" in done.stderr
