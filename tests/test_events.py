"""No polling where an event will do: interrupts with many calls pending, an idle
kernel that sleeps while a call is pending, and a kernel's end seen when it happens
(``KernelLifecycle.wait()``) for local, attached and remote kernels."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from jupyter_client.manager import AsyncKernelManager, KernelManager

from progtc_kernel import Timeout, ToolKernel
from progtc_kernel.kernels.jupyter_server import RemoteKernel
from progtc_kernel.kernels.local import AttachedKernel, LocalKernel, kernel_process

from .conftest import kernel_env, plain_kernel, selected_lines
from .servers import JupyterProcess, jupyter_server, kernelspec

PENDING = 100


class Stalls:
    """A host tool that waits until cancelled, counting the calls running and cancelled;
    ``all_running`` is set once ``expected`` run at once."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.running = 0
        self.cancelled = 0
        self.all_running = asyncio.Event()

    async def stall(self) -> None:
        """Wait until cancelled."""
        self.running += 1
        if self.running == self.expected:
            self.all_running.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1


def pid_of(lifecycle: LocalKernel | AttachedKernel) -> int:
    process = kernel_process(lifecycle.manager)
    assert process is not None
    return process.pid


async def test_an_interrupt_with_a_hundred_calls_pending_cancels_them_all(
    make_kernel: type[ToolKernel],
) -> None:
    stalls = Stalls(PENDING)
    # A tool timeout far away: the kernel keeps one timer for it, which the interrupt
    # must not wait for.
    async with make_kernel([stalls.stall], timeout=Timeout(None, tool_call=3600)) as kernel:
        run = asyncio.ensure_future(
            kernel.execute(
                "import asyncio, tools\n"
                f"await asyncio.gather(*[tools.stall() for _ in range({PENDING})])"
            )
        )
        await stalls.all_running.wait()
        await kernel.interrupt()
        result = await run
        assert result.error is not None and result.error.kind == "cancelled", result.error
        while stalls.running:  # the kernel's word on the calls comes on its own
            await asyncio.sleep(0)
        assert stalls.cancelled == PENDING

        # The kernel serves calls as before.
        result = await kernel.execute("import tools\nprint(await tools.twice(21))", tools=[twice])
        assert result.stdout == "42\n", result.error


async def twice(x: int) -> int:
    """Double it."""
    return 2 * x


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize(
    "code",
    ["import tools\nawait tools.stall()", "import tools\ndef run():\n    tools.stall()\nrun()"],
    ids=["awaited", "blocking"],
)
async def test_a_kernel_waiting_on_a_pending_call_goes_quiet(
    make_kernel: type[ToolKernel], code: str
) -> None:
    """The kernel's main thread stops waking up while its cell waits for a call (it
    woke every 0.1 s for the call's timeout and for Ctrl-C): once it has settled, two
    readings of its wake-up count half a second apart agree."""
    stalls = Stalls(1)
    async with make_kernel([stalls.stall], timeout=Timeout(tool_call=3600)) as kernel:
        pid = pid_of(kernel.lifecycle)  # type: ignore[arg-type]
        run = asyncio.ensure_future(kernel.execute(code))
        await stalls.all_running.wait()
        readings = [main_thread_wakeups(pid)]
        while len(readings) < 10 and (len(readings) < 2 or readings[-1] != readings[-2]):
            await asyncio.sleep(0.5)  # a window observed, not a synchronization
            readings.append(main_thread_wakeups(pid))
        await kernel.interrupt()
        await run
    assert readings[-1] == readings[-2], f"the kernel kept waking up: {readings}"


def main_thread_wakeups(pid: int) -> int:
    """How often the process's main thread has gone to sleep (and been woken)."""
    for line in Path(f"/proc/{pid}/task/{pid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches in /proc")


class NeverPolled(LocalKernel):
    """A local kernel that fails the test if anyone asks whether it is alive."""

    async def is_alive(self) -> bool:
        raise AssertionError("is_alive() was polled")


async def test_a_kernel_killed_mid_run_is_reported_dead_without_polling(
    kernel_python: str,
) -> None:
    stalls = Stalls(1)
    lifecycle = NeverPolled(python=kernel_python)
    async with ToolKernel([stalls.stall], kernel=lifecycle, timeout=None) as kernel:
        run = asyncio.ensure_future(kernel.execute("import tools\nawait tools.stall()"))
        await stalls.all_running.wait()
        os.kill(pid_of(lifecycle), signal.SIGKILL)
        result = await run
        assert result.error is not None and result.error.kind == "kernel_died", result.error
        # Ours, so restarted for the next run.
        assert (await kernel.execute("print('back')")).stdout == "back\n"


async def test_wait_returns_when_a_local_kernel_dies_and_again_after_a_restart(
    kernel_python: str,
) -> None:
    lifecycle = LocalKernel(python=kernel_python)
    await lifecycle.start()
    try:
        for _ in range(2):  # the kernel, then its replacement
            gone = asyncio.ensure_future(lifecycle.wait())
            os.kill(pid_of(lifecycle), signal.SIGKILL)
            await gone
            assert not await lifecycle.is_alive()
            await lifecycle.wait()  # gone already: at once
            await lifecycle.restart()
    finally:
        await lifecycle.shutdown()
    await lifecycle.wait()  # none runs: at once


