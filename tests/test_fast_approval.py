"""Approval of tool calls, on the host, driven by fabricated kernel messages through a
fake ``Transport``: which calls wait, what the kernel is told meanwhile, decisions by
the approver or by ``decide``, grants for a run, batches, timeouts and cancellation."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import AsyncIterator
from typing import Any

import pytest

from progtc_kernel import (
    Approval,
    ApprovalCancelled,
    ApprovalDecided,
    ApprovalRequest,
    ApprovalRequested,
    Timeout,
    Tool,
    ToolBridge,
    ToolCallFinished,
    ToolDeniedError,
    ToolError,
)
from progtc_kernel.exceptions import RESERVED_TOOL_NAMES, TOOL_EXCEPTIONS
from progtc_kernel.host.events import Event
from progtc_kernel.host.results import ApprovalRecord

from .fakes import FakeTransport, Sent

pytestmark = pytest.mark.fast


async def get_weather(city: str) -> str:
    return f"Sunny in {city}"


sent_emails: list[str] = []


async def send_email(to: str, body: str = "") -> str:
    sent_emails.append(to)
    return f"sent to {to}"


def calls(*requests: tuple[int, str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "calls": [{"id": i, "tool": t, "arguments": a} for i, t, a in requests],
        "reply_channel": "shell",
    }


class Watcher:
    """The bridge's tool events, waited for by kind."""

    def __init__(self, bridge: ToolBridge) -> None:
        self.events: list[Event] = []
        self._arrived = asyncio.Event()
        bridge.add_tool_listener(self._on_event)

    def _on_event(self, parent: str | None, event: Event) -> None:
        self.events.append(event)
        self._arrived.set()

    def of(self, kind: type[Any]) -> list[Any]:
        return [event for event in self.events if isinstance(event, kind)]

    async def wait_for(self, kind: type[Any], count: int = 1) -> list[Any]:
        while len(self.of(kind)) < count:
            self._arrived.clear()
            await self._arrived.wait()
        return self.of(kind)

    def record(self, call_id: int) -> Any:
        (finished,) = [e for e in self.of(ToolCallFinished) if e.call.id == call_id]
        return finished.call


@pytest.fixture(autouse=True)
def no_emails_yet() -> None:
    sent_emails.clear()


@pytest.fixture
async def transport() -> FakeTransport:
    return FakeTransport()


def cell(transport: FakeTransport, code: str = "await tools.send_email('a@b.c')") -> Sent:
    """An execute_request, as if a client had sent it: its msg_id is the run's id."""
    transport.send("shell", "execute_request", {"code": code})
    return transport.sent[-1]


async def result_of(transport: FakeTransport) -> dict[str, Any]:
    (entry,) = (await transport.host_said("results")).body["results"]
    return dict(entry)


# -- which calls wait --------------------------------------------------------------


async def test_a_call_named_in_requires_approval_waits_for_decide_and_the_kernel_is_told(
    transport: FakeTransport,
) -> None:
    async with ToolBridge(
        transport, [get_weather, send_email], requires_approval={"send_email"}, extension="loaded"
    ) as bridge:
        watcher = Watcher(bridge)
        run = cell(transport)
        transport.kernel_says(
            "calls",
            calls((1, "send_email", {"to": "a@b.c"}), (2, "get_weather", {"city": "Oslo"})),
            parent=run,
        )
        (requested,) = await watcher.wait_for(ApprovalRequested)
        assert requested.request == ApprovalRequest(
            1, run.msg_id, "send_email", {"to": "a@b.c"}, "send_email is in requires_approval", (1,)
        )
        assert (await result_of(transport))["value"] == "Sunny in Oslo"  # 2 did not wait
        # Its tool-call clock stops in the kernel while it waits.
        assert (await transport.host_said("queued")).body == {"ids": [1]}
        assert bridge.pending_approvals == [requested.request] and sent_emails == []

        await bridge.decide(1, Approval.allow())

        assert (await result_of(transport))["value"] == "sent to a@b.c"
        assert bridge.pending_approvals == []
    (decided,) = watcher.of(ApprovalDecided)
    assert decided.decided_by == "decide" and decided.approval == Approval.allow()
    record = watcher.record(1)
    assert record.ok and record.approval.asked and record.approval.decided_by == "decide"
    assert watcher.record(2).approval is None  # needed none


