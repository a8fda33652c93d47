"""Human approval of tool calls inside running code, on real kernels: the code simply
waits, its state intact, until someone decides; a denial is an exception it may catch.
"""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
from collections.abc import Callable
from typing import Any

import pytest

from progtc_kernel import (
    Approval,
    ApprovalCancelled,
    ApprovalDecided,
    ApprovalRequest,
    ApprovalRequested,
    Event,
    ExecutionFinished,
    ExecutionResult,
    SyncToolKernel,
    Timeout,
    Tool,
    ToolKernel,
)

pytestmark = pytest.mark.ipykernel_lines  # waiting and interrupts differ by line

outbox: list[str] = []


async def send_email(to: str, subject: str = "") -> str:
    """Send an email."""
    outbox.append(to)
    return f"sent to {to}"


def get_weather(city: str) -> str:
    return f"Sunny in {city}"


@pytest.fixture(autouse=True)
def empty_outbox() -> None:
    outbox.clear()


def code(text: str) -> str:
    return textwrap.dedent(text).strip() + "\n"


async def run_deciding(
    kernel: ToolKernel, source: str, decide: Callable[[ApprovalRequest], Approval]
) -> tuple[ExecutionResult, list[Event]]:
    """Run code with ``stream()``, deciding each request as it is shown."""
    events: list[Event] = []
    async for event in kernel.stream(source):
        events.append(event)
        if isinstance(event, ApprovalRequested):
            await kernel.decide(event.request.call_id, decide(event.request))
        if isinstance(event, ExecutionFinished):
            return event.result, events
    raise AssertionError("the run did not finish")


