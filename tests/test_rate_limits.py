"""Output over a Jupyter Server's iopub rate limits, with its default limits.

The server drops every iopub message past its limits (1 MB/s of stream output, 1,000
messages/s, over a 3 s window) until the window has passed: tool calls travel there
too. Calls still arrive, each served once, and output the server dropped is said.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from progtc_kernel import AsyncProgtcClient, RemoteKernel, ToolKernel
from progtc_kernel.timeouts import Timeout

from .servers import JupyterProcess, jupyter_server, kernelspec

# How output is flushed before a call differs by ipykernel line.
pytestmark = [pytest.mark.timeout(300), pytest.mark.ipykernel_lines]

NOTICE = "IOPub data rate exceeded."


@pytest.fixture(scope="module")
async def served(
    kernel_python: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[JupyterProcess]:
    home: Path = tmp_path_factory.mktemp("rate-limits")
    kernelspec(home / "share", "progtc", kernel_python)
    process = await jupyter_server(home).start()
    yield process
    process.stop()


@pytest.fixture
async def kernel(served: JupyterProcess) -> AsyncIterator[ToolKernel]:
    served_calls.clear()
    # A call waits in the kernel while the server drops messages (a few of its 3 s
    # windows on a busy machine): give it time enough that only a lost call times out.
    async with ToolKernel(
        [ping],
        kernel=RemoteKernel(served.server(), kernel_name="progtc"),
        timeout=Timeout(180, tool_call=60),
    ) as kernel:
        yield kernel


served_calls: list[str] = []


def ping(word: str) -> str:
    served_calls.append(word)
    return word.upper()


async def test_a_call_after_output_over_the_data_rate_limit_reaches_the_host(
    kernel: ToolKernel,
) -> None:
    result = await kernel.execute(
        "print('x' * 2_500_000, flush=True)\n"
        "print('y' * 1_000_000, flush=True)\n"
        "from tools import ping\n"
        "print(await ping('after'))"
    )
    assert result.ok, result.error
    assert result.stdout.endswith("AFTER\n")
    assert [call.name for call in result.tool_calls] == ["ping"]
    assert served_calls == ["after"]  # served once, though the kernel sent it again
    assert result.output_dropped and NOTICE in result.stderr


async def test_calls_after_many_flushed_writes_reach_the_host(kernel: ToolKernel) -> None:
    result = await kernel.execute(
        "for i in range(20_000):\n"
        "    print(i, flush=True)\n"
        "from tools import ping\n"
        "import asyncio\n"
        "print(await asyncio.gather(ping('a'), ping('b')))"
    )
    assert result.ok, result.error
    assert result.stdout.endswith("['A', 'B']\n")
    assert sorted(served_calls) == ["a", "b"]


async def test_output_the_server_dropped_is_said_in_the_result(served: JupyterProcess) -> None:
    client = AsyncProgtcClient(served.url, api_key=served.token, kernel_name="progtc")
    result = await client.execute_code("print('z' * 5_000_000)\nprint('end')")
    assert result.stdout == ""  # the server dropped it all
    assert NOTICE in result.stderr and "iopub_data_rate_limit" in result.stderr

    async with ToolKernel(kernel=RemoteKernel(served.server(), kernel_name="progtc")) as kernel:
        small = await kernel.execute("print('fine')")
        assert small.stdout == "fine\n" and not small.output_dropped
        cut = await kernel.execute("print('z' * 5_000_000)")
        assert cut.ok and cut.output_dropped
