"""``progtc-kernel mcp --approve TOOL``: the MCP client's user decides each such call,
asked by elicitation while the script waits in the kernel.

The server is the real command; the clients are the MCP SDK's own, at both of its
protocol eras: the handshake era (up to 2025-11-25), where the server sends
``elicitation/create`` during the tool call, and 2026-07-28 (``Client``'s default),
where the call answers ``InputRequiredResult`` and the client calls again with the
user's answers. The "user" is the client's elicitation callback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp", reason="the MCP SDK is an optional extra")

from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.client import Client
from mcp.types import (
    CallToolResult,
    ElicitRequestFormParams,
    ElicitRequestParams,
    ElicitResult,
    TextContent,
)

from .test_cli import progtc_kernel
from .test_mcp import ROOT, UPSTREAM

MAIL_TOOLS = '''\
def send_email(to: str, subject: str) -> str:
    """Send an email."""
    return f"sent {subject!r} to {to}"

def transfer(amount: int) -> str:
    return f"moved {amount}"

def get_weather(city: str) -> str:
    return f"Sunny in {city}"

# A transfer above 100 needs approval (send_email: by --approve, below).
def REQUIRES_APPROVAL(tool, arguments):
    return tool == "transfer" and arguments["amount"] > 100
'''


class User:
    """The person behind the MCP client: answers each form with the next answer
    given (``accept`` by default), and remembers what was asked."""

    def __init__(self) -> None:
        self.asked: list[ElicitRequestParams] = []
        self.answers: list[ElicitResult] = []

    async def __call__(self, context: Any, params: ElicitRequestParams) -> ElicitResult:
        self.asked.append(params)
        return self.answers.pop(0) if self.answers else ElicitResult(action="accept")

    def messages(self) -> list[str]:
        return [params.message for params in self.asked]


def server_command(kernel_python: str, tools: Path, *args: str) -> StdioServerParameters:
    command = [
        sys.executable,
        "-c",
        "from progtc_kernel.cli import main; raise SystemExit(main())",
        "mcp",
        "--tools",
        str(tools),
        "--python",
        kernel_python,
        *args,
    ]
    return StdioServerParameters(command=command[0], args=command[1:], cwd=str(ROOT))


@pytest.fixture(scope="module")
def mail_tools(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mail") / "mail_tools.py"
    path.write_text(MAIL_TOOLS)
    return path


@contextlib.asynccontextmanager
async def handshake_client(
    parameters: StdioServerParameters, user: User | None
) -> AsyncIterator[ClientSession]:
    """The SDK's session at the handshake era (``initialize``); ``user``: its
    elicitation callback (None: a client that cannot elicit)."""
    async with (
        stdio_client(parameters) as (read, write),
        ClientSession(read, write, elicitation_callback=user) as session,
    ):
        await session.initialize()
        yield session


async def script(session: ClientSession | Client, code: str) -> CallToolResult:
    return await session.call_tool("execute_tool_script", {"script": code})


def value_of(result: CallToolResult) -> Any:
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    return json.loads(result.structured_content["returnValue"])


def text_of(result: CallToolResult) -> list[str]:
    return [block.text for block in result.content if isinstance(block, TextContent)]


SEND_TWICE = """\
from tools import send_email, get_weather, ToolDeniedError

def run():
    out = {"weather": get_weather("Oslo")}
    out["bob"] = send_email(to="bob@example.com", subject="Hi")
    try:
        out["eve"] = send_email(to="eve@example.com", subject="Secrets")
    except ToolDeniedError as e:
        out["eve"] = "denied: " + e.message
    return out
"""


async def test_the_user_allows_and_declines_at_the_handshake_era(
    kernel_python: str, mail_tools: Path
) -> None:
    user = User()
    user.answers = [ElicitResult(action="accept"), ElicitResult(action="decline")]
    parameters = server_command(kernel_python, mail_tools, "--approve", "send_email")
    async with handshake_client(parameters, user) as session:
        assert session.protocol_version == "2025-11-25"
        environment = await session.call_tool("get_execution_environment", {})
        assert environment.structured_content is not None
        instructions = environment.structured_content["returnValue"]["instructions"]
        assert "Needs approval" in instructions.split("def send_email")[1].split("def ")[0]
        value = value_of(await script(session, SEND_TWICE))
    assert value == {
        "weather": "Sunny in Oslo",
        "bob": "sent 'Hi' to bob@example.com",
        "eve": "denied: the user declined the call of send_email",
    }
    # Each form names the tool and shows the arguments; get_weather was not asked.
    first, second = user.messages()
    assert first.startswith("The script wants to call send_email with these arguments:\n")
    assert '"to": "bob@example.com"' in first and '"subject": "Hi"' in first
    assert '"to": "eve@example.com"' in second
    assert isinstance(user.asked[0], ElicitRequestFormParams)
    assert user.asked[0].requested_schema["properties"]["allow_for_run"]["type"] == "boolean"


async def test_an_unhandled_denial_is_the_scripts_error(
    kernel_python: str, mail_tools: Path
) -> None:
    user = User()
    user.answers = [ElicitResult(action="cancel")]
    parameters = server_command(kernel_python, mail_tools, "--approve", "send_email")
    async with handshake_client(parameters, user) as session:
        result = await script(
            session,
            "from tools import send_email\n"
            "def run():\n"
            "    return {'r': send_email(to='bob@example.com', subject='Hi')}\n",
        )
    assert result.is_error
    assert text_of(result)[0].startswith(
        "ToolDeniedError: tool 'send_email' was denied: the user dismissed the approval of "
        "send_email without allowing it"
    ), text_of(result)


async def test_a_client_without_elicitation_gets_an_error_that_says_what_to_do(
    kernel_python: str, mail_tools: Path
) -> None:
    parameters = server_command(kernel_python, mail_tools, "--approve", "send_email")
    async with handshake_client(parameters, None) as session:
        result = await script(
            session,
            "from tools import send_email, get_weather\n"
            "def run():\n"
            "    return {'w': get_weather('Rome'), 'r': send_email(to='b@x.org', subject='Hi')}\n",
        )
        assert result.is_error
        assert text_of(result)[0].startswith(
            "ToolDeniedError: tool 'send_email' was denied: send_email needs the user's "
            "approval, and this MCP client "
            "cannot ask for it (it did not declare the elicitation capability): use a client "
            "with elicitation, or start progtc-kernel mcp without --approve"
        ), text_of(result)
        # The server is not stuck: the next script runs.
        assert value_of(await script(session, "def run():\n    return {'ok': 1}")) == {"ok": 1}


class AbsentUser(User):
    """Never answers; remembers that the question was withdrawn."""

    def __init__(self) -> None:
        super().__init__()
        self.asking = asyncio.Event()
        self.withdrawn = asyncio.Event()

    async def __call__(self, context: Any, params: ElicitRequestParams) -> ElicitResult:
        self.asked.append(params)
        self.asking.set()
        try:
            await asyncio.Event().wait()
        finally:
            self.withdrawn.set()
        raise AssertionError("unreachable")


async def test_a_question_nobody_answers_is_withdrawn_at_the_approval_timeout(
    kernel_python: str, mail_tools: Path
) -> None:
    user = AbsentUser()
    parameters = server_command(
        kernel_python, mail_tools, "--approve", "send_email", "--approval-timeout", "1"
    )
    async with handshake_client(parameters, user) as session:
        value = value_of(
            await script(
                session,
                """\
