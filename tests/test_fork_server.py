"""Kernels forked from a template (``LocalKernel(fork_server=True)``, the
``progtc-fork-server`` provisioner) behave as spawned ones, and leave nothing behind.

The lifecycle tests of ``test_tool_kernel.py``, ``test_events.py`` and
``test_history.py`` run here again, on forked kernels: ``$PROGTC_KERNEL_FORK_SERVER``
is ``1`` for every test of this module, which makes ``LocalKernel`` fork by default,
and each test checks that it did fork (or, for a test that starts no local kernel of
its own, that it spawned none either)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

from progtc_kernel import KernelStartError, ToolKernel
from progtc_kernel.kernels.fork_server import (
    ForkServerProvisioner,
    fork_server_metadata,
    kernels_forked,
    running_templates,
    stop_templates,
)
from progtc_kernel.kernels.fork_server.process import TEMPLATE_SCRIPT, template_for
from progtc_kernel.kernels.local import LocalKernel, single_spec

from .conftest import TOOLS, build_env
from .test_events import (  # noqa: F401  # run again here, on forked kernels
    test_a_kernel_killed_mid_run_is_reported_dead_without_polling,
    test_an_interrupt_with_a_hundred_calls_pending_cancels_them_all,
    test_wait_returns_when_a_local_kernel_dies_and_again_after_a_restart,
)
from .test_history import (  # noqa: F401
    ipython_dir,
    test_a_tool_kernel_keeps_its_history_in_memory,
    test_a_tool_kernel_writes_history_where_asked,
)
from .test_tool_kernel import (  # noqa: F401
    test_kernel_death_cancels_the_tools_still_running,
    test_kernel_death_is_an_error_not_a_hang,
    test_reset_clears_state_but_keeps_tools,
    test_restart_gives_a_fresh_process_with_the_same_tools,
    test_result_holds_stdout_stderr_and_rich_outputs,
    test_state_persists_between_executions,
    test_stream_yields_live_events_in_order,
    test_timeout_during_a_tool_call,
    test_timeout_interrupts_and_keeps_partial_output,
)

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the fork server forks on Linux only"
)


def forks() -> int:
    return kernels_forked()


def live_processes() -> dict[int, bytes]:
    """Every process of ours: pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found[int(entry.name)] = (entry / "cmdline").read_bytes()
                status = (entry / "status").read_text()
            except OSError:
                continue
            if "\nState:\tZ" in status:  # ended, not yet reaped by its parent
                del found[int(entry.name)]
    return found


def parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:  # ended since
        return None


