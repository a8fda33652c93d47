"""progtc 0.2's step API (``POST /execute-code-step``) on ``progtc-kernel serve``.

progtc 0.2.0's own step tests run unchanged against the server (its sdist, fetched
from PyPI with pip, with a conftest of ours that points its fixtures at the server
instead of starting progtc's app in-process). Our own tests use
``AsyncProgtcClient.execute_code_step``: a run stays live in its kernel between steps
(nothing runs twice), a run that is gone (expired, the server restarted) is replayed as
progtc does, with its determinism errors, and one client cannot continue another's run.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tarfile
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from progtc_kernel import AsyncProgtcClient, ServerError
from progtc_kernel.types import ExecuteCodeStepEnd, ExecuteCodeStepToolCalls

from .conftest import ENVS, build_env, one_at_a_time
from .servers import JupyterProcess, free_port, pool_status, until

pytestmark = pytest.mark.timeout(300)

# progtc 0.2.0's tests send this key (their conftest's), so the server takes it.
KEY = "1234567890"
PROGTC = "0.2.0"

WEATHER = {"London": "Sunny", "Paris": "Rainy"}


def kernelspec(home: Path, python: str) -> str:
    """A kernelspec in the server's Jupyter path for a kernel of ``python`` (an
    ipykernel line of the test matrix); its name."""
    folder = home / "share" / "kernels" / "steps"
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "steps",
        "language": "python",
    }
    (folder / "kernel.json").write_text(json.dumps(spec))
    return "steps"


def step_server(home: Path, python: str, *args: str, port: int | None = None) -> JupyterProcess:
    """``progtc-kernel serve`` with kernels of ``python``."""
    port = port or free_port()
    argv = [
        sys.executable,
        "-m",
        "progtc_kernel.cli",
        "serve",
        "--port",
        str(port),
        "--api-key",
        KEY,
        "--kernel-name",
        kernelspec(home, python),
        *args,
    ]
    return JupyterProcess(argv, port, home, token=KEY)


@pytest.fixture(scope="module")
async def served(
    tmp_path_factory: pytest.TempPathFactory, kernel_python: str
) -> AsyncIterator[JupyterProcess]:
    process = await step_server(tmp_path_factory.mktemp("steps"), kernel_python).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
async def served_briefly(
    tmp_path_factory: pytest.TempPathFactory, kernel_python: str
) -> AsyncIterator[JupyterProcess]:
    """A server whose live runs wait one second for their next step."""
    home = tmp_path_factory.mktemp("steps-briefly")
    process = await step_server(home, kernel_python, "--step-keep", "1").start()
    yield process
    process.stop()


def client(server: JupyterProcess) -> AsyncProgtcClient:
    return AsyncProgtcClient(base_url=server.url, api_key=KEY)


def weather_code(ran: Path) -> str:
    """Code that notes each time it starts (in a file: a replay starts it again), prints
    before its first call, and makes two calls one after the other."""
    return textwrap.dedent(
        f"""\
        from tools import get_weather
        with open({str(ran)!r}, "a") as ran:
            ran.write("started\\n")
        print("before the calls")
        london = await get_weather("London")
        paris = await get_weather(city="Paris")
        print(london, paris)
        """
    )


async def run_steps(
    progtc: AsyncProgtcClient, code: str, between: Any = None
) -> tuple[ExecuteCodeStepEnd, int]:
    """Step a run to its end, answering each call from WEATHER; ``between(state)`` runs
    after each step that returned calls. Returns the end and the number of steps."""
    steps = 1
    step = await progtc.execute_code_step(code, tool_names=["get_weather"])
    while isinstance(step, ExecuteCodeStepToolCalls):
        if between is not None:
            await between(step.state)
        results = [WEATHER[str((*c.args, *c.kwargs.values())[0])] for c in step.tool_calls]
        step = await progtc.execute_code_step(
            code, tool_names=["get_weather"], state=step.state, tool_results=results
        )
        steps += 1
    return step, steps


async def step_api(server: JupyterProcess) -> dict[str, Any]:
    status: dict[str, Any] = (await pool_status(server))["step_api"]
    return status


async def leases_back_to(server: JupyterProcess, leased: int) -> bool:
    """The server leases as many kernels as before a run (other tests' runs may still
    be live on a shared server)."""
    return bool((await pool_status(server))["pool"]["leased"] == leased)


async def no_run_left(server: JupyterProcess) -> bool:
    """No live run, no leased kernel, and no kernel running but the pool's warm ones."""
    status = await pool_status(server)
    kernels = await server.server().request("GET", "api/kernels")
    pool = status["pool"]
    return bool(
        status["step_api"]["live_runs"] == 0
        and pool["leased"] == 0
        and len(kernels) == pool["warm"] + pool["starting"]
    )