async def test_an_approver_that_answers_at_once_costs_the_kernel_no_message(
    transport: FakeTransport,
) -> None:
    asked: list[ApprovalRequest] = []

    async def approve(request: ApprovalRequest) -> Approval:
        asked.append(request)
        return Approval.allow()

    async with ToolBridge(
        transport, [send_email], approve=approve, requires_approval=True, extension="loaded"
    ) as bridge:
        watcher = Watcher(bridge)
        transport.kernel_says("calls", calls((1, "send_email", {"to": "a@b.c"})))
        assert (await result_of(transport))["value"] == "sent to a@b.c"
        await watcher.wait_for(ToolCallFinished)
    assert [request.reason for request in asked] == [
        "requires_approval=True: every call needs approval"
    ]
    assert "queued" not in transport.kinds() and "started" not in transport.kinds()
    assert watcher.record(1).approval.decided_by == "approver"


async def test_a_tool_may_require_approval_itself_and_keeps_it_when_renamed(
    transport: FakeTransport,
) -> None:
    declared = Tool.from_function(send_email, requires_approval=True).renamed("mail")
    schema_tool = Tool.from_schema(
        "wipe", {"type": "object", "properties": {}}, lambda args: "wiped", requires_approval=True
    )
    assert declared.requires_approval and schema_tool.renamed("erase").requires_approval
    assert not Tool.from_function(send_email).requires_approval
    assert Tool.from_function(
        Tool.from_function(get_weather), requires_approval=True
    ).requires_approval

    async with ToolBridge(
        transport,
        [declared, schema_tool, get_weather],
        approve=lambda r: Approval.allow(),
        extension="loaded",
    ) as bridge:
        watcher = Watcher(bridge)
        # The kernel learns which tools may wait, to send a gather's calls of them together.
        assert (await transport.host_said("register")).body["approval"] == ["mail", "wipe"]
        transport.kernel_says("calls", calls((1, "mail", {"to": "x@y.z"})))
        await result_of(transport)
        await watcher.wait_for(ToolCallFinished)
    (requested,) = watcher.of(ApprovalRequested)
    assert requested.request.reason == "mail requires approval (declared on the tool)"


async def test_a_predicate_over_the_arguments_picks_the_calls_that_wait(
    transport: FakeTransport,
) -> None:
    def to_outsiders(tool: str, arguments: dict[str, Any]) -> bool:
        return tool == "send_email" and not arguments["to"].endswith("@us.example")

    async with ToolBridge(
        transport,
        [send_email],
        approve=lambda request: Approval.deny("outsiders need a person"),
        requires_approval=to_outsiders,
        extension="loaded",
    ) as bridge:
        watcher = Watcher(bridge)
        transport.kernel_says("calls", calls((1, "send_email", {"to": "me@us.example"})))
        assert (await result_of(transport))["ok"] is True
        transport.kernel_says("calls", calls((2, "send_email", {"to": "you@them.example"})))
        denied = await result_of(transport)
        await watcher.wait_for(ToolCallFinished, 2)
    assert denied["error"] == {
        "kind": "denied",
        "type": "ToolDeniedError",
        "message": "outsiders need a person",
    }
    assert sent_emails == ["me@us.example"]
    assert watcher.record(2).approval == ApprovalRecord(
        asked=True,
        decision="deny",
        decided_by="approver",
        waited=watcher.record(2).approval.waited,
        message="outsiders need a person",
    )
    assert watcher.record(2).error == "ToolDeniedError: outsiders need a person"


