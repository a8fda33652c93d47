"""``progtc-kernel serve --gateway-url``: the warm pool on a gateway, as on a cluster.

An Enterprise Gateway (from an environment of its own: it pins jupyter_server<2) and
a Kernel Gateway run on loopback, each with a kernelspec of this ipykernel line;
``serve`` hands the gateway every kernel and keeps nothing but the HTTP front.
progtc's own client (0.2.0, from PyPI) and ``AsyncProgtcClient`` run code with tool
calls through that front; leases, the execution ceiling, the step API and shutdown
are checked on the gateway's own list of kernels (``GET /api/kernels``). Nothing is
mocked.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from progtc_kernel import AsyncProgtcClient, ServerError

from .conftest import build_env, kernel_env, selected_lines
from .servers import (
    TOKEN,
    Frontend,
    JupyterProcess,
    enterprise_gateway,
    free_port,
    kernel_gateway,
    kernelspec,
    pool_status,
    until,
)
from .test_cli import progtc_kernel
from .test_progtc_http_api import PROGTC_CLIENT, events
from .test_progtc_steps import WEATHER, run_steps, weather_code

pytestmark = pytest.mark.timeout(300)

# What a kernel prints to say which kernel it is: jupyter_client names a kernel's
# connection file after its id, on every gateway.
WHICH_KERNEL = (
    "from ipykernel.kernelapp import IPKernelApp\n"
    "print(IPKernelApp.instance().connection_file.rsplit('kernel-', 1)[-1][:-5])\n"
)


def serve_on(gateway: JupyterProcess, home: Path, *args: str) -> JupyterProcess:
    """``progtc-kernel serve`` whose kernels are ``gateway``'s (kernelspec ``progtc``)."""
    port = free_port()
    return JupyterProcess(
        [
            sys.executable,
            "-m",
            "progtc_kernel.cli",
            "serve",
            "--port",
            str(port),
            "--api-key",
            TOKEN,
            "--gateway-url",
            gateway.url,
            "--kernel-name",
            "progtc",
            "--code-execution-timeout",
            "8",
            "--tool-call-timeout",
            "5",
            *args,
        ],
        port,
        home,
        env={"JUPYTER_GATEWAY_AUTH_TOKEN": gateway.token},
    )


def _enterprise_gateway(home: Path) -> JupyterProcess:
    python = build_env("enterprise-gateway", ["jupyter_enterprise_gateway==3.3.0"])
    # (listing kernels is off by default; the tests look at the gateway's list)
    return enterprise_gateway(home, python, "--EnterpriseGatewayApp.list_kernels=True")


def _kernel_gateway(home: Path) -> JupyterProcess:
    return kernel_gateway(home, "--JupyterWebsocketPersonality.list_kernels=True")


GATEWAYS = {"enterprise-gateway": _enterprise_gateway, "kernel-gateway": _kernel_gateway}


@pytest.fixture(scope="module", params=list(GATEWAYS))
async def gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[JupyterProcess]:
    """A gateway on loopback, its kernels on the newest ipykernel line tested."""
    home = tmp_path_factory.mktemp(request.param)
    line = selected_lines()[-1]
    kernelspec(home / "share", "progtc", await asyncio.to_thread(kernel_env, line))
    process = await (await asyncio.to_thread(GATEWAYS[request.param], home)).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