def kernels_of(templates: list[Any]) -> list[int]:
    """The processes a template forked that are still there: running, or ended and not
    reaped (a zombie counts: the template must reap each kernel)."""
    pids = {template.pid for template in templates}
    every = [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    return [pid for pid in every if parent_of(pid) in pids]


@pytest.fixture(autouse=True)
def _forked_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROGTC_KERNEL_FORK_SERVER", "1")


FORKS_NOTHING = {
    "test_the_provisioner_is_registered_for_kernelspecs",
    "test_a_different_start_up_environment_is_spawned",
    "test_the_kernel_dies_with_its_manager",  # another process forks it
    "test_preload_needs_the_fork_server_and_module_names",
    "test_serve_forks_its_pool_unless_told_not_to",  # the server's process forks
}


@pytest.fixture(autouse=True)
def _each_test_forks_and_leaves_no_kernel(request: pytest.FixtureRequest) -> Iterator[None]:
    before = forks()
    yield
    left = set(kernels_of(running_templates())) - module_kernel_pids()
    assert left == set(), "a forked kernel outlived its test"
    if "kernel" in request.fixturenames:
        return  # the module's kernel was forked: see its fixture
    if request.node.originalname not in FORKS_NOTHING:
        assert forks() > before, "the test's kernels were spawned, not forked"


@pytest.fixture(autouse=True, scope="module")
def _no_template_outlives_the_module() -> Iterator[None]:
    yield
    stop_templates()
    left = [
        pid
        for pid, cmd in live_processes().items()
        if TEMPLATE_SCRIPT.encode() in cmd and parent_of(pid) == os.getpid()
    ]
    assert left == []


@pytest.fixture(scope="module")
async def kernel(kernel_python: str) -> AsyncIterator[ToolKernel]:
    """One forked kernel per module and line (the lifecycle tests above use it)."""
    lifecycle = LocalKernel(python=kernel_python, fork_server=True)
    async with ToolKernel(TOOLS, kernel=lifecycle, timeout=60) as k:
        MODULE_KERNELS.append(lifecycle)
        yield k
        assert lifecycle.manager.provisioner.forked  # type: ignore[union-attr]
    MODULE_KERNELS.remove(lifecycle)


#: The module's kernels: they (and their restarts) outlive each test.
MODULE_KERNELS: list[LocalKernel] = []


def module_kernel_pids() -> set[int]:
    provisioners = [lifecycle.manager.provisioner for lifecycle in MODULE_KERNELS]
    return {int(p.pid) for p in provisioners if p is not None and p.pid}  # type: ignore[attr-defined]


@pytest.fixture
def make_kernel(kernel_python: str) -> Callable[..., ToolKernel]:
    def make(tools: Any = TOOLS, **options: Any) -> ToolKernel:
        options.setdefault("kernel", LocalKernel(python=kernel_python, fork_server=True))
        return ToolKernel(tools, **options)

    return make


def fork_spec(python: str, preload: list[str] | None = None) -> KernelSpecManager:
    return single_spec(python, fork_server_metadata(preload or []))  # type: ignore[no-any-return]


async def started(python: str, **options: Any) -> AsyncKernelManager:
    km = AsyncKernelManager(kernel_spec_manager=fork_spec(python), kernel_name="progtc")
    await km.start_kernel(**options)
    return km


async def run(km: AsyncKernelManager, code: str) -> str:
    """stdout of ``code`` run on ``km``'s kernel."""
    client = km.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=120)
        out: list[str] = []

        def collect(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                out.append("\n".join(msg["content"]["traceback"]))

        await client.execute_interactive(code, output_hook=collect, timeout=120)
        return "".join(out)
    finally:
        client.stop_channels()


# -- the provisioner, as any jupyter_client user gets it ------------------------------


def test_the_provisioner_is_registered_for_kernelspecs() -> None:
    from jupyter_client.provisioning.factory import KernelProvisionerFactory

    factory = KernelProvisionerFactory.instance()
    assert factory.get_provisioner_entries()["progtc-fork-server"] == (
        "progtc_kernel.kernels.fork_server:ForkServerProvisioner"
    )


@pytest.mark.ipykernel_lines
async def test_a_kernel_manager_gets_a_forked_kernel_of_its_own(kernel_python: str) -> None:
    km = await started(kernel_python)
    try:
        provisioner = km.provisioner
        assert isinstance(provisioner, ForkServerProvisioner) and provisioner.forked
        assert (await provisioner.get_provisioner_info())["forked"] is True
        said = await run(km, "import os, sys; print(os.getppid(), os.getsid(0) == os.getpid())")
        template = template_for(kernel_python)
        assert said.split() == [str(template.pid), "True"]  # its own session
        # ps shows it as the spawned kernel it stands for.
        cmdline = Path(f"/proc/{provisioner.pid}/cmdline").read_bytes().rstrip(b"\0")
        assert cmdline.split(b"\0")[1:4] == [b"-m", b"ipykernel_launcher", b"-f"]
        assert km.connection_file.encode() in cmdline
        assert await km.is_alive()
    finally:
        await km.shutdown_kernel(now=True)
    assert not await km.is_alive()


@pytest.mark.ipykernel_lines
async def test_the_pools_warm_up_loads_the_extension_whether_installed_or_not(
    kernel_python: str, bare_kernel_python: str, tmp_path: Path
) -> None:
    # The warm-up's one-line cell loads an installed copy that is the host's; a kernel
    # without one gets the full cell, which brings the kernel side along. (They run
    # in tmp_path: in the checkout, progtc_kernel is importable from the folder.)
    from progtc_kernel.server.pool import warm_up

    loaded = (
        "import sys\n"
        "extension = sys.modules['progtc_kernel.kernel_side.extension']\n"
        "print(extension.current() is not None, getattr(extension, '__injected__', False))"
    )
    for python, injected in ((kernel_python, False), (bare_kernel_python, True)):
        km = await started(python, cwd=str(tmp_path))
        try:
            await warm_up(km)
            assert await run(km, loaded) == f"True {injected}\n"
        finally:
            await km.shutdown_kernel(now=True)


async def test_the_template_holds_no_thread_loop_context_or_stray_descriptor(
    kernel_python: str,
) -> None:
    km = await started(kernel_python)
    try:
        template = template_for(kernel_python)
        state = template.state()
        assert state["problems"] == []
        # stdio, then the listener, the selector, the wakeup pipe's two ends, each
        # kernel's lifeline and the connection this question came on: nothing else.
        fds = {int(fd): link for fd, link in state["fds"].items()}
        lifelines = len(state["kernels"])
        assert lifelines >= 1 and {0, 1, 2} < set(fds)
        kinds = sorted(link.split(":")[0] for fd, link in fds.items() if fd > 2)
        assert kinds == ["anon_inode", "pipe", "pipe", *["socket"] * (2 + lifelines)]
        # The kernel holds none of them, and reads its stdin from /dev/null.
        said = await run(
            km,
            "import contextlib, os\nfds = {}\nfor n in os.listdir('/proc/self/fd'):\n"
            "    with contextlib.suppress(OSError):\n"
            "        fds[n] = os.readlink(f'/proc/self/fd/{n}')\nprint(fds)",
        )
        for fd, link in fds.items():
            if fd > 2 and link.startswith(("socket:[", "pipe:[")):  # unique: an inode each
                assert repr(link) not in said
        assert "'0': '/dev/null'" in said
    finally:
        await km.shutdown_kernel(now=True)


async def test_each_kernel_draws_its_own_random_numbers(kernel_python: str) -> None:
    draws = []
    for _ in range(2):
        km = await started(kernel_python)
        try:
            draws.append(
                await run(km, "import random, os; print(random.random(), os.urandom(4).hex())")
            )
        finally:
            await km.shutdown_kernel(now=True)
    assert draws[0] != draws[1]


async def test_numpys_global_generator_is_reseeded_in_each_kernel(
    tmp_path: Path,
) -> None:
    python = build_env("ipykernel-7-numpy", ["ipykernel>=7,<8", "numpy"])
    km1 = AsyncKernelManager(kernel_spec_manager=fork_spec(python, ["numpy"]), kernel_name="progtc")
    km2 = AsyncKernelManager(kernel_spec_manager=fork_spec(python, ["numpy"]), kernel_name="progtc")
    await km1.start_kernel()
    await km2.start_kernel()
    try:
        assert km1.provisioner.forked and km2.provisioner.forked  # type: ignore[union-attr]
        code = "import numpy; print(numpy.random.random())"
        assert await run(km1, code) != await run(km2, code)
    finally:
        await km1.shutdown_kernel(now=True)
        await km2.shutdown_kernel(now=True)


async def test_an_interrupt_reaches_only_that_kernel(kernel_python: str) -> None:
    kms = [await started(kernel_python) for _ in range(2)]
    clients = [km.client() for km in kms]
    try:
        for client in clients:
            client.start_channels()
            await client.wait_for_ready(timeout=120)
        # Both wait; one is interrupted, the other waits on.
        sleeping = [asyncio.Event(), asyncio.Event()]
        code = (
            "import time\ntry:\n    print('sleeping', flush=True)\n    time.sleep(3600)\n"
            "except KeyboardInterrupt:\n    print('interrupted')"
        )
        runs = [
            asyncio.ensure_future(
                client.execute_interactive(code, output_hook=on_output(event), timeout=600)
            )
            for client, event in zip(clients, sleeping, strict=True)
        ]
        for event in sleeping:
            await event.wait()
        await kms[0].interrupt_kernel()
        assert (await runs[0])["content"]["status"] == "ok"
        assert not runs[1].done()
        await kms[1].interrupt_kernel()
        await runs[1]
    finally:
        for client in clients:
            client.stop_channels()
        for km in kms:
            await km.shutdown_kernel(now=True)


def on_output(sleeping: asyncio.Event) -> Callable[[dict[str, Any]], None]:
    """An output hook that sets ``sleeping`` once the cell printed it."""

    def hook(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream" and "sleeping" in msg["content"]["text"]:
            sleeping.set()

    return hook


async def test_exit_statuses_are_reported_as_a_spawned_kernels_are(kernel_python: str) -> None:
    km = await started(kernel_python)
    try:
        client = km.client()
        client.start_channels()
        await client.wait_for_ready(timeout=120)
        client.execute("import os; os._exit(3)")
        process = km.provisioner.process  # type: ignore[union-attr]
        assert await asyncio.to_thread(process.wait, 120) == 3
        assert await km.provisioner.poll() == 3  # type: ignore[union-attr]
        assert not await km.is_alive()
        client.stop_channels()
        await km.restart_kernel(now=True)
        process = km.provisioner.process  # type: ignore[union-attr]
        os.kill(process.pid, signal.SIGKILL)
        assert await asyncio.to_thread(process.wait, 120) == -signal.SIGKILL
    finally:
        await km.shutdown_kernel(now=True)


async def test_a_kernel_that_fails_to_start_says_why_on_stderr(
    kernel_python: str,
    ipython_dir: Path,  # noqa: F811
) -> None:
    """Its stderr and exit code reach the manager as a spawned kernel's do."""
    startup = ipython_dir / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-broken.py").write_text(
        "import os\nos.write(2, b'this profile is broken\\n')\nos._exit(7)\n"
    )
    lifecycle = LocalKernel(python=kernel_python, fork_server=True)
    with pytest.raises(KernelStartError) as failure:
        async with ToolKernel(kernel=lifecycle):
            pass
    message = str(failure.value)
    assert "the kernel process exited while starting (exit code 7)" in message
    assert "this profile is broken" in message


async def test_the_kernel_dies_with_its_template(kernel_python: str) -> None:
    km = await started(kernel_python)
    try:
        template = template_for(kernel_python)
        template.process.kill()
        process = km.provisioner.process  # type: ignore[union-attr]
        assert await asyncio.to_thread(process.wait, 120) == -signal.SIGKILL
        assert not await km.is_alive()
        # The next start gets a new template.
        await km.restart_kernel(now=True)
        assert km.provisioner.forked  # type: ignore[union-attr]
        assert template_for(kernel_python) is not template
        assert await run(km, "print(1)") == "1\n"
    finally:
        await km.shutdown_kernel(now=True)


async def test_the_kernel_dies_with_its_manager(kernel_python: str, tmp_path: Path) -> None:
    """A manager's process killed: its kernels go too (their lifeline ends)."""
    script = tmp_path / "manager.py"
    script.write_text(
        "import asyncio, os, sys\n"
        "from jupyter_client.manager import AsyncKernelManager\n"
        "from progtc_kernel.kernels.fork_server import fork_server_metadata\n"
        "from progtc_kernel.kernels.local import single_spec\n"
        "async def main():\n"
        "    km = AsyncKernelManager(kernel_spec_manager=single_spec(sys.argv[1], "
        "fork_server_metadata()), kernel_name='progtc')\n"
        "    await km.start_kernel()\n"
        "    from progtc_kernel.kernels.fork_server import running_templates\n"
        "    template = running_templates()[0].pid\n"
        "    print(km.provisioner.forked, km.provisioner.pid, template, flush=True)\n"
        "    await asyncio.Event().wait()\n"
        "asyncio.run(main())\n"
    )
    manager = subprocess.Popen(
        [sys.executable, str(script), kernel_python], stdout=subprocess.PIPE, text=True
    )
    try:
        assert manager.stdout is not None
        forked, kernel, template = (await asyncio.to_thread(manager.stdout.readline)).split()
        assert forked == "True"
        pidfds = [os.pidfd_open(int(kernel)), os.pidfd_open(int(template))]
    finally:
        manager.kill()
        manager.wait()
    for pidfd in pidfds:  # readable once the process has ended
        try:
            await asyncio.wait_for(readable(pidfd), 120)
        finally:
            os.close(pidfd)


async def readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def settle() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, settle)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def test_a_different_start_up_environment_is_spawned(kernel_python: str) -> None:
    for variable in ("PYTHONPATH", "PYTHONHASHSEED", "OMP_NUM_THREADS"):
        env = {**os.environ, variable: "1"}
        km = AsyncKernelManager(kernel_spec_manager=fork_spec(kernel_python), kernel_name="progtc")
        await km.start_kernel(env=env)
        try:
            provisioner = km.provisioner
            assert isinstance(provisioner, ForkServerProvisioner)
            assert not provisioner.forked
            assert provisioner.spawned_because == "the kernel's start-up environment differs"
            assert await run(km, f"import os; print(os.environ[{variable!r}])") == "1\n"
        finally:
            await km.shutdown_kernel(now=True)