def test_requires_approval_and_approve_of_no_usable_kind_say_what_to_give() -> None:
    with pytest.raises(
        TypeError, match=r"give a collection of tool names: requires_approval=\{'send_email'\}"
    ):
        ToolBridge(FakeTransport(), requires_approval="send_email")
    with pytest.raises(TypeError, match=r"give True \(every call\), a collection of tool names"):
        ToolBridge(FakeTransport(), requires_approval=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="approve='yes' is not callable"):
        ToolBridge(FakeTransport(), approve="yes")  # type: ignore[arg-type]


# -- decisions --------------------------------------------------------------------


async def test_allow_for_run_covers_the_tool_for_the_rest_of_its_run_only(
    transport: FakeTransport,
) -> None:
    asked: list[int] = []

    def approve(request: ApprovalRequest) -> Approval:
        asked.append(request.call_id)
        return Approval.allow_for_run()

    async with ToolBridge(
        transport,
        [send_email],
        approve=approve,
        requires_approval={"send_email"},
        extension="loaded",
    ) as bridge:
        watcher = Watcher(bridge)
        run = cell(transport)
        for call_id in (1, 2):
            transport.kernel_says("calls", calls((call_id, "send_email", {"to": "a"})), parent=run)
            await result_of(transport)
        transport.deliver("iopub", "status", {"execution_state": "idle"}, parent=run)  # it ends
        transport.kernel_says(
            "calls", calls((3, "send_email", {"to": "a"})), parent=cell(transport)
        )
        await result_of(transport)
        await watcher.wait_for(ToolCallFinished, 3)
    assert asked == [1, 3]  # 2 was covered; the next run asks again
    assert watcher.record(2).approval == ApprovalRecord(
        asked=False, decision="allow", decided_by="run_grant"
    )
    assert watcher.record(1).approval.decision == "allow_for_run"


async def test_a_batch_arrives_together_and_one_answer_may_decide_it(
    transport: FakeTransport,
) -> None:
    seen_pending: list[list[int]] = []

    def approve(request: ApprovalRequest) -> Approval:
        seen_pending.append([r.call_id for r in bridge.pending_approvals])
        return Approval.allow_for_run()

    bridge = ToolBridge(
        transport,
        [send_email],
        approve=approve,
        requires_approval={"send_email"},
        extension="loaded",
    )
    async with bridge:
        watcher = Watcher(bridge)
        run = cell(transport)
        transport.kernel_says(
            "calls", calls(*[(i, "send_email", {"to": f"{i}@x"}) for i in range(1, 6)]), parent=run
        )
        requests = [event.request for event in await watcher.wait_for(ApprovalRequested, 5)]
        await watcher.wait_for(ToolCallFinished, 5)
    assert {request.batch for request in requests} == {(1, 2, 3, 4, 5)}
    assert seen_pending == [[1, 2, 3, 4, 5]]  # asked once: the grant decided the other four
    assert [watcher.record(i).approval.decided_by for i in range(1, 6)] == [
        "approver",
        "run_grant",
        "run_grant",
        "run_grant",
        "run_grant",
    ]
    assert sorted(sent_emails) == [f"{i}@x" for i in range(1, 6)]


async def test_an_approver_may_say_later_and_a_decision_comes_from_elsewhere(
    transport: FakeTransport,
) -> None:
    async def approve(request: ApprovalRequest) -> Approval:
        return Approval.later()

    async with ToolBridge(
        transport, [send_email], approve=approve, requires_approval=True, extension="loaded"
    ) as bridge:
        watcher = Watcher(bridge)
        transport.kernel_says("calls", calls((7, "send_email", {"to": "a"})))
        await transport.host_said("queued")

        async def a_person() -> None:
            (requested,) = await watcher.wait_for(ApprovalRequested)
            await bridge.decide(requested.request.call_id, Approval.deny("not today"))

        await asyncio.gather(a_person(), transport.host_said("results"))
        await watcher.wait_for(ToolCallFinished)
    assert watcher.record(7).approval.decided_by == "decide"
    assert watcher.record(7).error == "ToolDeniedError: not today"
    assert "started" not in transport.kinds()  # denied: it never ran


