"""ProgrammaticToolset(approve=, requires_approval=): a script's calls that need
approval wait for the approver; a denial is an exception the script may catch, and
uncaught it is the contract's error for the script's exception. The instructions say
which tools need approval."""

from __future__ import annotations

import json
from typing import Any

import pytest

from progtc_kernel import (
    Approval,
    ApprovalRequest,
    LocalKernel,
    ProgrammaticToolset,
    ScriptError,
    Timeout,
    Tool,
    ToolKernel,
)


async def get_balance(account: str) -> int:
    """The balance of an account, in euros."""
    return 100


async def pay(account: str, amount: int) -> str:
    """Pay an amount from an account."""
    return f"paid {amount} from {account}"


def over_budget(request: ApprovalRequest) -> Approval:
    """Allow payments up to 50 euros."""
    if request.arguments["amount"] > 50:
        return Approval.deny(f"{request.arguments['amount']} is over the budget of 50")
    return Approval.allow()


PAYMENTS = """\
import asyncio
from tools import get_balance, pay, ToolDeniedError

async def run():
    paid = []
    for amount in (20, 80):
        try:
            paid.append(await pay("acme", amount))
        except ToolDeniedError as denied:
            paid.append(f"denied: {denied}")
    return {"balance": await get_balance("acme"), "paid": paid}
"""


@pytest.mark.ipykernel_lines  # queued notices and the denied error kind, in the kernel
async def test_a_denied_call_is_an_exception_the_script_catches(kernel_python: str) -> None:
    asked: list[tuple[str, dict[str, Any], str]] = []

    def approve(request: ApprovalRequest) -> Approval:
        asked.append((request.tool, request.arguments, request.reason))
        return over_budget(request)

    async with ProgrammaticToolset(
        [get_balance, pay],
        kernel=LocalKernel(python=kernel_python),
        approve=approve,
        requires_approval={"pay"},
    ) as toolset:
        result = await toolset.run_script(PAYMENTS)

    assert result.value == {
        "balance": 100,
        "paid": ["paid 20 from acme", "denied: tool 'pay' was denied: 80 is over the budget of 50"],
    }
    assert asked == [
        ("pay", {"account": "acme", "amount": 20}, "pay is in requires_approval"),
        ("pay", {"account": "acme", "amount": 80}, "pay is in requires_approval"),
    ]
    # Each call's record says how it was decided; get_balance needed no approval.
    decisions = [
        (call.name, call.approval.decision if call.approval else None) for call in result.tool_calls
    ]
    assert decisions == [("pay", "allow"), ("pay", "deny"), ("get_balance", None)]


async def test_an_uncaught_denial_fails_the_script_as_its_own_exception(
    kernel_python: str,
) -> None:
    script = "from tools import pay\n\ndef run():\n    return {'paid': pay('acme', 80)}\n"
    async with ProgrammaticToolset(
        [Tool.from_function(pay, requires_approval=True)],
        kernel=LocalKernel(python=kernel_python),
        approve=over_budget,
    ) as toolset:
        with pytest.raises(ScriptError) as raised:
            await toolset.execute_tool_script(script)
        # A PermissionError: that is what the contract's "any unhandled exception" is.
        assert raised.value.type_name == "ToolDeniedError"
        assert str(raised.value) == (
            "ToolDeniedError: tool 'pay' was denied: 80 is over the budget of 50 "
            "(line 4: `return {'paid': pay('acme', 80)}`)"
        )
        # The kernel is usable after it.
        assert json.loads(await toolset.execute_tool_script("def run():\n    return {}")) == {}


async def test_the_instructions_name_the_tools_that_need_approval(kernel_python: str) -> None:
    toolset = ProgrammaticToolset(
        [get_balance, pay, Tool.from_function(get_balance, name="audit", requires_approval=True)],
        kernel=LocalKernel(python=kernel_python),
        approve=over_budget,
        requires_approval={"pay"},
    )
    instructions = (await toolset.get_execution_environment())["instructions"]

    assert "Calls of `pay`, `audit` need a person's approval" in instructions
    assert "raises `ToolDeniedError`" in " ".join(instructions.split())
    assert "`PermissionError`" in instructions
    stub = instructions.split("def pay(", 1)[1].split("def ", 1)[0]
    assert "Needs approval: each call waits until a person allows or denies it." in stub
    assert "Needs approval" not in instructions.split("def get_balance(", 1)[1].split("def ", 1)[0]


async def test_a_predicate_makes_the_instructions_say_some_calls_need_approval(
    kernel_python: str,
) -> None:
    toolset = ProgrammaticToolset(
        [get_balance, pay],
        kernel=LocalKernel(python=kernel_python),
        requires_approval=lambda tool, arguments: arguments.get("amount", 0) > 50,
    )
    instructions = (await toolset.get_execution_environment())["instructions"]
    assert "Some tool calls (depending on the tool and its arguments) need a" in instructions
    # Without approval, the instructions say nothing of it.
    plain = ProgrammaticToolset([get_balance, pay], kernel=LocalKernel(python=kernel_python))
    assert "approval" not in (await plain.get_execution_environment())["instructions"]


def test_approval_options_with_a_tool_kernel_given_go_to_that_kernel() -> None:
    with pytest.raises(ValueError, match=r"set them there, ToolKernel\(\.\.\., approve="):
        ProgrammaticToolset([pay], kernel=ToolKernel([pay]), approve=over_budget)
    with pytest.raises(ValueError, match="the kernel given has its own"):
        ProgrammaticToolset([pay], kernel=ToolKernel([pay]), timeout=Timeout(60, approval=5))
    kernel = ToolKernel([pay], approve=over_budget, requires_approval={"pay"})
    assert ProgrammaticToolset([pay], kernel=kernel).kernel is kernel
