"""Runs that outlive their host: the kernel runs in this test process (a kernel
manager of ours, or a Jupyter Server's kernel), each host is a process of its own
(tests/resumable_host.py) that attaches to it, and the first host is killed with
SIGKILL while the run waits on a tool call. Nothing is mocked: real kernels on both
ipykernel lines, real host processes, a real Jupyter Server."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import AsyncKernelManager

from progtc_kernel.kernel_side.bridge import MAY_HAVE_RUN

from .servers import JupyterProcess, jupyter_server, kernelspec

# The kernel side differs by line: where the shell channel runs, what the host's
# notices take to reach it.
pytestmark = pytest.mark.ipykernel_lines

HOST = Path(__file__).with_name("resumable_host.py")
GONE = "the host disconnected (its connection to the kernel closed)"
LONG = 120  # seconds a host process may take to say something: a failure guard only


@pytest.fixture
async def own_client(own_kernel: AsyncKernelManager) -> AsyncIterator[Any]:
    """A client of the test's own on the kernel: it watches the run's output on iopub."""
    client = own_kernel.client()
    client.start_channels()
    await client.wait_for_ready()
    try:
        yield client
    finally:
        client.stop_channels()


class Host:
    """One host process (tests/resumable_host.py)."""

    def __init__(self, process: asyncio.subprocess.Process, stderr: Path) -> None:
        self.process = process
        self.stderr = stderr

    @classmethod
    async def start(cls, role: str, kernel: str, workdir: Path, *args: str) -> Host:
        stderr = workdir / f"{role}.stderr"
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(HOST),
            role,
            kernel,
            str(workdir),
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr.open("ab"),
        )
        return cls(process, stderr)

    async def line(self) -> str:
        assert self.process.stdout is not None
        return (await asyncio.wait_for(self.process.stdout.readline(), LONG)).decode().strip()

    async def say(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{line}\n".encode())
        await self.process.stdin.drain()

    async def kill(self) -> None:
        self.process.kill()  # SIGKILL: no goodbye
        await self.process.wait()

    async def json_lines(self) -> list[dict[str, Any]]:
        """What a host that ends by itself printed, one JSON value a line."""
        out, _ = await asyncio.wait_for(self.process.communicate(), LONG)
        assert self.process.returncode == 0, self.stderr.read_text()
        return [json.loads(line) for line in out.decode().splitlines()]


async def first_host_killed_while_waiting(
    kernel: str, workdir: Path, scenario: str, grace: float
) -> None:
    first = await Host.start("first", kernel, workdir, scenario, str(grace))
    try:
        assert await first.line() == "waiting"
    finally:
        await first.kill()


async def first_host_killed_asking(kernel: str, workdir: Path) -> str:
    """A first host starts a run whose call waits for approval, and is killed then;
    returns the run's id."""
    first = await Host.start("first", kernel, workdir, "approval", "600")
    try:
        said, run = (await first.line()).split()
        assert said == "run"
        assert await first.line() == "waiting"
    finally:
        await first.kill()
    return run


async def take_over(kernel: str, workdir: Path) -> tuple[list[str], dict[str, Any]]:
    """A second host attaches: the runs it took over, and the first one's result."""
    held, result = await (await Host.start("second", kernel, workdir)).json_lines()
    return held["held"], result


async def run_output(client: Any, until: str) -> str:
    """The output the kernel publishes (to whoever listens), up to a line with ``until``."""
    text = ""
    while until not in text:
        msg = await client.get_iopub_msg(timeout=LONG)
        if msg["msg_type"] == "stream":
            text += msg["content"]["text"]
    return text


def runs_of(workdir: Path, tool: str) -> int:
    path = workdir / tool
    return int(path.read_text()) if path.exists() else 0


# -- a host killed, another one attaching -------------------------------------------


async def test_a_call_queued_by_a_killed_host_is_answered_by_the_next_one(
    own_kernel: AsyncKernelManager, tmp_path: Path
) -> None:
    kernel = own_kernel.connection_file
    await first_host_killed_while_waiting(kernel, tmp_path, "queued", 600)

    held, result = await take_over(kernel, tmp_path)

    assert len(held) == 1
    assert result == {
        "stdout": f"HostDisconnectedError {GONE}; {MAY_HAVE_RUN}\ncount 1\n",
        "ok": True,
        "calls": [["count", True]],
    }
    assert runs_of(tmp_path, "count") == 1  # queued by the first host: run by the second
    assert runs_of(tmp_path, "busy") == 1  # running in the first host: not run again


async def test_a_call_made_while_no_host_is_attached_waits_for_the_next_one(
    own_kernel: AsyncKernelManager, tmp_path: Path
) -> None:
    kernel = own_kernel.connection_file
    await first_host_killed_while_waiting(kernel, tmp_path, "later", 600)

    held, result = await take_over(kernel, tmp_path)

    assert len(held) == 1
    # What the run printed while no host was attached (busy's error) is not replayed.
    assert result["stdout"] == "count 1\n"
    assert (runs_of(tmp_path, "busy"), runs_of(tmp_path, "count")) == (1, 1)


