"""``progtc-kernel serve`` under load: a request that waits for a kernel keeps its
client's connection alive, so that progtc's own client (whose read timeout is its
``timeout``, httpx's 5 s by default) does not give up on a busy server."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from progtc_kernel import AsyncProgtcClient, JupyterServer

from .conftest import build_env
from .servers import JupyterProcess, pool_status, until
from .test_progtc_server import progtc_serve

pytestmark = pytest.mark.timeout(300)

PROGTC = "0.2.0"

# progtc's client: one execution holds the only kernel on a tool that waits for a line
# on stdin; a second one, with a 5 s timeout, waits for that kernel meanwhile.
TWO_CLIENTS = """
import asyncio, json, sys
from progtc import AsyncProgtcClient

async def main():
    url, key = sys.argv[1], sys.argv[2]
    client = AsyncProgtcClient(base_url=url, api_key=key)
    holding = asyncio.Event()

    async def hold():
        holding.set()
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        return "released"

    async def outcome(name, code, tools, timeout):
        try:
            result = await client.execute_code(code, tools, timeout=timeout)
            answer = [result.type.value, result.stdout]
        except Exception as exc:
            answer = [type(exc).__name__, str(exc)]
        print(json.dumps({name: answer}), flush=True)

    first = asyncio.ensure_future(
        outcome("first", "from tools import hold\\nprint(await hold())", {"hold": hold}, 60)
    )
    await holding.wait()
    print("holding", flush=True)
    await outcome("second", "print('second')", {}, 5)
    await first

asyncio.run(main())
"""


async def test_a_request_waiting_for_a_kernel_is_kept_alive(tmp_path: Path) -> None:
    python = await asyncio.to_thread(build_env, f"progtc-{PROGTC}", [f"progtc=={PROGTC}"])
    process = await progtc_serve(
        tmp_path, "--pool-size", "1", "--max-kernels", "1", "--pool-timeout", "none"
    ).start()
    script = tmp_path / "two_clients.py"
    script.write_text(TWO_CLIENTS)
    child = subprocess.Popen(
        [python, str(script), process.url, process.token],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdin is not None and child.stdout is not None
        assert await asyncio.to_thread(child.stdout.readline) == b"holding\n"
        # the first outcome printed: the second's, if it gave up waiting
        second = asyncio.ensure_future(asyncio.to_thread(child.stdout.readline))

        async def waited_past_the_clients_timeout() -> bool:
            # Keep-alives go out every LEASE_KEEPALIVE (2 s) after 2 s of quiet: the
            # third is sent more than 5 s after the second request began to wait.
            api = (await pool_status(process))["progtc_api"]
            return bool(api.get("lease_keepalives", 0) >= 3)

        kept_alive = asyncio.ensure_future(until(waited_past_the_clients_timeout, "kept alive"))
        # (without keep-alives, the second client gives up first and says why)
        await asyncio.wait({second, kept_alive}, return_when=asyncio.FIRST_COMPLETED)
        kept_alive.cancel()
        child.stdin.write(b"go\n")
        child.stdin.flush()
        outcomes = {**json.loads(await second)}
        outcomes.update(json.loads(await asyncio.to_thread(child.stdout.readline)))
        assert outcomes == {
            "first": ["success", "released\n"],
            "second": ["success", "second\n"],
        }
        assert await asyncio.to_thread(child.wait, 60) == 0
    finally:
        child.kill()
        child.wait()
        process.stop()


async def held_pool(tmp_path: Path) -> tuple[JupyterProcess, asyncio.Event, asyncio.Task[Any]]:
    """A server whose only kernel an execution holds until the event is set."""
    process = await progtc_serve(
        tmp_path, "--pool-size", "1", "--max-kernels", "1", "--pool-timeout", "none"
    ).start()
    holder = AsyncProgtcClient(process.url, api_key=process.token)
    started, release = asyncio.Event(), asyncio.Event()

    async def hold() -> str:
        started.set()
        await release.wait()
        return "released"

    holding = asyncio.ensure_future(
        holder.execute_code("from tools import hold\nprint(await hold())", {"hold": hold})
    )
    await started.wait()
    return process, release, holding


async def test_a_lease_request_waiting_for_a_kernel_outlasts_the_clients_timeout(
    tmp_path: Path,
) -> None:
    process, release, holding = await held_pool(tmp_path)
    try:
        # This client's requests may take 4 s; the kernel comes free later than that.
        server = JupyterServer(process.url, token=process.token, start_timeout=4)
        second = asyncio.ensure_future(AsyncProgtcClient(server).execute_code("print('second')"))

        async def waited_past_the_clients_timeout() -> bool:
            # Each "still waiting" answer comes 2 s after the ask: the third is sent
            # more than 4 s after the request began to wait.
            asks = (await pool_status(process))["lease_requests"]["answered_pending"]
            return bool(asks >= 3)

        kept_waiting = asyncio.ensure_future(until(waited_past_the_clients_timeout, "waiting"))
        # (answered once, the request would time out first and say so)
        await asyncio.wait({second, kept_waiting}, return_when=asyncio.FIRST_COMPLETED)
        kept_waiting.cancel()
        release.set()
        assert (await holding).stdout == "released\n"
        assert (await second).stdout == "second\n"
    finally:
        release.set()
        process.stop()


async def test_a_client_that_stops_waiting_for_a_kernel_gives_up_its_place(
    tmp_path: Path,
) -> None:
    process, release, holding = await held_pool(tmp_path)
    try:
        client = AsyncProgtcClient(process.url, api_key=process.token)
        waiting = asyncio.ensure_future(client.execute_code("print('never')"))

        async def lease_requests_waiting(count: int) -> bool:
            status = await pool_status(process)
            return bool(status["lease_requests"]["waiting"] == status["pool"]["waiting"] == count)

        await until(lambda: lease_requests_waiting(1), "waiting")
        waiting.cancel()
        await until(lambda: lease_requests_waiting(0), "given up")
        release.set()
        assert (await holding).stdout == "released\n"
        again = await client.execute_code("print('the kernel is free again')")
        assert again.stdout == "the kernel is free again\n"
    finally:
        release.set()
        process.stop()
