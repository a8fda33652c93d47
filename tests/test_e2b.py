"""``JupyterServer.e2b``: host tools in an E2B sandbox's kernels.

E2B's cloud cannot be reached from the test machine, so the sandbox is played on
loopback the way E2B's code-interpreter template is built: a Jupyter Server with an
empty token whose Python kernels run ipykernel 6.31 and load progtc_kernel from
their IPython profile alone, behind an HTTPS proxy that, like E2B's edge with public
traffic off, refuses requests without the sandbox's ``E2B-Traffic-Access-Token``.
With ``E2B_API_KEY`` set, the last test runs on a real sandbox of the ``e2b/``
template as well.
"""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import AsyncIterator

import pytest

from progtc_kernel import JupyterServer, RemoteKernel, ServerError, ToolBridge, ToolKernel

from .conftest import TOOLS, build_env, interpreter, kernel_env
from .servers import Frontend, JupyterProcess, Proxy, jupyter_server, kernelspec

TRAFFIC_TOKEN = "traffic-secret"


class StandInSandbox:
    """The two things ``JupyterServer.e2b`` uses of an E2B ``Sandbox``."""

    def __init__(self, proxy: Proxy, traffic_access_token: str | None) -> None:
        self.proxy = proxy
        self.traffic_access_token = traffic_access_token

    def get_host(self, port: int) -> str:
        assert port == 8888, "the sandbox's Jupyter Server listens on 8888"
        return f"127.0.0.1:{self.proxy.port}"


@pytest.fixture(scope="module")
async def sandbox_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[JupyterProcess]:
    home = tmp_path_factory.mktemp("e2b")
    # The template's only kernelspec, python3, with the extension in the profile.
    kernelspec(home / "share", "python3", kernel_env("6.31"), profile_extension=True)
    process = await jupyter_server(  # configured as E2B's template/jupyter_server_config.py
        home,
        "--ServerApp.disable_check_xsrf=True",
        "--ServerApp.allow_remote_access=True",
        token="",
    ).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
async def stock_sandbox_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[JupyterProcess]:
    """A sandbox of E2B's stock ``code-interpreter-v1`` template: Python 3.13 (where
    this machine has it), ipykernel 6.31.0 and IPython 9.15, nothing of ours."""
    home = tmp_path_factory.mktemp("e2b-stock")
    python = build_env(
        "e2b-code-interpreter-v1",
        ["ipykernel==6.31.0", "ipython==9.15.*"],
        base=interpreter("3.13"),
    )
    kernelspec(home / "share", "python3", python)
    process = await jupyter_server(
        home,
        "--ServerApp.disable_check_xsrf=True",
        "--ServerApp.allow_remote_access=True",
        token="",
    ).start()
    yield process
    process.stop()


async def test_the_stock_template_needs_nothing_of_ours(
    stock_sandbox_server: JupyterProcess,
) -> None:
    async with edge_for(stock_sandbox_server) as proxy:
        server = JupyterServer.e2b(StandInSandbox(proxy, TRAFFIC_TOKEN), validate_cert=False)
        async with ToolKernel(TOOLS, kernel=RemoteKernel(server)) as kernel:
            assert kernel.bridge.kernel_info is not None
            assert kernel.bridge.kernel_info["injected"] is True
            assert kernel.bridge.kernel_info["ipykernel"] == "6.31.0"
            result = await kernel.execute(
                "from tools import get_weather\nprint(await get_weather('Oslo', 'NO'))"
            )
            assert result.stdout == "Weather in Oslo, NO: Sunny, 22°C\n"

        # A code context (a kernel E2B's own API started) is served the same way.
        session = await server.request(
            "POST",
            "api/sessions",
            {
                "path": "context-2",
                "name": "context-2",
                "type": "notebook",
                "kernel": {"name": "python3"},
            },
        )
        kernel_id = session["kernel"]["id"]
        try:
            async with (
                Frontend(server, kernel_id) as context,
                ToolBridge(server.kernel(kernel_id), tools=TOOLS),
            ):
                printed = await context.run(
                    "from tools import get_weather\nprint(get_weather('Nuuk', 'GL'))"
                )
            assert printed == "Weather in Nuuk, GL: Sunny, 22°C\n"
        finally:
            await server.request("DELETE", f"api/sessions/{session['id']}")


