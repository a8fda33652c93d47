"""Real kernels for the tests, on each supported ipykernel line, and the two layers.

Two layers: a test marked ``fast`` (a module's ``pytestmark``, or one test) needs no
kernel and no server, and ``pytest -m "not kernel"`` runs just those; every other test
is marked ``kernel`` here, so a new test lands in the full layer unless it says
otherwise. A fast test that asks for a kernel fixture is refused at collection, and one
that starts a kernel or a Jupyter server (itself or through a fixture) fails on the spot.

The first run creates one virtual environment per line under ``.kernel-envs/``
(with ``uv`` when available, else venv + pip), each with this project installed
in editable mode; later runs reuse them. ``PROGTC_TEST_KERNELS`` picks lines,
e.g. ``PROGTC_TEST_KERNELS=7`` for a quick run.

The matrix: a test that needs a kernel runs on the newest selected line; a test marked
``ipykernel_lines`` (behaviour that differs by line) runs on every selected line, and
``PROGTC_TEST_EVERY_LINE=1`` runs every test on every line. ``tests/test_pythons.py``
runs what depends on the Python version on each declared Python (3.10 to 3.13;
``PROGTC_TEST_PYTHONS`` picks some).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import AsyncKernelManager

from progtc_kernel import LocalKernel, ToolKernel
from progtc_kernel.kernels.local import single_spec

ROOT = Path(__file__).resolve().parent.parent
ENVS = ROOT / ".kernel-envs"
LINES = {"6.31": "ipykernel==6.31.*", "7": "ipykernel>=7,<8"}
# Every other supported release line, for the checks of the private-internals module.
OTHER_LINES = {
    f"{major}.{minor}": f"ipykernel=={major}.{minor}.*"
    for major, minor in [(6, 29), (6, 30), (7, 0), (7, 1), (7, 2), (7, 3)]
}


def selected_lines() -> list[str]:
    wanted = os.environ.get("PROGTC_TEST_KERNELS")
    return [line.strip() for line in wanted.split(",")] if wanted else list(LINES)


def _python_of(env: Path) -> Path:
    return env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def kernel_env(line: str) -> str:
    """Path of a Python with progtc_kernel and the given ipykernel line (built once)."""
    requirement = {**LINES, **OTHER_LINES}[line]
    return build_env(f"ipykernel-{line}", ["-e", str(ROOT), requirement])


def bare_kernel_env(line: str) -> str:
    """Path of a Python with the given ipykernel line and nothing of this project: the
    host brings the kernel side along (see progtc_kernel/host/injection.py)."""
    return build_env(f"ipykernel-{line}-only", [{**LINES, **OTHER_LINES}[line]])


#: Every Python the package declares (requires-python >= 3.10, and its classifiers).
PYTHONS = ("3.10", "3.11", "3.12", "3.13")


def selected_pythons() -> list[str]:
    """``PROGTC_TEST_PYTHONS`` picks some, e.g. ``PROGTC_TEST_PYTHONS=3.10`` (default: all)."""
    wanted = os.environ.get("PROGTC_TEST_PYTHONS")
    return [version.strip() for version in wanted.split(",")] if wanted else list(PYTHONS)


def python_of_version(version: str) -> str:
    """CPython ``version`` ("3.10"): pyenv's where this machine has it, else one that uv
    downloads once into ``.kernel-envs/pythons``; fails naming the fix when neither can."""
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    found = sorted(
        root.glob(f"versions/{version}.*/bin/python3"),
        key=lambda path: [int(part) for part in path.parent.parent.name.split(".")],
    )
    if found:
        return str(found[-1])
    uv = _uv()
    if uv:
        env = {**os.environ, "UV_PYTHON_INSTALL_DIR": str(ENVS / "pythons")}
        subprocess.run([uv, "python", "install", "-q", version], env=env, check=False)
        managed = subprocess.run(
            [uv, "python", "find", "--python-preference", "only-managed", version],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if managed.returncode == 0:
            return managed.stdout.strip()
    pytest.fail(
        f"no Python {version} on this machine: install it (`pyenv install {version}`, "
        f"or `uv python install {version}`) to test every Python the package declares"
    )


def _uv() -> str | None:
    return shutil.which("uv") or shutil.which("uv", path=str(Path(sys.executable).parent))


def interpreter(version: str) -> str:
    """This machine's Python of that version (pyenv's, where it has one), else ours."""
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    found = sorted(root.glob(f"versions/{version}.*/bin/python3"))
    return str(found[-1]) if found else sys.executable


def build_env(name: str, requirements: list[str], base: str = sys.executable) -> str:
    """Path of the Python of a virtual environment with these requirements (built once;
    none at all gives a bare interpreter), made from the ``base`` interpreter."""
    env = ENVS / name
    python = _python_of(env)
    marker = env / ".ready"
    with one_at_a_time(name):
        if not marker.exists():
            _build(env, python, requirements, base)
            marker.write_text(" ".join(requirements))
    return str(python)


@contextlib.contextmanager
def one_at_a_time(name: str) -> Iterator[None]:
    """While one process (a pytest-xdist worker, another run in this checkout) builds
    ``name`` under ``.kernel-envs``, the others wait for it, then find it built."""
    ENVS.mkdir(exist_ok=True)
    with open(ENVS / f"{name}.lock", "w") as lock:
        if sys.platform != "win32":
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _build(env: Path, python: Path, requirements: list[str], base: str) -> None:
    shutil.rmtree(env, ignore_errors=True)
    uv = _uv()
    if uv:
        subprocess.run([uv, "venv", "-q", "--python", base, str(env)], check=True)
        if requirements:
            subprocess.run(
                [uv, "pip", "install", "-q", "--python", str(python), *requirements], check=True
            )
    else:
        subprocess.run([base, "-m", "venv", str(env)], check=True)
        if requirements:
            subprocess.run([str(python), "-m", "pip", "install", "-q", *requirements], check=True)


# -- the ipykernel matrix -------------------------------------------------------------

# A test that depends on a kernel's Python runs on the newest selected line, and on
# every selected line when it is marked ``ipykernel_lines`` (its behaviour differs by
# line: the reply routes, interrupts, shutdown, injection) or PROGTC_TEST_EVERY_LINE=1.
LINE_FIXTURES = ("kernel_python", "bare_kernel_python")


def every_line() -> bool:
    """Whether every test runs on every selected line (PROGTC_TEST_EVERY_LINE=1)."""
    return bool(os.environ.get("PROGTC_TEST_EVERY_LINE"))


def lines_for(node: pytest.Item) -> list[str]:
    lines = selected_lines()
    return lines if every_line() or node.get_closest_marker("ipykernel_lines") else lines[-1:]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    fixtures = [fixture for fixture in LINE_FIXTURES if fixture in metafunc.fixturenames]
    if fixtures:  # both at once take the same line
        lines = lines_for(metafunc.definition)
        metafunc.parametrize(
            fixtures,
            [[line] * len(fixtures) for line in lines],
            indirect=True,
            scope="session",
            ids=[f"ipykernel-{line}" for line in lines],
        )


@pytest.fixture(scope="session")
def kernel_python(request: pytest.FixtureRequest) -> str:
    """A Python with this project and an ipykernel line (see the matrix above)."""
    return kernel_env(request.param)


@pytest.fixture(scope="session")
def bare_kernel_python(request: pytest.FixtureRequest) -> str:
    """A Python with ipykernel alone (see the matrix above)."""
    return bare_kernel_env(request.param)


@pytest.fixture(scope="session")
def newest_kernel_python() -> str:
    return kernel_env(selected_lines()[-1])


# -- the two layers ----------------------------------------------------------------

# A kernel's Python: the kernel fixtures here depend on them. (Other fixtures that start
# kernels or servers are caught when they start one: see refuse_kernels.)
KERNEL_FIXTURES = frozenset({"kernel_python", "bare_kernel_python", "newest_kernel_python"})


@pytest.hookimpl(tryfirst=True)  # before -m selects on the markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    wrong = []
    for item in items:
        if item.get_closest_marker("fast") is None:
            item.add_marker(pytest.mark.kernel)
        elif KERNEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            wrong.append(item.nodeid)
    if wrong:
        raise pytest.UsageError(
            "marked fast but using a kernel fixture (drop the fast marker): " + ", ".join(wrong)
        )


def fast_layer_only(config: pytest.Config) -> bool:
    return " ".join(str(config.option.markexpr).split()) == "not kernel"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """``-m "not kernel"`` skips importing modules with no fast test (all their tests
    are deselected anyway): the heavy imports of the full layer are most of its time."""
    if (
        fast_layer_only(config)
        and collection_path.name.startswith("test_")
        and collection_path.suffix == ".py"
        and "mark.fast" not in collection_path.read_text(encoding="utf-8")
    ):
        return True
    return None


def refuse_kernels(monkeypatch: pytest.MonkeyPatch, who: str) -> None:
    """Starting a local kernel (every jupyter_client manager launches through the
    provisioner) or a test server fails from now on, naming the fix."""
    from jupyter_client.provisioning.local_provisioner import LocalProvisioner

    from .servers import JupyterProcess

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            f"{who} starts a kernel or a server, and the fast layer needs "
            "none: drop its fast marker (the full layer runs it)"
        )

    monkeypatch.setattr(LocalProvisioner, "launch_kernel", refuse)
    monkeypatch.setattr(JupyterProcess, "start", refuse)


@pytest.fixture(scope="session", autouse=True)
def _the_fast_layer_starts_no_kernel(request: pytest.FixtureRequest) -> Iterator[None]:
    """Under ``-m "not kernel"``, before any other fixture: so that not even a fixture
    of a module or session can start a kernel for a fast test."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        if fast_layer_only(request.config):
            refuse_kernels(monkeypatch, "a fast test (or a fixture it uses)")
        yield


