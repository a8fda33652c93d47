"""One way to give a kernel, and one blocking twin of ToolKernel: checked without a
kernel (the lifecycle given is the fast layer's fake, or is never started)."""

from __future__ import annotations

import inspect
import threading
from pathlib import Path
from typing import Any

import pytest

from progtc_kernel import (
    AsyncProgtcClient,
    JupyterServer,
    LocalKernel,
    ProgrammaticToolset,
    RemoteKernel,
    SyncToolKernel,
    ToolKernel,
)
from progtc_kernel.host.threads import LoopThread
from progtc_kernel.kernels.local import AttachedKernel
from progtc_kernel.kernels.resolve import resolve_kernel

from .fakes import FakeKernel

pytestmark = pytest.mark.fast


def get_weather(city: str) -> str:
    return f"Sunny in {city}"


# -- the kernel you give ----------------------------------------------------------------


def test_a_kernel_is_given_one_way_and_resolved_to_its_lifecycle(tmp_path: Path) -> None:
    local = LocalKernel(python="/usr/bin/python3", cwd=str(tmp_path))
    remote = RemoteKernel(JupyterServer("http://127.0.0.1:8888", token="t"), kernel_name="py")

    assert ToolKernel(kernel=local).lifecycle is local
    assert ToolKernel(kernel=remote).lifecycle is remote
    assert isinstance(ToolKernel().lifecycle, LocalKernel)  # a kernel of its own, here
    attached = ToolKernel(kernel=str(tmp_path / "kernel-1.json")).lifecycle
    assert isinstance(attached, AttachedKernel) and not attached.owned


@pytest.mark.parametrize(
    ("options", "fix"),
    [
        ({"python": "python3"}, r"give kernel=LocalKernel\(python=\.\.\."),
        ({"cwd": "/tmp", "env": {}}, r"describe a kernel for ToolKernel to start: .*LocalKernel"),
        ({"server": "S", "kernel_name": "py"}, r"give kernel=RemoteKernel\(server"),
        ({"kernel_id": "abc"}, r"kernel=RemoteKernel\(server=JupyterServer\(url, token"),
        (
            {"kernel_manager": "km"},
            r"ToolKernel\(kernel_manager=km\) is now ToolKernel\(kernel=km\)",
        ),
    ],
)
def test_options_of_a_kernel_given_to_tool_kernel_name_where_they_belong(
    options: dict[str, Any], fix: str
) -> None:
    with pytest.raises(TypeError, match=fix):
        ToolKernel(**options)


def test_a_server_or_anything_else_is_not_a_kernel() -> None:
    server = JupyterServer("http://127.0.0.1:8888", token="t")

    with pytest.raises(TypeError, match=r"give kernel=RemoteKernel\(server\) to start one"):
        ToolKernel(kernel=server)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="int is not a kernel; give kernel= a LocalKernel"):
        resolve_kernel(42)  # type: ignore[arg-type]


def test_the_blocking_kernel_refuses_the_same_misuse_and_leaves_no_thread() -> None:
    with pytest.raises(TypeError, match=r"give kernel=LocalKernel\(python="):
        SyncToolKernel(python="python3")  # type: ignore[arg-type]

    assert [t for t in threading.enumerate() if t.name == "progtc-kernel-loop"] == []


async def test_the_toolset_takes_a_kernel_or_a_tool_kernel_and_starts_and_closes_it() -> None:
    fake = FakeKernel()
    toolset = ProgrammaticToolset([get_weather], kernel=fake)
    assert toolset.kernel.lifecycle is fake
    assert [spec["name"] for spec in toolset.kernel.tools.specs()] == ["get_weather"]

    await toolset.start()
    assert toolset.kernel.running
    await toolset.close()
    assert not toolset.kernel.running

    given = ToolKernel(kernel=FakeKernel())
    async with ToolKernel(kernel=FakeKernel(), extension="loaded") as started:
        async with ProgrammaticToolset(kernel=started) as toolset:
            assert toolset.kernel is started
        assert started.running  # a kernel given started is left running
    assert ProgrammaticToolset(kernel=given).kernel is given


def test_the_progtc_client_takes_a_jupyter_server_with_its_settings() -> None:
    server = JupyterServer("https://sandbox.example:8888", token="T", validate_cert=False)

    client = AsyncProgtcClient(server, headers={"X-Run": "1"})
    assert client.base_url == "https://sandbox.example:8888/" and client.api_key == "T"
    reached = client._server({"X-Call": "2"})
    assert not reached.validate_cert and reached.token == "T"
    assert reached.headers == {"X-Run": "1", "X-Call": "2"}
    assert server.headers == {}  # the server given is left as it was
    with pytest.raises(TypeError, match=r"give it there, JupyterServer\(url, token=\.\.\.\)"):
        AsyncProgtcClient(server, api_key="T")

    progtc_style = AsyncProgtcClient("http://127.0.0.1:8000", "KEY", request_timeout=3)
    assert progtc_style.api_key == "KEY" and progtc_style._server().request_timeout == 3


# -- SyncToolKernel is ToolKernel without await ---------------------------------------


def public_api(cls: type) -> dict[str, Any]:
    return {
        name: inspect.getattr_static(cls, name)
        for name in dir(cls)
        if not name.startswith("_") and name not in vars(object)
    }


def parameters(function: Any) -> list[tuple[str, Any, Any, Any]]:
    signature = inspect.signature(function)
    return [(p.name, p.kind, p.default, p.annotation) for p in signature.parameters.values()]


def test_the_blocking_kernel_has_every_public_method_of_tool_kernel_with_its_arguments() -> None:
    ours, theirs = public_api(SyncToolKernel), public_api(ToolKernel)

    assert set(ours) == set(theirs)
    for name, member in theirs.items():
        if isinstance(member, property):
            assert isinstance(ours[name], property), name
            continue
        assert not inspect.iscoroutinefunction(ours[name]), name
        assert not inspect.isasyncgenfunction(ours[name]), name
        assert parameters(ours[name]) == parameters(member), name
    assert parameters(SyncToolKernel.__init__) == parameters(ToolKernel.__init__)


def test_a_method_added_to_tool_kernel_gets_its_blocking_twin() -> None:
    from progtc_kernel.host import sync

    async def ping(self: ToolKernel, word: str) -> str:
        return word

    ToolKernel.ping = ping  # type: ignore[attr-defined]
    try:
        sync._derive_blocking_api()
        assert parameters(SyncToolKernel.ping) == parameters(ping)  # type: ignore[attr-defined]
        assert not inspect.iscoroutinefunction(SyncToolKernel.ping)  # type: ignore[attr-defined]
    finally:
        del ToolKernel.ping  # type: ignore[attr-defined]
        del SyncToolKernel.ping  # type: ignore[attr-defined]


def test_the_loop_thread_runs_coroutines_and_refuses_to_wait_for_itself() -> None:
    loop_thread = LoopThread("progtc-kernel-test-loop")

    async def answer() -> int:
        return 42

    async def wait_for_itself() -> int:
        return loop_thread.call(answer(), caller="wait_for_itself")

    try:
        assert loop_thread.call(answer()) == 42
        with pytest.raises(RuntimeError, match="wait_for_itself was called from its own event"):
            loop_thread.call(wait_for_itself())
    finally:
        loop_thread.stop()
    assert loop_thread.closed
    assert "progtc-kernel-test-loop" not in [t.name for t in threading.enumerate()]