from tools import send_email, ToolDeniedError
def run():
    try:
        send_email(to="bob@example.com", subject="Hi")
    except ToolDeniedError as e:
        return {"denied": e.message}
""",
            )
        )
        await user.withdrawn.wait()  # the client was told the question is gone
    assert value == {"denied": "no decision within 1 s (the approval timeout)"}
    assert len(user.asked) == 1


async def test_a_client_that_cancels_its_call_ends_the_script_and_the_next_one_runs(
    kernel_python: str, mail_tools: Path
) -> None:
    user = AbsentUser()
    parameters = server_command(kernel_python, mail_tools, "--approve", "send_email")
    async with handshake_client(parameters, user) as session:
        call = asyncio.ensure_future(script(session, SEND_TWICE))
        await user.asking.wait()  # the question is on the user's screen
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await user.withdrawn.wait()
        assert value_of(await script(session, "def run():\n    return {'ok': 1}")) == {"ok": 1}


async def test_at_2026_07_28_the_client_answers_by_calling_again(
    kernel_python: str, mail_tools: Path
) -> None:
    """``Client``'s default mode reaches 2026-07-28 (no server-sent requests): the
    script keeps waiting in the kernel while the client asks its user and calls
    again with the answers. The three calls of a gather are asked in one round; the
    tools module's own policy (a transfer above 100) holds too."""
    user = User()
    user.answers = [
        ElicitResult(action="accept", content={"allow_for_run": True}),
        ElicitResult(action="accept"),
        ElicitResult(action="decline"),
        ElicitResult(action="accept"),  # the big transfer
    ]
    parameters = server_command(kernel_python, mail_tools, "--approve", "send_email")
    async with Client(parameters, elicitation_callback=user) as client:
        assert client.session.protocol_version == "2026-07-28"
        result = await script(
            client,
            """\
import asyncio
from tools import send_email, transfer, ToolDeniedError

async def run():
    async def send(i):
        try:
            return await send_email(to=f"u{i}@example.com", subject="news")
        except ToolDeniedError as e:
            return "denied"
    sent = await asyncio.gather(*(send(i) for i in range(3)))
    later = await send_email(to="z@example.com", subject="later")
    small, big = await transfer(amount=5), await transfer(amount=500)
    return {"sent": sorted(sent), "later": later, "small": small, "big": big}
""",
        )
    value = value_of(result)
    # Whichever call the first answer (allow for this run) went to, "later" ran unasked.
    assert value["later"] == "sent 'later' to z@example.com"
    assert value["small"] == "moved 5" and value["big"] == "moved 500"
    assert len(user.asked) == 4  # three sends together, then the big transfer
    assert '"amount": 500' in user.messages()[3]
    assert all("send_email" in message for message in user.messages()[:3])


async def test_an_upstream_servers_tool_needs_approval_too(
    kernel_python: str, mail_tools: Path
) -> None:
    user = User()
    user.answers = [ElicitResult(action="decline"), ElicitResult(action="accept")]
    parameters = server_command(
        kernel_python, mail_tools, "--upstream", UPSTREAM, "--approve", "add"
    )
    async with handshake_client(parameters, user) as session:
        value = value_of(
            await script(
                session,
                """\
from tools import add, ToolDeniedError
def run():
    try:
        add(a=1, b=2)
    except ToolDeniedError as e:
        first = e.message
    return {"first": first, "second": add(a=2, b=3)["result"]}
""",
            )
        )
    assert value == {"first": "the user declined the call of add", "second": 5}
    assert '"a": 1' in user.messages()[0]


def test_approve_names_a_tool_of_the_server_or_an_upstream(mail_tools: Path) -> None:
    done = progtc_kernel(
        "mcp", "--tools", str(mail_tools), "--upstream", UPSTREAM, "--approve", "ad", stdin=""
    )
    assert done.returncode == 2
    assert "--approve ad: there is no tool of that name; the tools are add, crash," in done.stderr
