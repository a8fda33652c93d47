"""How ToolKernel turns a run's messages into an ``ExecutionResult``: outputs, errors,
timeouts, a dying kernel and the tool calls a cell made, played by a fake kernel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from progtc_kernel import ToolKernel
from progtc_kernel.exceptions import KernelDiedError, ReentrantExecutionError
from progtc_kernel.host import tool_kernel
from progtc_kernel.host.events import (
    DisplayOutput,
    ExecutionFinished,
    StreamOutput,
    ToolCallFinished,
    ToolCallStarted,
)
from progtc_kernel.host.results import ExecutionResult

from .fakes import FakeKernel, FakeTransport, Sent

pytestmark = pytest.mark.fast

ERROR = "\x1b[0;31mValueError\x1b[0m: no such city"


async def get_weather(city: str) -> str:
    return f"Sunny in {city}"


@pytest.fixture
async def fake() -> FakeKernel:
    return FakeKernel()


@pytest.fixture
async def kernel(fake: FakeKernel) -> AsyncIterator[ToolKernel]:
    async with ToolKernel([get_weather], kernel=fake, extension="loaded", timeout=None) as k:
        yield k


async def run(
    kernel: ToolKernel, code: str, **options: float | None
) -> tuple[asyncio.Task[ExecutionResult], Sent]:
    """Start ``execute`` and return it with the request the fake kernel received."""
    transport = kernel.bridge.transport
    assert isinstance(transport, FakeTransport)
    task = asyncio.ensure_future(kernel.execute(code, **options))  # type: ignore[arg-type]
    return task, await transport.request("execute_request")


async def test_outputs_are_collected_in_order(kernel: ToolKernel, fake: FakeKernel) -> None:
    task, request = await run(kernel, "print('hi'); display(...); 1 + 1")
    assert request.content["code"] == "print('hi'); display(...); 1 + 1"
    fake.transport.run_cell(
        request,
        ("stream", {"name": "stdout", "text": "hi\n"}),
        ("stream", {"name": "stderr", "text": "careful\n"}),
        (
            "display_data",
            {
                "data": {"text/plain": "<chart>", "image/png": "iVBO"},
                "metadata": {},
                "transient": {"display_id": "d1"},
            },
        ),
        (
            "update_display_data",
            {
                "data": {"text/plain": "<chart v2>"},
                "metadata": {},
                "transient": {"display_id": "d1"},
            },
        ),
        ("execute_result", {"data": {"text/plain": "2"}, "metadata": {}}),
        reply={"status": "ok", "execution_count": 7},
    )
    result = await task
    assert result.ok and result.error is None
    assert (result.stdout, result.stderr) == ("hi\n", "careful\n")
    assert [output.text for output in result.outputs] == ["<chart v2>", "2"]
    assert [output.kind for output in result.outputs] == ["display_data", "execute_result"]
    assert result.execution_count == 7


async def test_clear_output_forgets_what_was_displayed(
    kernel: ToolKernel, fake: FakeKernel
) -> None:
    task, request = await run(kernel, "...")
    fake.transport.run_cell(
        request,
        ("display_data", {"data": {"text/plain": "old"}, "metadata": {}}),
        ("clear_output", {"wait": False}),
        ("display_data", {"data": {"text/plain": "new"}, "metadata": {}}),
    )
    assert [output.text for output in (await task).outputs] == ["new"]


async def test_messages_of_other_requests_are_not_mixed_in(
    kernel: ToolKernel, fake: FakeKernel
) -> None:
    task, request = await run(kernel, "...")
    fake.transport.deliver("iopub", "stream", {"name": "stdout", "text": "someone else\n"})
    fake.transport.run_cell(request, ("stream", {"name": "stdout", "text": "mine\n"}))
    assert (await task).stdout == "mine\n"


@pytest.mark.parametrize(
    ("ename", "kind"),
    [
        ("ValueError", "runtime"),
        ("SyntaxError", "syntax"),
        ("IndentationError", "syntax"),
        ("KeyboardInterrupt", "cancelled"),
    ],
)
async def test_an_error_is_a_run_error_with_a_plain_traceback(
    kernel: ToolKernel, fake: FakeKernel, ename: str, kind: str
) -> None:
    task, request = await run(kernel, "...")
    error = {
        "ename": ename,
        "evalue": "no such city",
        "traceback": [
            f"\x1b[0;31m{ename}\x1b[0m: no such city",
            f'  File "{tool_kernel._PACKAGE_DIR}/kernel/tools_module.py"',
            '  File "<progtc_kernel 0.2, from the host>/kernel/bridge.py"',
        ],
    }
    fake.transport.run_cell(request, ("error", error), reply={"status": "error", **error})
    result = await task
    assert not result.ok and result.error is not None
    assert (result.error.kind, result.error.ename) == (kind, ename)
    assert result.error.traceback == f"{ename}: no such city"  # no colours, no frames of ours


async def test_an_error_reply_without_an_error_message_still_fails_the_run(
    kernel: ToolKernel, fake: FakeKernel
) -> None:
    task, request = await run(kernel, "...")
    fake.transport.run_cell(
        request,
        reply={"status": "error", "ename": "RuntimeError", "evalue": "boom", "traceback": []},
    )
    result = await task
    assert result.error is not None and result.error.evalue == "boom"
    with pytest.raises(Exception, match="boom"):
        result.raise_for_error()


async def test_a_run_that_exceeds_its_timeout_is_interrupted_and_keeps_its_output(
    kernel: ToolKernel, fake: FakeKernel
) -> None:
    task, request = await run(kernel, "while True: pass", timeout=0.05)
    fake.transport.deliver(
        "iopub", "stream", {"name": "stdout", "text": "so far\n"}, parent=request
    )
    interrupted = {"ename": "KeyboardInterrupt", "evalue": "", "traceback": ["KeyboardInterrupt"]}
    fake.on_interrupt = lambda: fake.transport.run_cell(
        request, ("error", interrupted), reply={"status": "error", **interrupted}
    )
    result = await task
    assert fake.interrupts == 1
    assert result.error is not None and result.error.kind == "timeout"
    assert result.error.evalue == "the execution exceeded its timeout and was interrupted"
    assert result.stdout == "so far\n"


async def test_a_run_that_ignores_the_interrupt_marks_the_kernel_for_restart(
    kernel: ToolKernel, fake: FakeKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tool_kernel, "INTERRUPT_GRACE", 0.05)
    task, _ = await run(kernel, "while True: pass", timeout=0.05)
    result = await task
    assert result.error is not None and result.error.kind == "timeout"
    assert "did not stop after an interrupt" in result.error.evalue
    with pytest.raises(KernelDiedError, match="the kernel given to ToolKernel died"):
        await kernel.execute("1")  # not ours to restart


async def test_a_kernel_that_dies_mid_run_fails_the_run_and_then_refuses_more(
    kernel: ToolKernel, fake: FakeKernel
) -> None:
    task, request = await run(kernel, "import os; os._exit(1)")
    fake.transport.deliver("iopub", "status", {"execution_state": "busy"}, parent=request)
    fake.alive = False
    result = await task
    assert result.error is not None
    assert (result.error.kind, result.error.ename) == ("kernel_died", "KernelDiedError")
    with pytest.raises(KernelDiedError, match="restart it where it runs"):
        await kernel.execute("1")


async def test_tool_calls_made_by_the_cell_are_in_its_result_and_stream(
    kernel: ToolKernel, fake: FakeKernel
) -> None:
    transport = fake.transport
    stream = kernel.stream("await get_weather('Oslo')")
    events = asyncio.ensure_future(_collect(stream))
    request = await transport.request("execute_request")
    transport.deliver("iopub", "status", {"execution_state": "busy"}, parent=request)
    transport.kernel_says(
        "calls",
        {
            "calls": [{"id": 1, "tool": "get_weather", "arguments": {"city": "Oslo"}}],
            "reply_channel": "shell",
        },
        parent=request,
    )
    await transport.host_said("results")
    transport.deliver(
        "iopub", "stream", {"name": "stdout", "text": "Sunny in Oslo\n"}, parent=request
    )
    transport.deliver(
        "shell", "execute_reply", {"status": "ok", "execution_count": 1}, parent=request
    )
    transport.deliver("iopub", "status", {"execution_state": "idle"}, parent=request)
    seen = await events
    assert [type(event) for event in seen] == [
        ToolCallStarted,
        ToolCallFinished,
        StreamOutput,
        ExecutionFinished,
    ]
    finished = seen[-1]
    assert isinstance(finished, ExecutionFinished)
    (call,) = finished.result.tool_calls
    assert (call.name, call.arguments, call.ok) == ("get_weather", {"city": "Oslo"}, True)


async def _collect(stream: object) -> list[object]:
    return [event async for event in stream]  # type: ignore[attr-defined]


async def test_display_outputs_stream_as_they_come(kernel: ToolKernel, fake: FakeKernel) -> None:
    events = asyncio.ensure_future(_collect(kernel.stream("display(1)")))
    request = await fake.transport.request("execute_request")
    fake.transport.run_cell(
        request, ("display_data", {"data": {"text/plain": "1"}, "metadata": {}})
    )
    display, finished = await events
    assert isinstance(display, DisplayOutput) and display.output.text == "1"
    assert isinstance(finished, ExecutionFinished)


async def test_tools_given_to_one_run_are_registered_for_it(
    kernel: ToolKernel, fake: FakeKernel
) -> None:
    async def convert(amount: float) -> float:
        return amount

    task, request = await run_with_tools(kernel, [convert])
    tools = await fake.transport.host_said("tools")
    assert [tool["name"] for tool in tools.body["tools"]] == ["convert"]
    fake.transport.run_cell(request)
    assert (await task).ok


async def run_with_tools(
    kernel: ToolKernel, tools: list[object]
) -> tuple[asyncio.Task[ExecutionResult], Sent]:
    transport = kernel.bridge.transport
    assert isinstance(transport, FakeTransport)
    task = asyncio.ensure_future(kernel.execute("...", tools=tools))
    return task, await transport.request("execute_request")


async def test_a_tool_cannot_run_code_on_the_kernel_calling_it(fake: FakeKernel) -> None:
    async def reenter() -> str:
        await holder[0].execute("1")
        return "never"

    holder: list[ToolKernel] = []
    async with ToolKernel([reenter], kernel=fake, extension="loaded") as kernel:
        holder.append(kernel)
        fake.transport.kernel_says(
            "calls",
            {"calls": [{"id": 1, "tool": "reenter", "arguments": {}}], "reply_channel": "shell"},
        )
        (entry,) = (await fake.transport.host_said("results")).body["results"]
    assert entry["error"]["type"] == ReentrantExecutionError.__name__
    assert "Run that code in a second ToolKernel" in entry["error"]["message"]


async def test_closing_closes_the_connection_and_hands_the_kernel_to_its_lifecycle() -> None:
    for owned in (False, True):
        fake = FakeKernel(owned=owned)
        kernel = ToolKernel([get_weather], kernel=fake, extension="loaded")
        await kernel.start()
        await kernel.close()
        assert fake.transport.closed and fake.shut_down  # (which leaves one not owned)
        assert not kernel.running


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"kernel_id": "abc"}, "kernel_id= names a kernel on a Jupyter Server"),
        (
            {"kernel": FakeKernel(), "python": "/usr/bin/python3"},
            "python=, kernel_name=, cwd= and env= describe a kernel for ToolKernel to start",
        ),
    ],
)
def test_kernel_arguments_that_cannot_go_together_are_refused(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        ToolKernel(**options)  # type: ignore[arg-type]


def test_an_unstarted_kernel_says_how_to_start_it() -> None:
    with pytest.raises(RuntimeError, match=r"use `async with ToolKernel\(...\)`"):
        ToolKernel(kernel=FakeKernel()).bridge  # noqa: B018


async def send_email(to: str) -> str:
    return f"sent to {to}"


async def test_a_host_that_closes_leaves_its_resumable_run_waiting_in_the_kernel() -> None:
    """Closing while a resumable run waits for an approval ends this host's stream,
    and nothing more: the call is neither answered nor cancelled, and the kernel is
    not interrupted, so that the next host can take the run over."""
    fake = FakeKernel()
    transport = fake.transport
    async with ToolKernel(
        [send_email], kernel=fake, extension="loaded", requires_approval={"send_email"}
    ) as kernel:

        async def host() -> ExecutionResult:
            async for event in kernel.stream("await send_email('ops@x.example')", resumable=True):
                if event.kind == "approval_requested":
                    await kernel.close()  # leave while it waits
                elif isinstance(event, ExecutionFinished):
                    return event.result
            raise AssertionError("the stream ended without its result")

        hosting = asyncio.ensure_future(host())
        request = await transport.request("execute_request")
        transport.kernel_says(
            "calls",
            {
                "calls": [{"id": 1, "tool": "send_email", "arguments": {"to": "ops@x.example"}}],
                "reply_channel": "shell",
            },
            parent=request,
        )
        result = await hosting

    assert result.error is not None and result.error.ename == "HostClosedError"
    assert fake.interrupts == 0
    assert "results" not in transport.kinds()