# -- progtc 0.2.0's own tests ---------------------------------------------------------

SHIM = '''\
"""progtc 0.2.0's fixtures, pointed at the server under test.

This file replaces progtc's tests/conftest.py, whose ``test_server`` starts progtc's
own FastAPI app in-process with uvicorn: here it is the URL of ``progtc-kernel serve``
(``PROGTC_SERVER_URL``). ``test_client`` is progtc's, unchanged. The test files beside
it are progtc's, unchanged.
"""

import os
from collections.abc import AsyncGenerator

import pytest_asyncio
from httpx import AsyncClient


@pytest_asyncio.fixture
async def test_server() -> AsyncGenerator[str, None]:
    yield os.environ["PROGTC_SERVER_URL"]


@pytest_asyncio.fixture
async def test_client(test_server: str) -> AsyncGenerator[AsyncClient, None]:
    async with AsyncClient(
        base_url=test_server,
        headers={"X-Progtc-API-Key": "1234567890"},
    ) as client:
        yield client
'''


# (pytest-asyncio warns when its fixtures' loop scope is left unset.)
PYTEST_OPTIONS = ["-o", "asyncio_default_fixture_loop_scope=function"]


def progtc_tests() -> tuple[str, Path]:
    """progtc 0.2.0 with pytest, and its own tests from its sdist on PyPI (fetched
    once), beside our conftest: (its Python, the folder to run pytest in)."""
    python = build_env(
        f"progtc-{PROGTC}-tests", [f"progtc=={PROGTC}", "pytest", "pytest-asyncio>=1.3.0", "pip"]
    )
    folder = ENVS / f"progtc-{PROGTC}-sdist"
    with one_at_a_time(folder.name):
        if not (folder / "tests" / "conftest.py").exists():
            folder.mkdir(exist_ok=True)
            wanted = ["--no-deps", "--no-binary", ":all:", f"progtc=={PROGTC}", "-d", str(folder)]
            subprocess.run(
                [python, "-m", "pip", "download", "-q", *wanted],
                check=True,
            )
            with tarfile.open(folder / f"progtc-{PROGTC}.tar.gz") as sdist:
                for name in ("test_client.py", "test_client_modules.py", "test_server.py"):
                    member = sdist.extractfile(f"progtc-{PROGTC}/tests/{name}")
                    assert member is not None, f"progtc {PROGTC}'s sdist has no tests/{name}"
                    (folder / "tests").mkdir(exist_ok=True)
                    (folder / "tests" / name).write_bytes(member.read())
            (folder / "pytest.ini").write_text("[pytest]\n")  # their rootdir, not ours
            (folder / "tests" / "conftest.py").write_text(SHIM)
    return python, folder


@pytest.mark.ipykernel_lines
@pytest.mark.parametrize(
    ("tests", "passed"),
    [
        (["tests/test_client.py", "-k", "step"], 8),
        (["tests/test_client_modules.py"], 10),
        (["tests/test_server.py", "-k", "step"], 22),  # the raw requests, exact tracebacks
    ],
    ids=["test_client-k-step", "test_client_modules", "test_server-k-step"],
)
async def test_progtcs_own_step_tests_pass_unchanged(
    served: JupyterProcess, tests: list[str], passed: int
) -> None:
    python, folder = await asyncio.to_thread(progtc_tests)
    done = await asyncio.to_thread(
        subprocess.run,
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *PYTEST_OPTIONS, *tests],
        cwd=folder,
        env={**os.environ, "PROGTC_SERVER_URL": served.url},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{passed} passed" in done.stdout, done.stdout


# -- live runs ------------------------------------------------------------------------


@pytest.mark.ipykernel_lines
async def test_a_live_run_carries_on_where_it_waited(
    served: JupyterProcess, tmp_path: Path
) -> None:
    ran = tmp_path / "ran"
    before = await step_api(served)
    leased = (await pool_status(served))["pool"]["leased"]
    end, steps = await run_steps(client(served), weather_code(ran))
    assert end.type == "success", end.stderr
    assert steps == 3
    # The code started once, and printed once what it printed before its first call:
    # each step sent results into the waiting code, none ran it again.
    assert ran.read_text() == "started\n"
    assert end.stdout == "before the calls\nSunny Rainy\n"
    after = await step_api(served)
    assert after["resumed"] - before["resumed"] == 2
    assert after["replayed"] == before["replayed"]
    await until(lambda: leases_back_to(served, leased), "rid of the ended run's kernel")


