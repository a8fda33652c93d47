"""A kernel needs nothing but ipykernel: the host brings its own kernel side.

Each kernel here runs on an interpreter with ipykernel alone (on each supported line)
or with something else of this package's name, started outside the repository so
that its working directory offers no ``progtc_kernel`` either. Nothing is mocked: the
other versions are this package's own files with another version number and
protocol, as an older or newer release would have them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import AsyncKernelManager

from progtc_kernel import (
    AsyncProgtcClient,
    ExtensionNotLoadedError,
    LocalKernel,
    ProgrammaticToolset,
    ProtocolMismatchError,
    ToolBridge,
    ToolKernel,
)
from progtc_kernel.kernels.local import SPEC_NAME, single_spec
from progtc_kernel.protocol import PROTOCOL_VERSION
from progtc_kernel.timeouts import Timeout

from .conftest import ROOT, TOOLS, bare_kernel_env, selected_lines
from .servers import JupyterProcess, jupyter_server, kernelspec
from .test_progtc_server import progtc_serve

# Loading the kernel side into a kernel differs by ipykernel line.
pytestmark = pytest.mark.ipykernel_lines

GATHER = (
    "import asyncio\nfrom tools import get_weather, search_database\n"
    "w, hits = await asyncio.gather(get_weather('Oslo', 'NO'), search_database('x', 2))\n"
    "print(w, len(hits))"
)


def fresh(python: str, cwd: Path, **options: Any) -> ToolKernel:
    return ToolKernel(
        TOOLS,
        kernel=LocalKernel(python=python, cwd=str(cwd)),
        timeout=Timeout(start=600),
        **options,
    )


async def test_a_kernel_with_only_ipykernel_gets_the_hosts_kernel_side(
    bare_kernel_python: str, tmp_path: Path
) -> None:
    async with fresh(bare_kernel_python, tmp_path) as kernel:
        assert kernel.bridge.kernel_info is not None
        assert kernel.bridge.kernel_info["injected"] is True
        assert (await kernel.execute(GATHER)).stdout == "Weather in Oslo, NO: Sunny, 22°C 2\n"
        blocking = await kernel.execute("import tools\nprint(tools.search_database('y'))")
        assert (
            blocking.stdout == "[{'id': 0, 'name': 'y 0'}, {'id': 1, 'name': 'y 1'}, "
            "{'id': 2, 'name': 'y 2'}]\n"
        )

        # Nothing was written to the kernel's disk: the package exists in memory only.
        where = await kernel.execute(
            "import importlib.util, progtc_kernel\n"
            "print(importlib.util.find_spec('progtc_kernel').origin)\n"
            "print(progtc_kernel.__version__)"
        )
        origin, version = where.stdout.splitlines()
        assert origin.startswith("<progtc_kernel ") and origin.endswith("/__init__.py")
        assert version == kernel.bridge.kernel_info["package"]


async def test_the_injected_side_serves_everything_the_installed_one_does(
    bare_kernel_python: str, tmp_path: Path
) -> None:
    async with fresh(bare_kernel_python, tmp_path) as kernel:
        await kernel.install_modules(
            {
                "helpers": (
                    "from tools import get_weather\n"
                    "async def both(): return await get_weather('A', 'B')"
                )
            }
        )
        result = await kernel.execute("import helpers\nprint(await helpers.both())")
        assert result.stdout == "Weather in A, B: Sunny, 22°C\n"

        failed = await kernel.execute("from tools import fail\nawait fail('no luck')")
        assert failed.error is not None and failed.error.ename == "ToolError"
        # The user's lines only: the injected modules' frames are left out, like the
        # installed package's.
        assert "<progtc_kernel" not in failed.error.traceback
        assert "await fail('no luck')" in failed.error.traceback

        toolset = ProgrammaticToolset(TOOLS, kernel=kernel)
        answer = await toolset.execute_tool_script(
            "from tools import get_weather\nasync def run():\n"
            "    return {'weather': await get_weather('Lima', 'PE')}"
        )
        assert json.loads(answer) == {"weather": "Weather in Lima, PE: Sunny, 22°C"}


async def test_a_second_host_and_a_restart_find_the_injected_side(
    bare_kernel_python: str, tmp_path: Path
) -> None:
    async with fresh(bare_kernel_python, tmp_path) as kernel:
        manager = kernel.kernel_manager
        assert manager is not None
        async with ToolBridge(manager, tools={"ping": lambda: "pong"}):
            result = await kernel.execute("import tools\nprint(tools.ping())")
        assert result.stdout == "pong\n"
        await kernel.restart()
        assert kernel.bridge.kernel_info is not None
        assert kernel.bridge.kernel_info["injected"] is True
        assert (await kernel.execute(GATHER)).ok


async def test_a_kernel_with_this_version_installed_loads_it_and_brings_nothing(
    kernel_python: str, tmp_path: Path
) -> None:
    async with fresh(kernel_python, tmp_path) as kernel:
        assert kernel.bridge.kernel_info is not None
        assert kernel.bridge.kernel_info["injected"] is False
        assert (await kernel.execute(GATHER)).ok


async def test_extension_installed_forbids_bringing_code_and_says_so(
    bare_kernel_python: str, tmp_path: Path
) -> None:
    with pytest.raises(ExtensionNotLoadedError) as failure:
        async with fresh(bare_kernel_python, tmp_path, extension="installed"):
            pass
    message = str(failure.value)
    assert (
        f"progtc_kernel is not installed in this kernel's environment "
        f"({bare_kernel_python}), and the host was told not to bring its own "
        "(extension='installed')"
    ) in message
    assert "Leave extension at its default ('inject')" in message
    assert "-m pip install -e " in message or "-m pip install /" in message  # this checkout
    assert "pip install progtc-kernel" not in message  # on no public index


async def test_a_load_that_fails_shows_no_traceback_to_the_kernels_other_clients(
    bare_kernel_python: str, tmp_path: Path
) -> None:
    # The load is a silent request's expression: its error comes back in the reply
    # alone, where a cell's would reach every client on iopub (JupyterLab's, say).
    manager = AsyncKernelManager(
        kernel_spec_manager=single_spec(bare_kernel_python), kernel_name=SPEC_NAME
    )
    await manager.start_kernel(cwd=str(tmp_path))
    other = manager.client()
    other.start_channels()
    try:
        await other.wait_for_ready(timeout=600)
        with pytest.raises(ExtensionNotLoadedError, match="not installed"):
            await ToolBridge(manager, TOOLS, extension="installed").start()
        published = []
        while True:  # what the kernel published about the host's load request
            msg = await other.get_iopub_msg()
            if msg["parent_header"].get("msg_type") != "execute_request":
                continue
            published.append(msg["msg_type"])
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        assert published == ["status", "status"]  # busy, idle: no error
    finally:
        other.stop_channels()
        await manager.shutdown_kernel(now=True)


async def test_extension_loaded_sends_nothing_and_says_what_to_do(
    bare_kernel_python: str, tmp_path: Path
) -> None:
    with pytest.raises(
        ExtensionNotLoadedError,
        match=r"extension='loaded' told this host "
        r"not to load it\. Leave extension at its default \('inject'\)",
    ):
        async with fresh(bare_kernel_python, tmp_path, extension="loaded"):
            pass


@pytest.mark.fast
def test_an_unknown_extension_policy_is_refused() -> None:
    with pytest.raises(
        ValueError,
        match=r"extension='bring': use one of 'inject', "
        r"'installed', 'loaded'",
    ):
        ToolBridge({}, extension="bring")  # type: ignore[arg-type]


# -- another version of this package in the kernel ----------------------------------


def other_release(folder: Path, version: str, protocol: int) -> Path:
    """This package's files as another release would ship them, on a path of its own."""
    package = folder / "progtc_kernel"
    shutil.copytree(ROOT / "progtc_kernel", package, ignore=shutil.ignore_patterns("__pycache__"))
    (package / "_version.py").write_text(f'__version__ = "{version}"\n')
    protocol_py = package / "protocol.py"
    protocol_py.write_text(
        protocol_py.read_text().replace(
            f"PROTOCOL_VERSION = {PROTOCOL_VERSION}\n", f"PROTOCOL_VERSION = {protocol}\n"
        )
    )
    return folder