async def test_the_kernel_runs_in_its_own_environment_and_folder(
    kernel_python: str, tmp_path: Path
) -> None:
    (tmp_path / "mine.py").write_text("WHERE = 'here'\n")
    env = {**os.environ, "PROGTC_TEST_VALUE": "42"}
    km = await started(kernel_python, env=env, cwd=str(tmp_path))
    try:
        said = await run(
            km,
            "import os, mine\nprint(os.environ['PROGTC_TEST_VALUE'], os.getcwd(), mine.WHERE)",
        )
        assert said.split() == ["42", str(tmp_path), "here"]
    finally:
        await km.shutdown_kernel(now=True)


async def test_a_template_is_replaced_after_max_kernels_and_when_its_files_change(
    kernel_python: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "preloaded_here.py"
    module.write_text("VALUE = 1\n")
    # The templates and kernels of this test find the module on their path.
    stop_templates()
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    provisioner = {**fork_server_metadata(["preloaded_here"])}
    provisioner["config"]["max_kernels"] = 2
    spec = single_spec(kernel_python, provisioner)
    parents, values = [], []
    for changed in (False, False, False, True):
        if changed:
            module.write_text("VALUE = 2\n")
            os.utime(module, ns=(1, 1))
        km = AsyncKernelManager(kernel_spec_manager=spec, kernel_name="progtc")
        await km.start_kernel()
        try:
            assert km.provisioner.forked  # type: ignore[union-attr]
            said = await run(
                km,
                "import os, sys, preloaded_here\nprint(os.getppid(), "
                "'preloaded_here' in sys.modules, preloaded_here.VALUE)",
            )
            parent, _, value = said.split()
            parents.append(parent)
            values.append(value)
        finally:
            await km.shutdown_kernel(now=True)
    stop_templates()
    assert parents[0] == parents[1] != parents[2] != parents[3]
    assert values == ["1", "1", "1", "2"]


# -- the command line: a kernelspec, and serve's pool ----------------------------------


async def test_install_writes_a_kernelspec_any_kernel_manager_forks_from(tmp_path: Path) -> None:
    from jupyter_client.kernelspec import KernelSpecManager

    from progtc_kernel.cli import main

    assert main(["install", "--fork-server", "--preload", "json", "--prefix", str(tmp_path)]) == 0
    kernels = tmp_path / "share" / "jupyter" / "kernels"
    spec = json.loads((kernels / "progtc" / "kernel.json").read_text())
    assert spec["metadata"]["kernel_provisioner"] == {
        "provisioner_name": "progtc-fork-server",
        "config": {"preload": ["json"]},
    }
    km = AsyncKernelManager(
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]), kernel_name="progtc"
    )
    await km.start_kernel()
    try:
        assert km.provisioner.forked  # type: ignore[union-attr]
        said = await run(
            km, "import sys\nprint('progtc_kernel.kernel_side.extension' in sys.modules)"
        )
        assert said == "True\n"  # its --ext=progtc_kernel loaded the extension
    finally:
        await km.shutdown_kernel(now=True)