async def test_an_approved_call_that_takes_its_time_restarts_its_clock_in_the_kernel(
    transport: FakeTransport,
) -> None:
    release = asyncio.Event()

    async def deploy(service: str) -> str:
        await release.wait()
        return f"deployed {service}"

    async with ToolBridge(
        transport, [deploy], requires_approval={"deploy"}, extension="loaded"
    ) as bridge:
        transport.kernel_says("calls", calls((1, "deploy", {"service": "api"})))
        assert (await transport.host_said("queued")).body == {"ids": [1]}
        await bridge.decide(1, Approval.allow())
        assert (await transport.host_said("started")).body == {"ids": [1]}
        release.set()
        assert (await result_of(transport))["value"] == "deployed api"


async def test_decide_refuses_a_call_that_does_not_wait_and_a_non_decision(
    transport: FakeTransport,
) -> None:
    async with ToolBridge(
        transport, [send_email], requires_approval=True, extension="loaded"
    ) as bridge:
        watcher = Watcher(bridge)
        transport.kernel_says("calls", calls((3, "send_email", {"to": "a"})))
        await watcher.wait_for(ApprovalRequested)
        with pytest.raises(
            ValueError, match=r"no call 9 waits for a decision .*calls waiting now: 3"
        ):
            await bridge.decide(9, Approval.allow())
        with pytest.raises(ValueError, match=r"Approval.later\(\) is an approver's way to defer"):
            await bridge.decide(3, Approval.later())
        with pytest.raises(TypeError, match=r"decide\(\) takes an Approval"):
            await bridge.decide(3, True)  # type: ignore[arg-type]
        await bridge.decide(3, Approval.allow())
        await transport.host_said("results")
        with pytest.raises(ValueError, match="calls waiting now: none"):
            await bridge.decide(3, Approval.allow())


@pytest.mark.parametrize(
    ("approver", "message"),
    [
        (lambda request: 1 / 0, "the approver failed (ZeroDivisionError: division by zero)"),
        (lambda request: True, "the approver returned True, not an Approval"),
    ],
)
async def test_a_broken_approver_denies_and_never_lets_a_call_through(
    transport: FakeTransport, approver: Any, message: str
) -> None:
    async with ToolBridge(
        transport, [send_email], approve=approver, requires_approval=True, extension="loaded"
    ):
        transport.kernel_says("calls", calls((1, "send_email", {"to": "a"})))
        entry = await result_of(transport)
    assert entry["error"]["kind"] == "denied" and message in entry["error"]["message"]
    assert sent_emails == []


# -- waiting ends -------------------------------------------------------------------


async def test_no_decision_within_the_approval_timeout_denies_and_cancels_the_approver(
    transport: FakeTransport,
) -> None:
    approver_cancelled = asyncio.Event()

    async def approve(request: ApprovalRequest) -> Approval:
        try:
            await asyncio.Event().wait()  # a person who never answers
        except asyncio.CancelledError:
            approver_cancelled.set()
            raise
        raise AssertionError("unreachable")

    async with ToolBridge(
        transport,
        [send_email],
        approve=approve,
        requires_approval=True,
        approval_timeout=0.05,
        extension="loaded",
    ) as bridge:
        watcher = Watcher(bridge)
        transport.kernel_says("calls", calls((1, "send_email", {"to": "a"})))
        entry = await result_of(transport)
        await approver_cancelled.wait()
        await watcher.wait_for(ToolCallFinished)
    assert entry["error"]["message"] == "no decision within 0.05 s (the approval timeout)"
    (cancelled,) = watcher.of(ApprovalCancelled)
    assert cancelled.reason == "approval_timeout"
    assert watcher.record(1).approval.decided_by == "timeout"
    assert watcher.record(1).approval.decision == "deny"