class Stalling:
    """An approver that never answers, and says when it is asked and cancelled."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def __call__(self, request: ApprovalRequest) -> Approval:
        self.asked.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        raise AssertionError("unreachable")


# -- deciding -----------------------------------------------------------------------


async def test_an_approver_allows_or_denies_and_the_code_catches_a_denial(
    make_kernel: Callable[..., ToolKernel],
) -> None:
    async def approve(request: ApprovalRequest) -> Approval:
        if request.arguments["to"].endswith("@competitor.example"):
            return Approval.deny("no mail to competitors")
        return Approval.allow()

    async with make_kernel(
        [send_email, get_weather], approve=approve, requires_approval={"send_email"}
    ) as kernel:
        result = await kernel.execute(
            code("""
            from tools import send_email, get_weather, ToolDeniedError
            print(await send_email("ann@us.example"))
            try:
                await send_email("bob@competitor.example")
            except PermissionError as error:  # a ToolDeniedError
                print(type(error).__name__, "|", error.message)
            print(await get_weather("Oslo"))
            """)
        )
    assert result.ok, result.error
    assert result.stdout.splitlines() == [
        "sent to ann@us.example",
        "ToolDeniedError | no mail to competitors",
        "Sunny in Oslo",
    ]
    assert outbox == ["ann@us.example"]
    first, second, weather = result.tool_calls
    assert first.approval is not None and first.approval.decision == "allow"
    assert second.approval is not None and second.approval.decision == "deny"
    assert second.approval.message == "no mail to competitors" and not second.ok
    assert weather.approval is None  # it needed none


async def test_an_uncaught_denial_is_the_runs_error_and_names_the_reason(
    make_kernel: Callable[..., ToolKernel],
) -> None:
    async with make_kernel(
        [send_email], approve=lambda request: Approval.deny("over budget"), requires_approval=True
    ) as kernel:
        result = await kernel.execute("import tools\nawait tools.send_email('ann@us.example')")
    assert result.error is not None and result.error.ename == "ToolDeniedError"
    assert result.error.evalue == "tool 'send_email' was denied: over budget"
    assert outbox == []


async def test_allow_for_run_stops_asking_for_that_tool_until_the_run_ends(
    make_kernel: Callable[..., ToolKernel],
) -> None:
    asked: list[str] = []

    def approve(request: ApprovalRequest) -> Approval:
        asked.append(request.arguments["to"])
        return Approval.allow_for_run()

    three_emails = "import tools\nfor to in 'abc':\n    await tools.send_email(to)"
    async with make_kernel([send_email], approve=approve, requires_approval={"send_email"}) as k:
        first = await k.execute(three_emails)
        second = await k.execute(three_emails)
    assert first.ok and second.ok
    assert asked == ["a", "a"]  # once per run
    assert outbox == list("abcabc")  # every call ran, and every one is recorded:
    records = [call.approval for call in first.tool_calls]
    assert [(r.asked, r.decision, r.decided_by) for r in records if r is not None] == [
        (True, "allow_for_run", "approver"),
        (False, "allow", "run_grant"),
        (False, "allow", "run_grant"),
    ]


async def test_a_predicate_over_the_arguments_decides_which_calls_need_approval(
    make_kernel: Callable[..., ToolKernel],
) -> None:
    asked: list[ApprovalRequest] = []

    def approve(request: ApprovalRequest) -> Approval:
        asked.append(request)
        return Approval.allow()

    def outside(tool: str, arguments: dict[str, Any]) -> bool:
        return tool == "send_email" and not arguments["to"].endswith("@us.example")

    async with make_kernel([send_email], approve=approve, requires_approval=outside) as kernel:
        result = await kernel.execute(
            "import tools\nawait tools.send_email('ann@us.example')\n"
            "await tools.send_email('zoe@them.example')"
        )
    assert result.ok, result.error
    (request,) = asked
    assert request.arguments == {"to": "zoe@them.example"}
    assert request.reason == "requires_approval(tool, arguments) said so"
    assert request.run_id == result.run_id


async def test_a_tool_that_requires_approval_itself_is_asked_about(
    make_kernel: Callable[..., ToolKernel],
) -> None:
    asked: list[str] = []

    def approve(request: ApprovalRequest) -> Approval:
        asked.append(request.reason)
        return Approval.allow()

    wipe = Tool.from_function(send_email, name="mail", requires_approval=True)
    async with make_kernel([wipe, get_weather], approve=approve) as kernel:
        result = await kernel.execute(
            "import tools\nawait tools.mail('ann')\nawait tools.get_weather('x')"
        )
    assert result.ok, result.error
    assert asked == ["mail requires approval (declared on the tool)"]


# -- a run that waits for a person ---------------------------------------------------


async def test_without_an_approver_the_stream_shows_the_request_and_decide_answers_it(
    make_kernel: Callable[..., ToolKernel],
) -> None:
    async with make_kernel([send_email], requires_approval={"send_email"}) as kernel:
        result, events = await run_deciding(
            kernel,
            "import tools\nnote = 'kept'\nprint(await tools.send_email('ann'), note)",
            lambda request: Approval.allow(),
        )
    assert result.ok and result.stdout == "sent to ann kept\n"
    kinds = [event.kind for event in events]
    assert kinds.index("approval_requested") < kinds.index("approval_decided")
    (decided,) = [event for event in events if isinstance(event, ApprovalDecided)]
    assert decided.decided_by == "decide" and decided.request.tool == "send_email"
    (call,) = result.tool_calls
    assert call.approval is not None and call.approval.decided_by == "decide"


async def test_an_approver_may_leave_it_to_someone_who_decides_later_from_another_task(
    make_kernel: Callable[..., ToolKernel],
) -> None:
    async with make_kernel(
        [send_email], approve=lambda request: Approval.later(), requires_approval=True
    ) as kernel:

        async def a_person() -> None:
            while not kernel.pending_approvals:  # woken by each event below
                await asked.wait()
            (request,) = kernel.pending_approvals
            await kernel.decide(request.call_id, Approval.deny("ask again on Monday"))

        asked = asyncio.Event()
        person = asyncio.ensure_future(a_person())
        result: ExecutionResult | None = None
        async for event in kernel.stream(
            "import tools\ntry:\n    await tools.send_email('ann')\n"
            "except tools.ToolDeniedError as e:\n    print(e.message)"
        ):
            if isinstance(event, ApprovalRequested):
                asked.set()
            if isinstance(event, ExecutionFinished):
                result = event.result
        await person
    assert result is not None and result.stdout == "ask again on Monday\n"


async def test_waiting_for_a_decision_is_not_charged_to_the_tool_call_timeout(
    make_kernel: Callable[..., ToolKernel],
) -> None:
    async def a_slow_person(request: ApprovalRequest) -> Approval:
        await asyncio.sleep(1.5)  # longer than the tool-call timeout: time must pass
        return Approval.allow()

    async with make_kernel(
        [send_email],
        approve=a_slow_person,
        requires_approval=True,
        timeout=Timeout(60, tool_call=0.5),
    ) as kernel:
        result = await kernel.execute(
            code("""
            import tools
            print(await tools.send_email("ann"))
            def blocking():  # a plain def: the call blocks, without await
                return tools.send_email("bob")
            print(blocking())
            """)
        )
    assert result.ok, result.error
    assert result.stdout.splitlines() == ["sent to ann", "sent to bob"]
    assert all(call.approval and call.approval.waited >= 1.5 for call in result.tool_calls)


async def test_no_decision_within_the_approval_timeout_denies_the_call(
    make_kernel: Callable[..., ToolKernel],
) -> None:
    nobody = Stalling()
    async with make_kernel(
        [send_email],
        approve=nobody,
        requires_approval=True,
        timeout=Timeout(60, approval=0.5),
    ) as kernel:
        events = [
            event
            async for event in kernel.stream(
                "import tools\ntry:\n    await tools.send_email('ann')\n"
                "except tools.ToolDeniedError as e:\n    print(e.message)"
            )
        ]
        await nobody.cancelled.wait()  # the approver is told
        again = await kernel.execute("print('usable')")
    finished = events[-1]
    assert isinstance(finished, ExecutionFinished)
    assert finished.result.stdout == "no decision within 0.5 s (the approval timeout)\n"
    (cancelled,) = [event for event in events if isinstance(event, ApprovalCancelled)]
    assert cancelled.reason == "approval_timeout"
    (call,) = finished.result.tool_calls
    assert call.approval is not None and call.approval.decided_by == "timeout"
    assert again.stdout == "usable\n"


# -- a wait that ends without a decision ----------------------------------------------


async def test_the_run_timeout_while_a_call_waits_cancels_the_request(
    make_kernel: Callable[..., ToolKernel],
) -> None:
    nobody = Stalling()
    async with make_kernel([send_email], approve=nobody, requires_approval=True) as kernel:
        events = [
            event
            async for event in kernel.stream(
                "import tools\nawait tools.send_email('ann')", timeout=1
            )
        ]
        again = await kernel.execute("print('usable')")
    finished = events[-1]
    assert isinstance(finished, ExecutionFinished)
    assert finished.result.error is not None and finished.result.error.kind == "timeout"
    await nobody.cancelled.wait()
    (cancelled,) = [event for event in events if isinstance(event, ApprovalCancelled)]
    assert cancelled.reason == "timeout"
    (call,) = finished.result.tool_calls
    assert call.approval is not None and call.approval.decision == "cancelled"
    assert again.stdout == "usable\n" and outbox == []


@pytest.mark.parametrize("awaited", [True, False], ids=["awaited", "blocking"])
async def test_an_interrupt_while_a_call_waits_cancels_the_request(
    make_kernel: Callable[..., ToolKernel], awaited: bool
) -> None:
    nobody = Stalling()
    source = (
        "import tools\nawait tools.send_email('ann')"
        if awaited
        else "import tools\ndef blocking():\n    return tools.send_email('ann')\nblocking()"
    )
    async with make_kernel([send_email], approve=nobody, requires_approval=True) as kernel:
        events: list[Event] = []
        async for event in kernel.stream(source):
            events.append(event)
            if isinstance(event, ApprovalRequested):
                await kernel.interrupt()
        again = await kernel.execute("print('usable')")
    finished = events[-1]
    assert isinstance(finished, ExecutionFinished)
    assert finished.result.error is not None
    assert finished.result.error.ename in ("KeyboardInterrupt", "CancelledError")
    await nobody.cancelled.wait()
    (cancelled,) = [event for event in events if isinstance(event, ApprovalCancelled)]
    assert cancelled.reason == "interrupt"
    assert kernel.pending_approvals == [] and again.stdout == "usable\n" and outbox == []


async def test_leaving_the_stream_while_a_call_waits_cancels_the_request(
    make_kernel: Callable[..., ToolKernel],
) -> None:
    nobody = Stalling()
    async with make_kernel([send_email], approve=nobody, requires_approval=True) as kernel:
        async with contextlib.aclosing(
            kernel.stream("import tools\nawait tools.send_email('a')")
        ) as events:
            async for event in events:
                if isinstance(event, ApprovalRequested):
                    await nobody.asked.wait()
                    break
        assert kernel.pending_approvals == []
        await nobody.cancelled.wait()  # the approver is told
        again = await kernel.execute("print('usable')")
    assert again.stdout == "usable\n" and outbox == []


# -- a gather's calls, decided together --------------------------------------------


async def test_gathered_calls_arrive_together_and_are_decided_in_one_loop(
    make_kernel: Callable[..., ToolKernel],
) -> None:
    async with make_kernel([send_email], requires_approval={"send_email"}) as kernel:
        batches: list[tuple[int, ...]] = []
        result: ExecutionResult | None = None
        async for event in kernel.stream(
            "import asyncio, tools\n"
            "sent = await asyncio.gather(*[tools.send_email(f'{i}@x') for i in range(5)])\n"
            "print(len(sent))"
        ):
            if isinstance(event, ApprovalRequested):
                batches.append(event.request.batch)
                if len(kernel.pending_approvals) == len(event.request.batch):
                    for request in kernel.pending_approvals:  # "approve these 5 writes"
                        await kernel.decide(request.call_id, Approval.allow())
            if isinstance(event, ExecutionFinished):
                result = event.result
    assert result is not None and result.stdout == "5\n"
    assert len(batches[0]) == 5 and set(batches) == {batches[0]}  # all five, at once
    assert sorted(outbox) == [f"{i}@x" for i in range(5)]


def test_the_blocking_kernel_decides_the_same_way(kernel_python: str) -> None:
    from progtc_kernel import LocalKernel

    with SyncToolKernel(
        [send_email], kernel=LocalKernel(python=kernel_python), requires_approval=True
    ) as kernel:
        result = None
        for event in kernel.stream("import tools\nprint(await tools.send_email('ann'))"):
            if isinstance(event, ApprovalRequested):
                assert kernel.pending_approvals == [event.request]
                kernel.decide(event.request.call_id, Approval.allow())
            if isinstance(event, ExecutionFinished):
                result = event.result
    assert result is not None and result.stdout == "sent to ann\n"