async def kernel_with(python: str, tmp_path: Path, release: Path, *argv: str) -> AsyncKernelManager:
    """A kernel whose environment has ``release`` importable, started with ``argv``."""
    specs = single_spec(python)
    spec = specs.get_kernel_spec(SPEC_NAME)
    spec.argv.extend(argv)
    spec.env = {"PYTHONPATH": str(release)}
    km = AsyncKernelManager(kernel_spec_manager=specs, kernel_name=SPEC_NAME)
    await km.start_kernel(cwd=str(tmp_path))
    return km


async def test_another_installed_version_is_shadowed_by_the_hosts(
    bare_kernel_python: str, tmp_path: Path
) -> None:
    release = other_release(tmp_path / "site", "0.0.1", PROTOCOL_VERSION - 1)
    km = await kernel_with(bare_kernel_python, tmp_path, release)
    try:
        async with ToolKernel(TOOLS, kernel=km, timeout=Timeout(start=600)) as kernel:
            assert kernel.bridge.kernel_info is not None
            assert kernel.bridge.kernel_info["injected"] is True
            assert (await kernel.execute(GATHER)).ok
            seen = await kernel.execute("import progtc_kernel\nprint(progtc_kernel.__version__)")
            assert seen.stdout.strip() == kernel.bridge.kernel_info["package"] != "0.0.1"
    finally:
        await km.shutdown_kernel(now=True)