@pytest.fixture(autouse=True)
def _fast_tests_start_no_kernel(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In any run, a fast test itself cannot start a kernel either."""
    if request.node.get_closest_marker("fast") is not None:
        refuse_kernels(monkeypatch, request.node.nodeid)


# -- tools used across the tests ----------------------------------------------------


async def get_weather(city: str, country: str) -> str:
    """Current weather for a city."""
    return f"Weather in {city}, {country}: Sunny, 22°C"


def search_database(query: str, limit: int = 10) -> list[dict[str, Any]]:
    """Search the database."""
    return [{"id": i, "name": f"{query} {i}"} for i in range(min(limit, 3))]


async def fail(message: str) -> None:
    """Always raises."""
    raise ValueError(message)


TOOLS = [get_weather, search_database, fail]


@pytest.fixture(scope="module")
async def kernel(kernel_python: str) -> AsyncIterator[ToolKernel]:
    """One kernel per test module and ipykernel line, with TOOLS."""
    async with ToolKernel(TOOLS, kernel=LocalKernel(python=kernel_python), timeout=60) as k:
        yield k


@pytest.fixture
def make_kernel(kernel_python: str) -> Callable[..., ToolKernel]:
    """A fresh ToolKernel with your own tools and options (use it with `async with`)."""

    def make(tools: Any = TOOLS, **options: Any) -> ToolKernel:
        options.setdefault("kernel", LocalKernel(python=kernel_python))
        return ToolKernel(tools, **options)

    return make


async def plain_kernel(
    python: str, transport: str = "ipc", tmp: Path | None = None
) -> AsyncKernelManager:
    """A kernel started the way a user would, without the extension, and up."""
    km = AsyncKernelManager(kernel_spec_manager=single_spec(python), kernel_name="progtc")
    if transport == "ipc":
        km.transport = "ipc"
        km.ip = str((tmp or Path(os.environ.get("TMPDIR", "/tmp"))) / f"k{os.getpid()}-{id(km)}")
    await km.start_kernel()
    waiter = km.client()
    waiter.start_channels()
    try:
        await waiter.wait_for_ready(timeout=60)
    finally:
        waiter.stop_channels()
    return km


@pytest.fixture
async def own_kernel(kernel_python: str) -> AsyncIterator[AsyncKernelManager]:
    """A plain kernel of the user's, started without the extension, and running."""
    km = await plain_kernel(kernel_python)
    try:
        yield km
    finally:
        await km.shutdown_kernel(now=True)


async def interrupt_during_call(
    kernel: ToolKernel, code: str, started: Callable[[], Awaitable[Any]]
) -> str:
    """Run code and interrupt it once ``started()`` returns (a tool says it runs);
    returns the run's error kind."""

    async def interrupt_when_started() -> None:
        await started()
        await kernel.interrupt()

    interrupter = asyncio.ensure_future(interrupt_when_started())
    try:
        result = await kernel.execute(code)
    finally:
        interrupter.cancel()
    assert result.error is not None, "the run was not interrupted"
    return result.error.kind