def test_preload_needs_the_fork_server_and_module_names(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from progtc_kernel.cli import main

    assert main(["install", "--preload", "numpy", "--prefix", str(tmp_path)]) == 2
    assert "add --fork-server" in capsys.readouterr().err
    assert (
        main(["install", "--fork-server", "--preload", "numpy;rm", "--prefix", str(tmp_path)]) == 2
    )
    assert "is not a module name" in capsys.readouterr().err


@pytest.mark.parametrize("fork", [True, False])
async def test_serve_forks_its_pool_unless_told_not_to(tmp_path: Path, fork: bool) -> None:
    from .servers import pool_status, until
    from .test_progtc_server import kernel_processes, progtc_serve

    process = await progtc_serve(
        tmp_path, "--pool-size", "2", *([] if fork else ["--no-fork-server"])
    ).start()
    try:

        async def warm() -> bool:
            return bool((await pool_status(process))["pool"]["warm"] == 2)

        await until(warm, "two warm kernels")
        kernels = kernel_processes(tmp_path)
        assert len(kernels) == 2
        parents = [
            Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1] for pid in kernels
        ]
        templates = [Path(f"/proc/{ppid}/cmdline").read_bytes() for ppid in parents]
        assert [TEMPLATE_SCRIPT.encode() in cmd for cmd in templates] == [fork, fork]
    finally:
        process.stop()
    assert kernel_processes(tmp_path) == []