async def test_another_version_loaded_at_start_is_a_protocol_mismatch_naming_both(
    bare_kernel_python: str, tmp_path: Path
) -> None:
    release = other_release(tmp_path / "site", "0.0.1", PROTOCOL_VERSION + 1)
    km = await kernel_with(bare_kernel_python, tmp_path, release, "--ext=progtc_kernel")
    try:
        with pytest.raises(ProtocolMismatchError) as failure:
            async with ToolKernel(TOOLS, kernel=km, timeout=Timeout(start=600)):
                pass
    finally:
        await km.shutdown_kernel(now=True)
    message = " ".join(str(failure.value).split())
    assert (
        f"this kernel has the progtc_kernel extension of progtc-kernel 0.0.1 (protocol "
        f"{PROTOCOL_VERSION + 1}) loaded, and this host runs progtc-kernel"
    ) in message
    assert f"(protocol {PROTOCOL_VERSION})" in message
    assert "Restart the kernel without loading the extension at start" in message


# -- the kernel side imports nothing it was not sent ---------------------------------


def test_the_kernel_side_imports_only_the_standard_library_ipykernel_and_itself(
    bare_kernel_python: str, tmp_path: Path
) -> None:
    """Load the injected package into a plain interpreter with ipykernel, as the cell
    does, and list every module it imported beyond what ipykernel itself imports."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import json, sys\n"
        "from ipykernel.ipkernel import IPythonKernel\n"
        "import comm, zmq\n"
        "before = set(sys.modules)\n"
        "ns = {'__name__': 'bootstrap'}\n"
        f"exec(open({str(ROOT / 'progtc_kernel/kernel_side/bootstrap.py')!r}).read(), ns)\n"
        "sources = json.load(sys.stdin)\n"
        "files = {p: s.encode() for p, s in sources.items()}\n"
        "sys.meta_path.insert(0, ns['InjectedPackage'](sources, 'x', ns['fingerprint'](files)))\n"
        "import progtc_kernel.kernel_side.extension, progtc_kernel.kernel_side.script\n"
        "import progtc_kernel.kernel_side.modules\n"
        "new = sorted({m.split('.')[0] for m in set(sys.modules) - before})\n"
        "print(json.dumps(new))\n"
    )
    from progtc_kernel.host.injection import kernel_side_files

    sources = {path: text.decode() for path, text in kernel_side_files().items()}
    done = subprocess.run(
        [bare_kernel_python, str(probe)],
        input=json.dumps(sources),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    imported = set(json.loads(done.stdout))
    # typing_extensions where IPython brought it: protocol.py prefers it, for pydantic.
    assert imported - set(sys.stdlib_module_names) - {"typing_extensions"} == {"progtc_kernel"}


@pytest.mark.fast
def test_the_load_cell_carries_every_kernel_side_module() -> None:
    from progtc_kernel.host.injection import kernel_side_files

    files = kernel_side_files()
    side = ROOT / "progtc_kernel/kernel_side"
    kernel_modules = {f"kernel_side/{p.name}" for p in side.glob("*.py")}
    assert kernel_modules <= set(files)
    assert {"__init__.py", "protocol.py", "_wire.py", "_stubs.py", "exceptions.py"} <= set(files)


# -- progtc's client and server on kernels with ipykernel alone ----------------------


async def get_weather(city: str, country: str) -> str:
    return f"Weather in {city}, {country}: Sunny, 22°C"


async def assert_a_tool_call_works(process: JupyterProcess) -> None:
    """progtc's client runs code that calls a host tool on the server's kernel."""
    async with AsyncProgtcClient(process.url, api_key=process.token) as client:
        result = await client.execute_code(
            "from tools import get_weather\nprint(await get_weather('Rome', 'Italy'))",
            {"get_weather": get_weather},
        )
    assert result.stdout == "Weather in Rome, Italy: Sunny, 22°C\n"


async def test_the_progtc_client_on_a_plain_jupyter_server_with_only_ipykernel(
    tmp_path: Path,
) -> None:
    kernelspec(tmp_path / "share", "python3", bare_kernel_env(selected_lines()[-1]))
    process = await jupyter_server(tmp_path).start()
    try:
        await assert_a_tool_call_works(process)
    finally:
        process.stop()


async def test_serve_warms_kernels_of_a_kernelspec_with_only_ipykernel(tmp_path: Path) -> None:
    kernelspec(tmp_path / "share", "bare", bare_kernel_env(selected_lines()[-1]))
    process = await progtc_serve(tmp_path, "--kernel-name", "bare", "--pool-size", "1").start()
    try:
        await assert_a_tool_call_works(process)
    finally:
        process.stop()