async def test_gathered_calls_come_in_one_step(served: JupyterProcess) -> None:
    code = textwrap.dedent(
        """\
        import asyncio
        from tools import get_weather
        print(await asyncio.gather(get_weather("London"), get_weather("Paris")))
        """
    )
    progtc = client(served)
    step = await progtc.execute_code_step(code, tool_names=["get_weather"])
    assert isinstance(step, ExecuteCodeStepToolCalls)
    assert [(c.call_key, c.args) for c in step.tool_calls] == [
        ("0.0#0", ("London",)),
        ("0.1#0", ("Paris",)),
    ]
    end = await progtc.execute_code_step(
        code, tool_names=["get_weather"], state=step.state, tool_results=["Sunny", "Rainy"]
    )
    assert isinstance(end, ExecuteCodeStepEnd)
    assert (end.type, end.stdout) == ("success", "['Sunny', 'Rainy']\n")


async def test_the_same_state_sent_twice_at_once_leaves_the_live_step_alone(
    served: JupyterProcess, tmp_path: Path
) -> None:
    """The second request cannot continue the run the first is continuing: it replays
    the state in a kernel of its own, and both finish."""
    resumed, release = tmp_path / "resumed", tmp_path / "release"
    code = textwrap.dedent(
        f"""\
        import asyncio, os
        from tools import get_weather
        weather = await get_weather("London")
        open({str(resumed)!r}, "a").close()
        while not os.path.exists({str(release)!r}):  # until the test lets it finish
            await asyncio.sleep(0.01)
        print(weather)
        """
    )
    progtc = client(served)
    step = await progtc.execute_code_step(code, tool_names=["get_weather"])
    assert isinstance(step, ExecuteCodeStepToolCalls)

    async def next_step() -> ExecuteCodeStepEnd | ExecuteCodeStepToolCalls:
        return await progtc.execute_code_step(
            code, tool_names=["get_weather"], state=step.state, tool_results=["Sunny"]
        )

    first = asyncio.ensure_future(next_step())

    async def live_step_running() -> bool:
        return resumed.exists()

    await until(live_step_running, "continuing the live run")
    replayed = (await step_api(served))["replayed"]
    second = asyncio.ensure_future(next_step())

    async def replaying() -> bool:
        return bool((await step_api(served))["replayed"] > replayed)

    await until(replaying, "replaying the state")
    release.touch()
    for end in await asyncio.gather(first, second):
        assert isinstance(end, ExecuteCodeStepEnd)
        assert (end.type, end.stdout) == ("success", "Sunny\n"), end.stderr


async def test_a_bad_state_is_refused_saying_what_to_send(served: JupyterProcess) -> None:
    with pytest.raises(ServerError, match="send the last step's 'state' as it came"):
        await client(served).execute_code_step("print(1)", tool_names=[], state="not a state")


# -- when the live run is gone: progtc's replay ----------------------------------------


async def test_an_expired_run_is_shut_down_and_its_next_step_replays(
    served_briefly: JupyterProcess, tmp_path: Path
) -> None:
    ran = tmp_path / "ran"

    async def until_expired(state: str) -> None:
        await until(lambda: no_run_left(served_briefly), "rid of the expired run's kernel")

    before = await step_api(served_briefly)
    end, _ = await run_steps(client(served_briefly), weather_code(ran), until_expired)
    assert (end.type, end.stdout) == ("success", "before the calls\nSunny Rainy\n")
    # Each step after an expiry ran the code again, from the start, with the results
    # recorded in the state.
    assert ran.read_text() == "started\n" * 3
    after = await step_api(served_briefly)
    assert after["expired"] - before["expired"] == 2
    assert after["replayed"] - before["replayed"] == 2