async def served(
    gateway: JupyterProcess, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[JupyterProcess]:
    process = await serve_on(gateway, tmp_path_factory.mktemp("serve-on-gateway")).start()
    yield process
    process.stop()


async def on_gateway(gateway: JupyterProcess) -> set[str]:
    """The ids of the kernels running on the gateway."""
    return {str(k["id"]) for k in await gateway.server().kernels()}


async def warm(served: JupyterProcess, size: int = 2) -> None:
    """Wait until the pool holds ``size`` warm kernels and nothing else."""

    async def ready() -> bool:
        pool = (await pool_status(served))["pool"]
        return bool(pool["warm"] == size and pool["starting"] == 0 and pool["leased"] == 0)

    await until(ready, f"{size} warm kernels", deadline=180)


async def test_progtcs_own_client_runs_code_with_tool_calls_on_the_gateway(
    gateway: JupyterProcess, served: JupyterProcess, tmp_path: Path
) -> None:
    python = await asyncio.to_thread(build_env, "progtc-0.2.0", ["progtc==0.2.0"])
    script = tmp_path / "client.py"
    script.write_text(PROGTC_CLIENT)
    done = await asyncio.to_thread(
        subprocess.run,
        [python, str(script), served.url, TOKEN],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] == ["success", "[3, 6]\n"]
    assert report["failed"] == ["runtime_error", None, "x\n", True]
    assert report["syntax"] == ["syntax_error", None]

    # serve's kernels are the gateway's: the ones it lists are all there, once the
    # used kernels' shutdowns settle (the gateway forgets a kernel before serve does).
    async def all_on_the_gateway() -> bool:
        mine = {str(k["id"]) for k in await served.server().kernels()}
        return bool(mine) and mine <= await on_gateway(gateway)

    await until(all_on_the_gateway, "every kernel of serve on the gateway", deadline=180)


async def test_each_execution_gets_a_warm_kernel_of_the_gateway_and_reaps_it(
    gateway: JupyterProcess, served: JupyterProcess
) -> None:
    async def add(a: int, b: int) -> int:
        return a + b

    ran_in = []
    async with AsyncProgtcClient(served.url, api_key=TOKEN) as client:
        for _ in range(2):
            await warm(served)
            warm_before = await on_gateway(gateway)
            result = await client.execute_code(
                WHICH_KERNEL + "from tools import add\nprint(await add(20, 22))",
                tool_call_handlers={"add": add},
            )
            assert result.type.value == "success", result.stderr
            kernel_id, answer = result.stdout.split()
            assert answer == "42"
            assert kernel_id in warm_before  # started and warmed before it was asked for
            ran_in.append(kernel_id)

            async def reaped(kernel_id: str = kernel_id) -> bool:
                return kernel_id not in await on_gateway(gateway)

            await until(reaped, "rid of the used kernel on the gateway")
    assert ran_in[0] != ran_in[1]  # a fresh kernel each time, never one reused


async def test_an_execution_past_the_ceiling_is_stopped_and_its_kernel_reaped(
    gateway: JupyterProcess, served: JupyterProcess
) -> None:
    await warm(served)
    async with httpx.AsyncClient(
        base_url=served.url, headers={"X-Progtc-API-Key": TOKEN}, timeout=120
    ) as http:
        body = {"tool_names": [], "code": WHICH_KERNEL + "import time\ntime.sleep(3600)"}
        async with http.stream("POST", "/execute-code", json=body) as response:
            assert response.status_code == 200, await response.aread()
            final = [message async for message in events(response)][-1]
    assert final["type"] == "timeout_error", final
    kernel_id = final["stdout"].split()[0]

    async def reaped() -> bool:
        return kernel_id not in await on_gateway(gateway)

    await until(reaped, "rid of the kernel that overstayed, on the gateway")


async def test_a_lease_whose_client_went_away_is_reaped_on_the_gateway(
    gateway: JupyterProcess, served: JupyterProcess
) -> None:
    await warm(served)
    front = served.server()
    lease = await front.request("POST", "progtc-kernel/api/kernels", {})
    kernel_id = str(lease["id"])
    # A client of the lease, over the front's kernel websocket (relayed to the gateway)
    async with Frontend(front, kernel_id) as client:
        assert (await client.run("print(6 * 7)")).strip() == "42"
    # ...that goes away without ending its lease: the gateway reports no connection.

    async def reaped() -> bool:
        return kernel_id not in await on_gateway(gateway)

    await until(reaped, "rid of the abandoned kernel, on the gateway")
    assert (await pool_status(served))["pool"]["leased"] == 0


async def test_a_step_api_run_lives_in_a_gateway_kernel_between_steps(
    gateway: JupyterProcess, served: JupyterProcess, tmp_path: Path
) -> None:
    await warm(served)
    ran = tmp_path / "ran"
    async with AsyncProgtcClient(served.url, api_key=TOKEN) as client:
        end, steps = await run_steps(client, weather_code(ran))
    assert end.type == "success", end.stderr
    assert steps == 3
    assert ran.read_text() == "started\n"  # it ran once: each step resumed it
    assert end.stdout == f"before the calls\n{WEATHER['London']} {WEATHER['Paris']}\n"
    await warm(served)  # its kernel is shut down, the pool back to its size
    mine = {str(k["id"]) for k in await served.server().kernels()}
    assert mine == await on_gateway(gateway)


async def test_max_kernels_holds_on_the_gateway_and_shutdown_leaves_no_kernel_there(
    gateway: JupyterProcess, tmp_path: Path
) -> None:
    before = await on_gateway(gateway)
    process = await serve_on(gateway, tmp_path, "--pool-size", "1", "--max-kernels", "2").start()
    try:
        await warm(process, size=1)
        front = process.server()
        await front.request("POST", "api/kernels", {"name": "progtc"})  # Jupyter's own API
        with pytest.raises(ServerError, match=r"at most 2 kernels.*--max-kernels") as caught:
            await front.request("POST", "api/kernels", {"name": "progtc"})
        assert caught.value.status == 503
        assert len(await on_gateway(gateway) - before) == 2
    finally:
        process.stop()  # SIGTERM, and the server exits once it shut its kernels down
    assert await on_gateway(gateway) == before


def test_the_fork_server_and_a_gateway_are_refused_together() -> None:
    for option in ("--fork-server", "--preload=numpy"):
        done = progtc_kernel("serve", "--gateway-url", "http://127.0.0.1:9", option, "--port", "1")
        assert done.returncode != 0
        assert "--gateway-url the gateway runs them: drop one or the other" in done.stderr
    done = progtc_kernel("serve", "--gateway-url", "gateway:8888", "--port", "1")
    assert done.returncode != 0 and "is not a gateway's URL" in done.stderr