@pytest.fixture
async def someone_elses(kernel_python: str, tmp_path: Path) -> AsyncIterator[object]:
    """A plain kernel someone else started (its manager is theirs)."""
    km = await plain_kernel(kernel_python, tmp=tmp_path)
    try:
        yield km
    finally:
        await km.shutdown_kernel(now=True)


async def test_wait_returns_when_a_kernel_attached_by_its_connection_file_dies(
    someone_elses: object,
) -> None:
    km = someone_elses
    assert isinstance(km, KernelManager)
    lifecycle = AttachedKernel(km.connection_file)
    await lifecycle.start()
    try:
        await lifecycle.until_connected()
        assert await lifecycle.is_alive()
        gone = asyncio.ensure_future(lifecycle.wait())
        os.kill(kernel_process(km).pid, signal.SIGKILL)  # type: ignore[union-attr]
        await gone
        assert not await lifecycle.is_alive()
    finally:
        await lifecycle.shutdown()


async def test_wait_returns_when_a_kernel_attached_by_its_manager_dies(
    someone_elses: object,
) -> None:
    km = someone_elses
    assert isinstance(km, KernelManager)
    lifecycle = AttachedKernel(dict(km.get_connection_info()), manager=km)
    await lifecycle.start()
    try:
        gone = asyncio.ensure_future(lifecycle.wait())
        os.kill(kernel_process(km).pid, signal.SIGKILL)  # type: ignore[union-attr]
        await gone
    finally:
        await lifecycle.shutdown()


async def test_a_kernel_attached_by_its_connection_file_reports_its_death_in_a_run(
    someone_elses: object,
) -> None:
    km = someone_elses
    assert isinstance(km, KernelManager)
    stalls = Stalls(1)
    lifecycle = AttachedKernel(km.connection_file)
    async with ToolKernel([stalls.stall], kernel=lifecycle, timeout=None) as kernel:
        await lifecycle.until_connected()
        run = asyncio.ensure_future(kernel.execute("import tools\nawait tools.stall()"))
        await stalls.all_running.wait()
        os.kill(kernel_process(km).pid, signal.SIGKILL)  # type: ignore[union-attr]
        result = await run
        assert result.error is not None and result.error.kind == "kernel_died", result.error


# -- remote kernels: their server tells ------------------------------------------------


@pytest.fixture(scope="module", params=selected_lines(), ids=lambda line: f"ipykernel-{line}")
async def jupyter(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[JupyterProcess]:
    """A Jupyter Server on loopback whose kernelspec ``progtc`` runs this ipykernel line."""
    home = tmp_path_factory.mktemp("jupyter")
    kernelspec(home / "share", "progtc", kernel_env(request.param))
    process = await jupyter_server(home).start()
    yield process
    process.stop()


async def test_wait_returns_when_a_remote_kernel_dies_and_again_after_the_server_restarts_it(
    jupyter: JupyterProcess,
) -> None:
    async with ToolKernel(
        [], kernel=RemoteKernel(jupyter.server(), kernel_name="progtc")
    ) as kernel:
        lifecycle = kernel.lifecycle
        assert isinstance(lifecycle, RemoteKernel)
        for _ in range(2):  # the kernel, then the one its server started in its place
            pid = int((await kernel.execute("import os\nprint(os.getpid())")).stdout)
            gone = asyncio.ensure_future(lifecycle.wait())
            os.kill(pid, signal.SIGKILL)
            await gone  # the server's restarter saw it die, and said so
            assert not await lifecycle.is_alive()
            died = await kernel.execute("1")  # learns of it, and restarts for the next run
            assert died.error is not None and died.error.kind == "kernel_died", died.error


async def test_wait_returns_when_someone_shuts_a_remote_kernel_down(
    jupyter: JupyterProcess,
) -> None:
    server = jupyter.server()
    kernel_id = str((await server.request("POST", "api/kernels", {"name": "progtc"}))["id"])
    async with ToolKernel([], kernel=RemoteKernel(server, kernel_id=kernel_id)) as kernel:
        gone = asyncio.ensure_future(kernel.lifecycle.wait())
        await server.request("DELETE", f"api/kernels/{kernel_id}")
        await gone  # the kernel's last words, before the server closes the websocket
        result = await kernel.execute("1")
        assert result.error is not None and result.error.kind == "kernel_died"


async def test_a_kernel_given_that_was_restarted_where_it_runs_is_used_again(
    someone_elses: object,
) -> None:
    km = someone_elses
    assert isinstance(km, AsyncKernelManager)
    lifecycle = AttachedKernel(km.connection_file)
    async with ToolKernel([], kernel=lifecycle) as kernel:
        await lifecycle.until_connected()
        await km.restart_kernel(now=True)
        await lifecycle.wait()  # the old process ended
        await lifecycle.until_connected()  # its successor listens on the same ports
        assert (await kernel.execute("print('back')")).stdout == "back\n"