async def test_after_a_server_restart_a_step_replays(
    tmp_path: Path, newest_kernel_python: str
) -> None:
    ran = tmp_path / "ran"
    code = weather_code(ran)
    port = free_port()
    first = await step_server(tmp_path / "one", newest_kernel_python, port=port).start()
    try:
        step = await client(first).execute_code_step(code, tool_names=["get_weather"])
    finally:
        first.stop()
    assert isinstance(step, ExecuteCodeStepToolCalls)
    second = await step_server(tmp_path / "two", newest_kernel_python, port=port).start()
    try:
        end = await client(second).execute_code_step(
            code, tool_names=["get_weather"], state=step.state, tool_results=["Sunny"]
        )
        assert isinstance(end, ExecuteCodeStepToolCalls)  # the replay reached Paris
        assert [c.kwargs for c in end.tool_calls] == [{"city": "Paris"}]
        assert ran.read_text() == "started\n" * 2
    finally:
        second.stop()


async def test_a_step_with_other_code_replays_it_and_checks_its_calls(
    served: JupyterProcess,
) -> None:
    asks = 'from tools import get_weather\nprint(await get_weather("{}"))\n'
    progtc = client(served)
    for determinism, expected in [("strict", "determinism_error"), ("order_only", "success")]:
        step = await progtc.execute_code_step(
            asks.format("London"), tool_names=["get_weather"], determinism=determinism
        )
        assert isinstance(step, ExecuteCodeStepToolCalls)
        end = await progtc.execute_code_step(
            asks.format("Paris"), tool_names=["get_weather"], state=step.state, tool_results=["x"]
        )
        assert isinstance(end, ExecuteCodeStepEnd)
        assert end.type == expected, end.stderr
        assert end.stdout == ("x\n" if expected == "success" else "")
    strict = await progtc.execute_code_step(asks.format("London"), tool_names=["get_weather"])
    assert isinstance(strict, ExecuteCodeStepToolCalls)
    failed = await progtc.execute_code_step(
        asks.format("Paris"), tool_names=["get_weather"], state=strict.state, tool_results=["x"]
    )
    assert isinstance(failed, ExecuteCodeStepEnd)
    assert failed.stderr.endswith(
        "DeterminismError: This code execution framework only works when the code calls "
        "tools in a deterministic order, with deterministic arguments. The call to "
        "`get_weather` violated this rule.\n"
    )
    assert 'File "<code>", line 2, in <module>' in failed.stderr


# -- whose run it is --------------------------------------------------------------------

# A Jupyter Server identity provider with two users, each with a key of their own (as
# JupyterHub gives each user a token): a config file of the server under test.
TWO_USERS = """
from jupyter_server.auth.identity import IdentityProvider, User


class TwoUsers(IdentityProvider):
    keys = {"alice-key": "alice", "bob-key": "bob"}

    def get_user(self, handler):
        scheme, _, key = handler.request.headers.get("Authorization", "").partition(" ")
        name = self.keys.get(key.strip())
        if name is None:
            return None
        handler._token_authenticated = True  # an API client: no XSRF cookie to check
        return User(name)


c.ServerApp.identity_provider_class = TwoUsers
c.ServerApp.jpserver_extensions = {"progtc_kernel.server": True}
"""


@pytest.fixture
async def two_users(tmp_path: Path, newest_kernel_python: str) -> AsyncIterator[JupyterProcess]:
    config = tmp_path / "two_users_config.py"
    config.write_text(TWO_USERS)
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "jupyter_server",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        "--allow-root",
        "--no-browser",
        f"--config={config}",
        f"--ProgtcKernelApp.kernel_name={kernelspec(tmp_path, newest_kernel_python)}",
    ]
    process = await JupyterProcess(argv, port, tmp_path, token="alice-key").start()
    yield process
    process.stop()


async def test_a_state_of_another_clients_run_is_refused(two_users: JupyterProcess) -> None:
    alice = AsyncProgtcClient(base_url=two_users.url, api_key="alice-key")
    bob = AsyncProgtcClient(base_url=two_users.url, api_key="bob-key")
    code = 'from tools import get_weather\nprint(await get_weather("London"))\n'
    step = await alice.execute_code_step(code, tool_names=["get_weather"])
    assert isinstance(step, ExecuteCodeStepToolCalls)
    with pytest.raises(ServerError, match="belongs to another client's run") as refused:
        await bob.execute_code_step(
            code, tool_names=["get_weather"], state=step.state, tool_results=["Stolen"]
        )
    assert refused.value.status == 403
    end = await alice.execute_code_step(
        code, tool_names=["get_weather"], state=step.state, tool_results=["Sunny"]
    )
    assert isinstance(end, ExecuteCodeStepEnd)
    assert (end.type, end.stdout) == ("success", "Sunny\n")
    assert (await step_api(two_users))["resumed"] == 1  # alice's run was still live