@pytest.fixture
async def edge(sandbox_server: JupyterProcess) -> AsyncIterator[Proxy]:
    """E2B's edge: HTTPS, and the traffic token required on every request."""
    async with edge_for(sandbox_server) as proxy:
        yield proxy


@contextlib.asynccontextmanager
async def edge_for(sandbox: JupyterProcess) -> AsyncIterator[Proxy]:
    import trustme

    authority = trustme.CA()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(tls)
    async with Proxy(
        sandbox.port, tls=tls, require_header=("E2B-Traffic-Access-Token", TRAFFIC_TOKEN)
    ) as proxy:
        yield proxy


async def test_tool_kernel_runs_in_the_sandbox(edge: Proxy) -> None:
    server = JupyterServer.e2b(StandInSandbox(edge, TRAFFIC_TOKEN), validate_cert=False)
    assert server.url.startswith("https://")
    async with ToolKernel(TOOLS, kernel=RemoteKernel(server)) as kernel:
        result = await kernel.execute(
            "from tools import get_weather\nprint(await get_weather('Oslo', 'NO'))"
        )
        assert result.stdout == "Weather in Oslo, NO: Sunny, 22°C\n"
    assert edge.requests_seen >= 2 and edge.refused == 0  # REST and the websocket


async def test_a_code_context_kernel_has_tools_from_its_profile(edge: Proxy) -> None:
    """Attach to a kernel started as E2B starts a code context's, without loading
    the extension: the template's profile has loaded it already."""
    server = JupyterServer.e2b(StandInSandbox(edge, TRAFFIC_TOKEN), validate_cert=False)
    session = await server.request(
        "POST",
        "api/sessions",
        {
            "path": "context-1",
            "name": "context-1",
            "type": "notebook",
            "kernel": {"name": "python3"},
        },
    )
    kernel_id = session["kernel"]["id"]
    try:
        async with (
            Frontend(server, kernel_id) as context,
            ToolBridge(server.kernel(kernel_id), tools=TOOLS, extension="loaded"),
        ):
            printed = await context.run(
                "from tools import get_weather\nprint(get_weather('Nuuk', 'GL'))"
            )
        assert printed == "Weather in Nuuk, GL: Sunny, 22°C\n"
    finally:
        await server.request("DELETE", f"api/sessions/{session['id']}")


async def test_without_the_traffic_token_the_sandbox_refuses(edge: Proxy) -> None:
    server = JupyterServer.e2b(StandInSandbox(edge, None), validate_cert=False)
    with pytest.raises(ServerError) as refused:
        async with ToolKernel(TOOLS, kernel=RemoteKernel(server)):
            pass
    assert refused.value.status == 403


@pytest.mark.skipif(
    not os.environ.get("E2B_API_KEY"),
    reason="a real E2B sandbox needs E2B_API_KEY (and the e2b/ template built)",
)
async def test_a_real_e2b_sandbox() -> None:  # pragma: no cover - needs E2B's cloud
    from e2b_code_interpreter import AsyncSandbox

    template = os.environ.get("PROGTC_E2B_TEMPLATE", "progtc-kernel")
    sandbox = await AsyncSandbox.create(template, network={"allow_public_traffic": False})
    try:
        server = JupyterServer.e2b(sandbox)
        async with ToolKernel(TOOLS, kernel=RemoteKernel(server)) as kernel:
            result = await kernel.execute(
                "from tools import get_weather\nprint(await get_weather('Oslo', 'NO'))"
            )
            assert result.stdout == "Weather in Oslo, NO: Sunny, 22°C\n"
        context = await sandbox.create_code_context()
        async with ToolKernel(TOOLS, kernel=RemoteKernel(server, context.id)) as kernel:
            assert (await kernel.execute("from tools import get_weather")).ok
    finally:
        await sandbox.kill()