@pytest.mark.parametrize(
    ("kernel_reason", "told"), [("interrupt", "interrupt"), ("cancelled", "cancelled")]
)
async def test_a_call_the_kernel_cancels_while_it_waits_cancels_its_request(
    transport: FakeTransport, kernel_reason: str, told: str
) -> None:
    approver_cancelled = asyncio.Event()

    async def approve(request: ApprovalRequest) -> Approval:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            approver_cancelled.set()
            raise
        raise AssertionError("unreachable")

    async with ToolBridge(
        transport, [send_email], approve=approve, requires_approval=True, extension="loaded"
    ) as bridge:
        watcher = Watcher(bridge)
        transport.kernel_says("calls", calls((1, "send_email", {"to": "a"})))
        await transport.host_said("queued")
        transport.kernel_says("cancelled", {"ids": [1], "reason": kernel_reason})
        await approver_cancelled.wait()
        (cancelled,) = await watcher.wait_for(ApprovalCancelled)
        await watcher.wait_for(ToolCallFinished)
        assert bridge.pending_approvals == []
    assert cancelled.reason == told
    record = watcher.record(1)
    assert record.error == "cancelled" and record.approval.decision == "cancelled"
    assert record.approval.message == told and record.approval.decided_by is None
    assert "results" not in transport.kinds() and sent_emails == []


async def test_a_call_cancelled_before_its_task_ran_is_recorded_and_forgotten(
    transport: FakeTransport,
) -> None:
    async with ToolBridge(
        transport, [send_email], requires_approval=True, extension="loaded"
    ) as bridge:
        watcher = Watcher(bridge)
        transport.kernel_says("calls", calls((1, "send_email", {"to": "a"})))
        transport.kernel_says("cancelled", {"ids": [1], "reason": "interrupt"})  # same turn
        await watcher.wait_for(ToolCallFinished)
        assert bridge.calls.tasks == {} and bridge.pending_approvals == []
    assert watcher.record(1).error == "cancelled"
    assert watcher.record(1).approval.decision == "cancelled"
    assert [event.reason for event in watcher.of(ApprovalCancelled)] == ["interrupt"]


async def test_closing_the_bridge_cancels_the_requests_that_wait(transport: FakeTransport) -> None:
    bridge = ToolBridge(transport, [send_email], requires_approval=True, extension="loaded")
    watcher = Watcher(bridge)
    async with bridge:
        transport.kernel_says("calls", calls((1, "send_email", {"to": "a"})))
        await watcher.wait_for(ApprovalRequested)
    (cancelled,) = watcher.of(ApprovalCancelled)
    assert cancelled.reason == "host_closed" and bridge.pending_approvals == []


# -- the error kernel code sees --------------------------------------------------------


def test_a_denial_is_a_tool_error_and_a_permission_error_carrying_its_message() -> None:
    error = ToolDeniedError("send_email", "ToolDeniedError", "over budget")
    assert isinstance(error, ToolError) and isinstance(error, PermissionError)
    assert str(error) == "tool 'send_email' was denied: over budget"
    assert error.message == "over budget" and error.tool == "send_email"
    copied = pickle.loads(pickle.dumps(error))
    assert type(copied) is ToolDeniedError and str(copied) == str(error)
    assert ToolDeniedError in TOOL_EXCEPTIONS and "ToolDeniedError" in RESERVED_TOOL_NAMES


def test_the_approval_timeout_is_no_limit_by_default_and_checked() -> None:
    assert Timeout().approval is None
    assert Timeout(approval=60).approval == 60.0
    with pytest.raises(ValueError, match="approval=0 is not a timeout"):
        Timeout(approval=0)


@pytest.fixture
async def served(transport: FakeTransport) -> AsyncIterator[ToolBridge]:
    async with ToolBridge(transport, [send_email], extension="loaded") as bridge:
        yield bridge


async def test_without_a_policy_nothing_waits_and_the_kernel_defers_nothing(
    served: ToolBridge, transport: FakeTransport
) -> None:
    assert (await transport.host_said("register")).body["approval"] == []
    transport.kernel_says("calls", calls((1, "send_email", {"to": "a"})))
    assert (await result_of(transport))["ok"] is True
