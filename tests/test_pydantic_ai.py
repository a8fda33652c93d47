"""CodeModeToolset: a pydantic-ai agent calls tools through one script.

The model is pydantic-ai's ``FunctionModel``, playing a model that reads the
environment, writes a script gathering several tool calls, then answers."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pydantic_ai", reason="pydantic-ai needs Python 3.11+")

from pydantic_ai import (
    Agent,
    CombinedToolset,
    DeferredToolRequests,
    DeferredToolResults,
    FunctionToolset,
    RunContext,
    Tool,
)
from pydantic_ai.capabilities import HandleDeferredToolCalls
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.tools import ToolDefinition

from progtc_kernel import LocalKernel, ToolKernel
from progtc_kernel._install import install_hint
from progtc_kernel.integrations.pydantic_ai import CodeModeToolset

from .npm_servers import everything_binary

UPSTREAM = Path(__file__).resolve().parent / "mcp_upstream.py"
SCRIPT = """\
import asyncio
from tools import get_weather, convert

async def run():
    cities = ["Oslo", "Rome", "Lima"]
    weather = await asyncio.gather(*(get_weather(city) for city in cities))
    print("asked", len(cities), "cities")
    return {"weather": dict(zip(cities, weather)), "price": await convert(amount=10)}
"""


def get_weather(city: str) -> str:
    """Current weather for a city."""
    return f"Sunny in {city}"


def convert(amount: float, rate: float = 0.5) -> float:
    """Convert an amount with an exchange rate."""
    return amount * rate


def balance(ctx: RunContext[str]) -> str:
    """The balance of the account of the user the agent works for."""
    return f"{ctx.deps}: 100 EUR"


def audit_log(ctx: RunContext[str]) -> list[str]:
    """Who logged in lately (for admins only)."""
    return ["alice", "bob"]


async def for_admins(ctx: RunContext[str], tool: ToolDefinition) -> ToolDefinition | None:
    return tool if ctx.deps == "admin" else None


class Meeting:
    """Tasks that go on only once all ``count`` of them have arrived (as Python 3.11's
    ``asyncio.Barrier``, which mypy's Python 3.10 does not know)."""

    def __init__(self, count: int) -> None:
        self.missing = count
        self.all_here = asyncio.Event()

    async def wait(self) -> None:
        self.missing -= 1
        if self.missing == 0:
            self.all_here.set()
        await self.all_here.wait()


def returns(messages: list[ModelMessage]) -> list[ToolReturnPart]:
    return [
        part
        for message in messages
        if isinstance(message, ModelRequest)
        for part in message.parts
        if isinstance(part, ToolReturnPart)
    ]


async def test_an_agent_reads_the_environment_runs_a_script_and_answers(kernel_python: str) -> None:
    seen: dict[str, Any] = {}

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        step = sum(isinstance(message, ModelResponse) for message in messages)
        if step == 0:
            seen["tools"] = sorted(tool.name for tool in info.function_tools)
            return ModelResponse(parts=[ToolCallPart("get_execution_environment", {})])
        if step == 1:
            seen["environment"] = returns(messages)[-1].content
            return ModelResponse(parts=[ToolCallPart("execute_tool_script", {"script": SCRIPT})])
        seen["result"] = json.loads(str(returns(messages)[-1].content))
        return ModelResponse(parts=[TextPart(f"Oslo: {seen['result']['weather']['Oslo']}")])

    toolset = CodeModeToolset(
        toolsets=[FunctionToolset([get_weather, convert])],
        kernel=ToolKernel(kernel=LocalKernel(python=kernel_python)),
    )
    result = await Agent(FunctionModel(model), toolsets=[toolset]).run("Weather?")

    assert result.output == "Oslo: Sunny in Oslo"
    # The model sees only the two tools; the function tools are in the scripts' stubs.
    assert seen["tools"] == ["execute_tool_script", "get_execution_environment"]
    instructions = seen["environment"]["instructions"]
    assert "def get_weather(city: str) -> str:" in instructions
    assert "def convert(amount: float, rate: float = 0.5) -> float:" in instructions
    assert seen["result"] == {
        "weather": {"Oslo": "Sunny in Oslo", "Rome": "Sunny in Rome", "Lima": "Sunny in Lima"},
        "price": 5.0,
    }
    printed = [
        part.content
        for message in result.all_messages()
        if isinstance(message, ModelRequest)
        for part in message.parts
        if isinstance(part, UserPromptPart)
    ]
    assert "The script printed:\nasked 3 cities\n" in printed


async def test_a_failing_script_is_reported_to_the_model_which_tries_again(
    kernel_python: str,
) -> None:
    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        step = sum(isinstance(message, ModelResponse) for message in messages)
        if step == 0:
            return ModelResponse(
                parts=[
                    ToolCallPart(
                        "execute_tool_script", {"script": "import os\ndef run():\n    return {}"}
                    )
                ]
            )
        if step == 1:
            return ModelResponse(
                parts=[
                    ToolCallPart(
                        "execute_tool_script", {"script": "def run():\n    return {'ok': True}"}
                    )
                ]
            )
        return ModelResponse(parts=[TextPart(str(returns(messages)[-1].content))])

    toolset = CodeModeToolset([get_weather], kernel=LocalKernel(python=kernel_python))
    result = await Agent(FunctionModel(model), toolsets=[toolset]).run("Go")

    first, _ = returns(result.all_messages())
    assert first.outcome == "failed"
    assert str(first.content).startswith("ValueError: importing 'os' is not allowed")
    assert result.output == '{"ok": true}'


async def test_an_mcp_servers_tools_are_forwarded_to_scripts(kernel_python: str) -> None:
    from fastmcp.client.transports import StdioTransport
    from pydantic_ai.mcp import MCPToolset

    # init_timeout=None: pydantic-ai's 5 s handshake timeout is one load can beat.
    upstream = MCPToolset(
        StdioTransport(command=sys.executable, args=[str(UPSTREAM)]),
        id="upstream",
        tool_error_behavior="error",
        init_timeout=None,
    )
    script = (
        "from tools import add, lookup\n"
        "def run():\n    return {'sum': add(a=2, b=3), 'row': lookup(key='beta')}"
    )

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        step = sum(isinstance(message, ModelResponse) for message in messages)
        if step == 0:
            return ModelResponse(parts=[ToolCallPart("get_execution_environment", {})])
        if step == 1:
            return ModelResponse(parts=[ToolCallPart("execute_tool_script", {"script": script})])
        return ModelResponse(parts=[TextPart(str(returns(messages)[-1].content))])

    toolset = CodeModeToolset(toolsets=[upstream], kernel=LocalKernel(python=kernel_python))
    result = await Agent(FunctionModel(model), toolsets=[toolset]).run("Sum?")

    environment = returns(result.all_messages())[0].content
    assert isinstance(environment, dict)
    assert "def add(a: int, b: int) -> int:" in environment["instructions"]
    assert json.loads(result.output) == {"sum": 5, "row": {"id": 2, "tags": []}}


async def test_server_everythings_hyphenated_tools_are_served_under_python_names(
    kernel_python: str,
) -> None:
    from fastmcp.client.transports import StdioTransport
    from pydantic_ai.mcp import MCPToolset

    everything = MCPToolset(
        StdioTransport(command=str(everything_binary()), args=["stdio"]),
        id="everything",
        tool_error_behavior="error",
        init_timeout=None,
    )
    script = (
        "from tools import get_sum, echo\n"
        "def run():\n    return {'sum': get_sum(a=2, b=3), 'echo': echo(message='hi')}"
    )

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        step = sum(isinstance(message, ModelResponse) for message in messages)
        if step == 0:
            return ModelResponse(parts=[ToolCallPart("get_execution_environment", {})])
        if step == 1:
            return ModelResponse(parts=[ToolCallPart("execute_tool_script", {"script": script})])
        return ModelResponse(parts=[TextPart(str(returns(messages)[-1].content))])

    toolset = CodeModeToolset(toolsets=[everything], kernel=LocalKernel(python=kernel_python))
    result = await Agent(FunctionModel(model), toolsets=[toolset]).run("Sum?")

    environment = returns(result.all_messages())[0].content
    assert isinstance(environment, dict)
    assert "def get_sum(a: float, b: float)" in environment["instructions"]
    assert (
        "Called 'get-sum' by the toolset MCPToolset 'everything'; 'get_sum' here."
        in environment["instructions"]
    )
    value = json.loads(result.output)
    assert "is 5" in json.dumps(value["sum"])
    assert "Echo: hi" in json.dumps(value["echo"])


@pytest.mark.parametrize("started_by", ["the toolset", "its owner"])
async def test_two_runs_at_once_each_script_gets_its_own_runs_tools_and_deps(
    kernel_python: str, started_by: str
) -> None:
    accounts = FunctionToolset[str]([balance])
    accounts.add_function(audit_log, prepare=for_admins)
    kernel = ToolKernel(kernel=LocalKernel(python=kernel_python))
    if started_by == "its owner":
        await kernel.start()
    toolset = CodeModeToolset(toolsets=[accounts], kernel=kernel)
    script = (
        "import tools\n"
        "def run():\n"
        "    return {'balance': tools.balance(), 'audit': hasattr(tools, 'audit_log')}"
    )
    # Both runs have listed their tools before either runs its script: the moment when
    # a run's tools or context kept on the shared toolset would be the other run's.
    both_listed = Meeting(2)

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        step = sum(isinstance(message, ModelResponse) for message in messages)
        if step == 0:
            return ModelResponse(parts=[ToolCallPart("get_execution_environment", {})])
        if step == 1:
            await both_listed.wait()
            return ModelResponse(parts=[ToolCallPart("execute_tool_script", {"script": script})])
        return ModelResponse(parts=[TextPart(str(returns(messages)[-1].content))])

    agent = Agent(FunctionModel(model), toolsets=[toolset], deps_type=str)
    try:
        admin, guest = await asyncio.gather(
            agent.run("Mine?", deps="admin"), agent.run("Mine?", deps="guest")
        )
        # The toolset closes a kernel it started, after its last run; not one it was given.
        assert kernel.running == (started_by == "its owner")
    finally:
        await kernel.close()

    assert json.loads(admin.output) == {"balance": "admin: 100 EUR", "audit": True}
    assert json.loads(guest.output) == {"balance": "guest: 100 EUR", "audit": False}
    admin_environment = returns(admin.all_messages())[0].content
    guest_environment = returns(guest.all_messages())[0].content
    assert isinstance(admin_environment, dict) and isinstance(guest_environment, dict)
    assert "def audit_log() -> list[str]:" in admin_environment["instructions"]
    assert "audit_log" not in guest_environment["instructions"]


async def test_two_agents_at_once_on_one_kernel_call_their_own_toolsets_tools(
    kernel_python: str,
) -> None:
    both_listed = Meeting(2)
    script = "from tools import get_weather\ndef run():\n    return {'w': get_weather('Oslo')}"

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        step = sum(isinstance(message, ModelResponse) for message in messages)
        if step == 0:
            await both_listed.wait()
            return ModelResponse(parts=[ToolCallPart("execute_tool_script", {"script": script})])
        return ModelResponse(parts=[TextPart(str(returns(messages)[-1].content))])

    def rainy_weather(city: str) -> str:
        return f"Rain in {city}"

    # A kernel shared by toolsets is started by its owner, and outlives them.
    async with ToolKernel(kernel=LocalKernel(python=kernel_python)) as kernel:
        sunny = CodeModeToolset(toolsets=[FunctionToolset([get_weather])], kernel=kernel)
        rainy = CodeModeToolset(
            toolsets=[FunctionToolset([Tool(rainy_weather, name="get_weather")])], kernel=kernel
        )
        sunny_run, rainy_run = await asyncio.gather(
            Agent(FunctionModel(model), toolsets=[sunny]).run("Oslo?"),
            Agent(FunctionModel(model), toolsets=[rainy]).run("Oslo?"),
        )
        assert kernel.running

    assert json.loads(sunny_run.output) == {"w": "Sunny in Oslo"}
    assert json.loads(rainy_run.output) == {"w": "Rain in Oslo"}


async def test_tools_are_called_through_the_toolset_given_which_may_wrap_them(
    kernel_python: str,
) -> None:
    deleted: list[str] = []

    def delete_account(user: str) -> str:
        """Delete a user's account."""
        deleted.append(user)
        return f"{user} deleted"

    script = (
        "from tools import get_weather, delete_account, ToolError\n"
        "def run():\n"
        "    try:\n"
        "        deleted = delete_account('bob')\n"
        "    except ToolError as error:\n"
        "        deleted = str(error)\n"
        "    return {'w': get_weather('Rome'), 'deleted': deleted}"
    )

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        step = sum(isinstance(message, ModelResponse) for message in messages)
        if step == 0:
            return ModelResponse(parts=[ToolCallPart("execute_tool_script", {"script": script})])
        return ModelResponse(parts=[TextPart(str(returns(messages)[-1].content))])

    def deny(ctx: RunContext[Any], requests: DeferredToolRequests) -> DeferredToolResults:
        return requests.build_results(approvals={c.tool_call_id: False for c in requests.approvals})

    combined = CombinedToolset(
        [FunctionToolset([get_weather]), FunctionToolset([delete_account]).approval_required()]
    )
    toolset = CodeModeToolset(toolsets=[combined], kernel=LocalKernel(python=kernel_python))
    agent = Agent(
        FunctionModel(model), toolsets=[toolset], capabilities=[HandleDeferredToolCalls(deny)]
    )
    result = await agent.run("Rome?")

    value = json.loads(result.output)
    assert value["w"] == "Sunny in Rome"
    assert deleted == []  # the wrapper asked for approval, and the call was denied
    assert value["deleted"] == "tool 'delete_account' was denied: The tool call was denied."


async def test_runs_one_after_another_start_the_kernel_each_unless_the_agent_is_entered(
    kernel_python: str,
) -> None:
    # Names kept between scripts show which runs had the same kernel.
    script = (
        "seen = globals().setdefault('seen', [])\n"
        "def run():\n    seen.append(1)\n    return {'scripts': len(seen)}"
    )

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        step = sum(isinstance(message, ModelResponse) for message in messages)
        if step == 0:
            return ModelResponse(parts=[ToolCallPart("execute_tool_script", {"script": script})])
        return ModelResponse(parts=[TextPart(str(returns(messages)[-1].content))])

    kernel = ToolKernel(kernel=LocalKernel(python=kernel_python))
    agent = Agent(
        FunctionModel(model),
        toolsets=[CodeModeToolset([get_weather], kernel=kernel, fresh_namespace=False)],
    )

    alone = [(await agent.run("Go")).output for _ in range(2)]
    assert alone == ['{"scripts": 1}', '{"scripts": 1}']  # a new kernel for each run
    assert not kernel.running
    async with agent:  # as for pydantic-ai's MCP servers: one kernel for every run inside
        together = [(await agent.run("Go")).output for _ in range(2)]
        assert kernel.running
    assert together == ['{"scripts": 1}', '{"scripts": 2}']
    assert not kernel.running


class Recorded(FunctionToolset[Any]):
    """A toolset that writes down when it is entered and exited, and may fail to enter."""

    def __init__(self, id: str, log: list[str], fails: bool = False) -> None:
        super().__init__([], id=id)
        self.log = log
        self.fails = fails

    async def __aenter__(self) -> Recorded:
        self.log.append(f"enter {self.id}")
        if self.fails:
            raise ConnectionError(f"{self.id} cannot reach its server")
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.log.append(f"exit {self.id}")


@pytest.mark.parametrize("how", ["agent run", "async with"])
async def test_a_toolset_that_fails_to_enter_is_named_and_those_before_it_are_exited(
    kernel_python: str, how: str
) -> None:
    log: list[str] = []
    kernel = ToolKernel(kernel=LocalKernel(python=kernel_python))
    toolset = CodeModeToolset(
        toolsets=[Recorded("maps", log), Recorded("crm", log, fails=True), Recorded("mail", log)],
        kernel=kernel,
    )

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart("never asked")])

    with pytest.raises(ConnectionError, match="crm cannot reach its server") as raised:
        if how == "agent run":
            await Agent(FunctionModel(model), toolsets=[toolset]).run("Hi")
        else:
            async with toolset:
                pass

    assert log == ["enter maps", "enter crm", "exit maps"]
    assert getattr(raised.value, "__notes__", None) == [
        "CodeModeToolset 'progtc-kernel' could not enter the toolset Recorded 'crm'; the "
        "toolsets entered before it are exited and the kernel is not started"
    ]
    assert not kernel.running


def test_without_pydantic_ai_the_import_names_the_pip_install_that_fixes_it() -> None:
    blocked = (
        "import sys; sys.modules['pydantic_ai'] = None\n"
        "import progtc_kernel.integrations.pydantic_ai"
    )
    done = subprocess.run(
        [sys.executable, "-c", blocked], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError: CodeModeToolset needs pydantic-ai")
    assert last.endswith(f"install the 'pydantic-ai' extra: {install_hint('pydantic-ai')}")
