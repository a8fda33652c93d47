"""``progtc-kernel serve``'s kernels: isolated from each other, under their ceilings, and
quiet. Each test starts its own server on loopback and drives it through its real HTTP
APIs (progtc's, the lease API behind ``AsyncProgtcClient``, and Jupyter's own).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from progtc_kernel import AsyncProgtcClient, ServerError
from progtc_kernel.types import MessageType

from .servers import JupyterProcess, pool_status, until
from .test_progtc_server import progtc_serve

pytestmark = pytest.mark.timeout(300)


async def pool(process: JupyterProcess) -> dict[str, Any]:
    status: dict[str, Any] = (await pool_status(process))["pool"]
    return status


async def settled(process: JupyterProcess, **wanted: Any) -> None:
    """Wait until the pool's status shows ``wanted`` (and nothing on its way)."""

    async def there() -> bool:
        status = await pool(process)
        return status["starting"] == 0 and all(status[k] == v for k, v in wanted.items())

    await until(there, f"a pool with {wanted}", deadline=120)


async def test_a_second_client_cannot_find_the_code_the_first_ran(tmp_path: Path) -> None:
    process = await progtc_serve(tmp_path, "--pool-size", "2").start()
    try:
        first = AsyncProgtcClient(process.url, api_key=process.token)
        ran = await first.execute_code("launch_codes = 'swordfish'\nprint('stored')")
        assert ran.stdout == "stored\n"

        second = AsyncProgtcClient(process.url, api_key=process.token)
        # The pattern is built at run time, so that it does not match this cell itself.
        snooping = await second.execute_code(
            "pattern = '*launch_' + 'codes*'\n"
            "history = get_ipython().history_manager\n"
            "print(list(history.search(pattern)), history.get_last_session_id())"
        )
        assert snooping.type == MessageType.SUCCESS, snooping
        found, _ = snooping.stdout.split("] ")
        assert found == "["
        # Nor its files: each kernel works in a folder of its own, removed with it.
        wrote = await first.execute_code(
            "import os\nopen('notes.txt', 'w').write('swordfish')\nprint(os.getcwd())"
        )
        assert wrote.type == MessageType.SUCCESS, wrote
        looked = await second.execute_code(
            "import os\nprint(os.path.exists('notes.txt'), os.getcwd())"
        )
        exists, folder = looked.stdout.split()
        assert exists == "False" and folder != wrote.stdout.strip()

        async def removed() -> bool:
            return not Path(wrote.stdout.strip()).exists()

        await until(removed, "removed with its kernel")
        # Not in a session kept by the same client either: every kernel starts afresh.
        await first.execute_code("more_codes = 'marlin'", session="alice")
        bob = await first.execute_code(
            "print(list(get_ipython().history_manager.search('*more_' + 'codes*')))", session="bob"
        )
        assert bob.stdout == "[]\n"
        await first.close_session("alice")
        await first.close_session("bob")
    finally:
        process.stop()


async def test_serves_stderr_stays_quiet_after_a_few_executions(tmp_path: Path) -> None:
    process = await progtc_serve(tmp_path, "--pool-size", "2").start()
    try:
        client = AsyncProgtcClient(process.url, api_key=process.token)

        async def double(x: int) -> int:
            return 2 * x

        for n in range(4):
            result = await client.execute_code(
                f"from tools import double\nprint(await double({n}))", {"double": double}
            )
            assert result.stdout == f"{2 * n}\n"
        await client.execute_code("x = 1", session="s")
        await client.close_session("s")
        await settled(process, warm=2, leased=0)
    finally:
        process.stop()
    log = process.log_text()
    assert "listening on" in log
    assert "without encryption" not in log
    assert "UNKNOWN CONTROL MESSAGE TYPE" not in log
    noise = [line for line in log.splitlines() if line.startswith(("[W ", "[E ", "[IPKernelApp]"))]
    assert noise == []


async def test_max_kernels_holds_for_jupyters_own_kernel_api_too(tmp_path: Path) -> None:
    process = await progtc_serve(
        tmp_path, "--pool-size", "1", "--max-kernels", "2", "--pool-timeout", "1"
    ).start()
    try:
        await settled(process, warm=1)
        server = process.server()
        own = await server.request("POST", "api/kernels", {})  # a second kernel: room
        with pytest.raises(ServerError, match=r"at most 2 kernels.*--max-kernels") as caught:
            await server.request("POST", "api/kernels", {})
        assert caught.value.status == 503
        assert len(await server.kernels()) == 2

        await server.request("DELETE", f"api/kernels/{own['id']}")
        client = AsyncProgtcClient(process.url, api_key=process.token)
        result = await client.execute_code("print('room again')")
        assert result.stdout == "room again\n"
    finally:
        process.stop()


async def test_abandoned_sessions_are_ended_after_the_idle_timeout(tmp_path: Path) -> None:
    process = await progtc_serve(
        tmp_path,
        "--pool-size",
        "1",
        "--max-kernels",
        "3",
        "--pool-timeout",
        "none",
        "--session-idle-timeout",
        "1",
    ).start()
    try:
        server = process.server()
        for name in ("a", "b", "c"):  # leased, never connected to nor closed
            await server.request("POST", "progtc-kernel/api/kernels", {"session": name})
        await settled(process, sessions=[], leased=0)

        client = AsyncProgtcClient(process.url, api_key=process.token)
        result = await client.execute_code("print('served')")
        assert result.stdout == "served\n"
    finally:
        process.stop()


async def test_the_warm_pool_returns_to_its_size_after_requests_gave_up(tmp_path: Path) -> None:
    # Requests give up at once, long before a kernel started for them is warm.
    process = await progtc_serve(
        tmp_path, "--pool-size", "1", "--max-kernels", "6", "--pool-timeout", "0.01"
    ).start()
    try:
        await settled(process, warm=1)
        server = process.server()

        async def lease() -> str | None:
            try:
                answer = await server.request("POST", "progtc-kernel/api/kernels", {})
            except ServerError as exc:
                assert exc.status == 503
                return None
            return str(answer["id"])

        leased = await asyncio.gather(*(lease() for _ in range(5)))
        for kernel_id in filter(None, leased):
            await server.request("DELETE", f"progtc-kernel/api/kernels/{kernel_id}")
        await settled(process, warm=1, leased=0, waiting=0)

        async def one_kernel_left() -> bool:
            return len(await server.kernels()) == 1

        await until(one_kernel_left, "down to the one warm kernel")
    finally:
        process.stop()
