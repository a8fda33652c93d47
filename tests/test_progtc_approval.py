"""``AsyncProgtcClient(approve=...)`` and ``execute_code(..., approve=...)``: calls that
need approval run once the approver allows them, against a real ``progtc-kernel
serve`` on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from progtc_kernel import Approval, ApprovalRequest, AsyncProgtcClient
from progtc_kernel.types import ErrorCode, ExecuteCodeError, ExecuteCodeSuccess

from .servers import JupyterProcess
from .test_progtc_server import progtc_serve

pytestmark = pytest.mark.timeout(300)

SEND = """\
from tools import send_email, get_weather
print(await get_weather("Oslo"))
print(await send_email(to="bob@example.com", subject="Hi"))
"""


async def send_email(to: str, subject: str) -> str:
    return f"sent {subject!r} to {to}"


async def get_weather(city: str) -> str:
    return f"Sunny in {city}"


TOOLS: dict[str, Callable[..., Any]] = {"send_email": send_email, "get_weather": get_weather}


@pytest.fixture(scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[JupyterProcess]:
    process = await progtc_serve(tmp_path_factory.mktemp("serve"), "--pool-size", "1").start()
    yield process
    process.stop()


class Approver:
    """Answers every request with ``answer``, and remembers what it was asked."""

    def __init__(self, answer: Approval) -> None:
        self.answer = answer
        self.asked: list[ApprovalRequest] = []

    async def __call__(self, request: ApprovalRequest) -> Approval:
        self.asked.append(request)
        return self.answer


async def test_an_allowed_call_runs_and_its_record_says_so(served: JupyterProcess) -> None:
    approver = Approver(Approval.allow())
    async with AsyncProgtcClient(
        served.url, api_key=served.token, approve=approver, requires_approval={"send_email"}
    ) as client:
        result = await client.execute_code(SEND, TOOLS)
    assert isinstance(result, ExecuteCodeSuccess), result
    assert result.stdout == "Sunny in Oslo\nsent 'Hi' to bob@example.com\n"
    [request] = approver.asked  # get_weather needed no approval
    assert (request.tool, request.arguments) == (
        "send_email",
        {"to": "bob@example.com", "subject": "Hi"},
    )
    weather, send = result.tool_calls
    assert weather.approval is None
    assert send.approval is not None
    assert (send.approval.asked, send.approval.decision) == (True, "allow")


async def test_a_denial_is_progtcs_runtime_error_unless_the_code_catches_it(
    served: JupyterProcess,
) -> None:
    async with AsyncProgtcClient(
        served.url,
        api_key=served.token,
        approve=Approver(Approval.deny("no mail today")),
        requires_approval={"send_email"},
    ) as client:
        result = await client.execute_code(SEND, TOOLS)
        assert isinstance(result, ExecuteCodeError), result
        assert result.code == ErrorCode.CODE_RUNTIME_ERROR
        assert result.message == "ToolDeniedError: tool 'send_email' was denied: no mail today"
        assert result.stdout == "Sunny in Oslo\n"

        caught = await client.execute_code(
            "from tools import send_email, ToolDeniedError\n"
            "try:\n"
            "    await send_email(to='bob@example.com', subject='Hi')\n"
            "except ToolDeniedError as e:\n"
            "    print('not sent:', e.message)\n",
            TOOLS,
        )
    assert isinstance(caught, ExecuteCodeSuccess), caught
    assert caught.stdout == "not sent: no mail today\n"


async def test_each_execution_may_give_its_own_approver_and_policy(
    served: JupyterProcess,
) -> None:
    refuse = Approver(Approval.deny("refused by the client's default"))
    allow = Approver(Approval.allow())
    async with AsyncProgtcClient(
        served.url, api_key=served.token, approve=refuse, requires_approval={"send_email"}
    ) as client:
        allowed = await client.execute_code(SEND, TOOLS, approve=allow)
        # This execution asks about every call, with the client's approver.
        everything = await client.execute_code(SEND, TOOLS, requires_approval=True)
        # And this one about none.
        none = await client.execute_code(SEND, TOOLS, requires_approval=None)
    assert isinstance(allowed, ExecuteCodeSuccess), allowed
    assert [request.tool for request in allow.asked] == ["send_email"]
    assert isinstance(everything, ExecuteCodeError)
    assert everything.message == (
        "ToolDeniedError: tool 'get_weather' was denied: refused by the client's default"
    )
    assert [request.tool for request in refuse.asked] == ["get_weather"]
    assert isinstance(none, ExecuteCodeSuccess), none


@pytest.mark.fast
async def test_a_policy_without_an_approver_is_refused_at_once(tmp_path: Path) -> None:
    # Nobody could decide (the client holds no kernel to decide() on): no run waits
    # for ever; the error comes before any request to the server.
    client = AsyncProgtcClient("http://127.0.0.1:9", api_key="k", requires_approval={"a"})
    with pytest.raises(TypeError, match="no approve= decides: give approve="):
        await client.execute_code("1", {"a": send_email})
