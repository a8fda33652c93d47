"""Tool calls on the host's own stdin connection, over local ZMQ and under nbclient.

A kernel sends a host's calls to that host alone, on its stdin socket (as ``input()``
sends an ``input_request``), where the host said it listens there and the call is
made on the kernel's main thread; anywhere else they go on iopub, which every client
receives. (Over a Jupyter Server websocket: tests/test_remote.py.)"""

from __future__ import annotations

import pytest

from progtc_kernel import LocalKernel, ToolBridge, ToolKernel, execute_notebook
from progtc_kernel.protocol import RegisterBody, body_problem

from .conftest import TOOLS
from .test_notebooks import notebook, printed
from .test_remote import ALTERNATING, SENT_ROUTES, alternating_order, in_order_seen

GATHER_100 = (
    "import asyncio\nfrom tools import get_weather\n"
    "done = await asyncio.gather(*(get_weather(str(i), 'X') for i in range(100)))\n"
    "print(len(set(done)), done[99])"
)


async def test_a_local_hosts_calls_take_its_stdin_connection(kernel_python: str) -> None:
    async with ToolKernel(TOOLS, kernel=LocalKernel(python=kernel_python)) as kernel:
        result = await kernel.execute(GATHER_100)
        assert result.stdout == "100 Weather in 99, X: Sunny, 22°C\n", result.error
        assert len(result.tool_calls) == 100
        assert (await kernel.execute(SENT_ROUTES)).stdout == "stdin\n"


async def test_output_and_calls_reach_a_local_host_in_the_cells_order(
    kernel_python: str,
) -> None:
    """A call on stdin could overtake output published on iopub just before it: such
    a call goes on iopub behind the output."""
    async with ToolKernel(TOOLS, kernel=LocalKernel(python=kernel_python)) as kernel:
        assert await in_order_seen(kernel, ALTERNATING) == alternating_order()
        assert (await kernel.execute(SENT_ROUTES)).stdout == "iopub\n"


async def test_calls_stay_on_iopub_for_a_host_that_does_not_ask(
    kernel_python: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ToolBridge, "calls_on_stdin", False)
    async with ToolKernel(TOOLS, kernel=LocalKernel(python=kernel_python)) as kernel:
        result = await kernel.execute(GATHER_100)
        assert result.stdout == "100 Weather in 99, X: Sunny, 22°C\n", result.error
        assert (await kernel.execute(SENT_ROUTES)).stdout == "iopub\n"


def test_a_notebooks_calls_skip_nbclients_client(kernel_python: str) -> None:
    """nbclient's own client never sees (nor decodes) a call: the bridge beside it
    gets each on its own stdin connection."""
    nb = execute_notebook(notebook(GATHER_100, SENT_ROUTES), tools=TOOLS, python=kernel_python)
    gathered, routes = nb.cells[1:]
    assert printed(gathered) == "100 Weather in 99, X: Sunny, 22°C\n"
    assert printed(routes) == "stdin\n"


def test_the_stdin_flag_is_an_optional_register_key() -> None:
    body: RegisterBody = {"tools": [], "tool_timeout": None, "max_in_flight": 8}
    assert body_problem("register", body) is None  # a host that does not ask
    assert body_problem("register", {**body, "calls_on_stdin": True}) is None
    assert body_problem("register", {**body, "calls_on_stdin": "yes"}) == (
        "'calls_on_stdin' must be true or false, not 'yes'"
    )