async def test_a_host_that_closes_leaves_its_resumable_run_held(
    own_kernel: AsyncKernelManager, tmp_path: Path
) -> None:
    kernel = own_kernel.connection_file
    first = await Host.start("close", kernel, tmp_path, "queued", "600")
    # Its stream ends, saying where the run went; the run goes on in the kernel.
    assert await first.json_lines() == [{"error": "HostClosedError"}]

    held, result = await take_over(kernel, tmp_path)

    assert len(held) == 1
    assert result["stdout"].endswith("count 1\n")
    assert (runs_of(tmp_path, "busy"), runs_of(tmp_path, "count")) == (1, 1)


async def test_a_call_waiting_for_approval_is_approved_by_the_next_host(
    own_kernel: AsyncKernelManager, tmp_path: Path
) -> None:
    kernel = own_kernel.connection_file
    run = await first_host_killed_asking(kernel, tmp_path)

    second = await Host.start("second", kernel, tmp_path, "approval")
    held, asked, result = await second.json_lines()

    assert held == {"held": [run]}
    assert asked == {"asked": "count"}  # asked anew, by the new host's policy
    assert result == {"stdout": "count 1\n", "calls": [["count", True]]}
    assert runs_of(tmp_path, "count") == 1


async def test_a_host_killed_between_approving_and_running_a_call_never_runs_it_twice(
    own_kernel: AsyncKernelManager, tmp_path: Path
) -> None:
    """The first host approves the call and is killed at once, before or after the
    kernel counted the call as started: either the next host runs it (the first one
    never did), or the code hears it may or may not have run (and may end before the
    next host comes). Never both."""
    kernel = own_kernel.connection_file
    first = await Host.start("first", kernel, tmp_path, "decided", "600")
    try:
        said, run = (await first.line()).split()
        assert said == "run"
        assert await first.line() == "waiting"
        await first.say("approve")
        assert await first.line() == "decided"
    finally:
        await first.kill()

    second = await Host.start("second", kernel, tmp_path, "approval")
    held, *rest = await second.json_lines()

    if held == {"held": []}:  # counted as started there: the code heard so, and ended
        assert rest == []
        assert runs_of(tmp_path, "count") <= 1
        return
    assert held == {"held": [run]}
    result = rest[-1]
    if result["calls"]:  # the kernel sent the call again: the first host never ran it
        assert result == {"stdout": "count 1\n", "calls": [["count", True]]}
        assert runs_of(tmp_path, "count") == 1
    else:  # the kernel counted it as started there
        assert result["stdout"].startswith("HostDisconnectedError")
        assert MAY_HAVE_RUN in result["stdout"]
        assert runs_of(tmp_path, "count") <= 1


# -- what is not held --------------------------------------------------------------


async def test_held_calls_fail_when_no_host_comes_within_the_grace_period(
    own_kernel: AsyncKernelManager, own_client: Any, tmp_path: Path
) -> None:
    await first_host_killed_while_waiting(own_kernel.connection_file, tmp_path, "queued", 1)

    output = await run_output(own_client, until="count")

    assert output.endswith(
        "count the host of this resumable run went, and no host serving this tool came "
        "back within 1 s (the run's grace period)\n"
    )
    assert runs_of(tmp_path, "count") == 0


async def test_a_run_not_resumable_fails_its_calls_when_its_host_dies(
    own_kernel: AsyncKernelManager, own_client: Any, tmp_path: Path
) -> None:
    await first_host_killed_while_waiting(own_kernel.connection_file, tmp_path, "queued", 0)

    output = await run_output(own_client, until="count")

    assert output == f"HostDisconnectedError {GONE}\ncount {GONE}\n"
    assert runs_of(tmp_path, "count") == 0


# -- on a Jupyter Server ------------------------------------------------------------


@pytest.fixture
async def server(kernel_python: str, tmp_path: Path) -> AsyncIterator[JupyterProcess]:
    kernelspec(tmp_path / "server" / "share", "progtc", kernel_python)
    process = await jupyter_server(tmp_path / "server").start()
    try:
        yield process
    finally:
        process.stop()


async def test_a_run_on_a_jupyter_server_kernel_outlives_its_host(
    server: JupyterProcess, tmp_path: Path
) -> None:
    rest = server.server()
    kernel_id = str((await rest.request("POST", "api/kernels", {"name": "progtc"}))["id"])
    kernel = f"{server.url}#{server.token}#{kernel_id}"
    run = await first_host_killed_asking(kernel, tmp_path)

    second = await Host.start("second", kernel, tmp_path, "approval")
    held, asked, result = await second.json_lines()

    assert (held, asked) == ({"held": [run]}, {"asked": "count"})
    assert result == {"stdout": "count 1\n", "calls": [["count", True]]}
    assert runs_of(tmp_path, "count") == 1
