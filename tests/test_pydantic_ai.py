"""CodeModeToolset: a pydantic-ai agent calls tools through one script.

The model is pydantic-ai's ``FunctionModel``, playing a model that reads the
environment, writes a script gathering several tool calls, then answers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pydantic_ai", reason="pydantic-ai needs Python 3.11+")

from pydantic_ai import Agent, FunctionToolset
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

from progtc_kernel import ToolKernel
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


def returns(messages: list[ModelMessage]) -> list[ToolReturnPart]:
    return [part for message in messages if isinstance(message, ModelRequest)
            for part in message.parts if isinstance(part, ToolReturnPart)]


async def test_an_agent_reads_the_environment_runs_a_script_and_answers(
        kernel_python: str) -> None:
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

    toolset = CodeModeToolset(toolsets=[FunctionToolset([get_weather, convert])],
                              kernel=ToolKernel(python=kernel_python))
    result = await Agent(FunctionModel(model), toolsets=[toolset]).run("Weather?")

    assert result.output == "Oslo: Sunny in Oslo"
    # The model sees only the two tools; the function tools are in the scripts' stubs.
    assert seen["tools"] == ["execute_tool_script", "get_execution_environment"]
    instructions = seen["environment"]["instructions"]
    assert "def get_weather(city: str) -> str:" in instructions
    assert "def convert(amount: float, rate: float = 0.5) -> float:" in instructions
    assert seen["result"] == {"weather": {"Oslo": "Sunny in Oslo", "Rome": "Sunny in Rome",
                                          "Lima": "Sunny in Lima"}, "price": 5.0}
    printed = [part.content for message in result.all_messages()
               if isinstance(message, ModelRequest) for part in message.parts
               if isinstance(part, UserPromptPart)]
    assert "The script printed:\nasked 3 cities\n" in printed


async def test_a_failing_script_is_reported_to_the_model_which_tries_again(
        kernel_python: str) -> None:
    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        step = sum(isinstance(message, ModelResponse) for message in messages)
        if step == 0:
            return ModelResponse(parts=[ToolCallPart(
                "execute_tool_script", {"script": "import os\ndef run():\n    return {}"})])
        if step == 1:
            return ModelResponse(parts=[ToolCallPart(
                "execute_tool_script", {"script": "def run():\n    return {'ok': True}"})])
        return ModelResponse(parts=[TextPart(str(returns(messages)[-1].content))])

    toolset = CodeModeToolset([get_weather], kernel=ToolKernel(python=kernel_python))
    result = await Agent(FunctionModel(model), toolsets=[toolset]).run("Go")

    first, _ = returns(result.all_messages())
    assert first.outcome == "failed"
    assert str(first.content).startswith("ValueError: importing 'os' is not allowed")
    assert result.output == '{"ok": true}'


async def test_an_mcp_servers_tools_are_forwarded_to_scripts(kernel_python: str) -> None:
    from fastmcp.client.transports import StdioTransport
    from pydantic_ai.mcp import MCPToolset

    # init_timeout=None: pydantic-ai's 5 s handshake timeout is one load can beat.
    upstream = MCPToolset(StdioTransport(command=sys.executable, args=[str(UPSTREAM)]),
                          id="upstream", tool_error_behavior="error", init_timeout=None)
    script = ("from tools import add, lookup\n"
              "def run():\n    return {'sum': add(a=2, b=3), 'row': lookup(key='beta')}")

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        step = sum(isinstance(message, ModelResponse) for message in messages)
        if step == 0:
            return ModelResponse(parts=[ToolCallPart("get_execution_environment", {})])
        if step == 1:
            return ModelResponse(parts=[ToolCallPart("execute_tool_script", {"script": script})])
        return ModelResponse(parts=[TextPart(str(returns(messages)[-1].content))])

    toolset = CodeModeToolset(toolsets=[upstream], kernel=ToolKernel(python=kernel_python))
    result = await Agent(FunctionModel(model), toolsets=[toolset]).run("Sum?")

    environment = returns(result.all_messages())[0].content
    assert isinstance(environment, dict)
    assert "def add(a: int, b: int) -> int:" in environment["instructions"]
    assert json.loads(result.output) == {"sum": 5, "row": {"id": 2, "tags": []}}


async def test_server_everythings_hyphenated_tools_are_served_under_python_names(
        kernel_python: str) -> None:
    from fastmcp.client.transports import StdioTransport
    from pydantic_ai.mcp import MCPToolset

    everything = MCPToolset(StdioTransport(command=str(everything_binary()), args=["stdio"]),
                            id="everything", tool_error_behavior="error", init_timeout=None)
    script = ("from tools import get_sum, echo\n"
              "def run():\n    return {'sum': get_sum(a=2, b=3), 'echo': echo(message='hi')}")

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        step = sum(isinstance(message, ModelResponse) for message in messages)
        if step == 0:
            return ModelResponse(parts=[ToolCallPart("get_execution_environment", {})])
        if step == 1:
            return ModelResponse(parts=[ToolCallPart("execute_tool_script", {"script": script})])
        return ModelResponse(parts=[TextPart(str(returns(messages)[-1].content))])

    toolset = CodeModeToolset(toolsets=[everything], kernel=ToolKernel(python=kernel_python))
    result = await Agent(FunctionModel(model), toolsets=[toolset]).run("Sum?")

    environment = returns(result.all_messages())[0].content
    assert isinstance(environment, dict)
    assert "def get_sum(a: float, b: float)" in environment["instructions"]
    assert ("Called 'get-sum' by the toolset MCPToolset 'everything'; 'get_sum' here."
            in environment["instructions"])
    value = json.loads(result.output)
    assert "is 5" in json.dumps(value["sum"])
    assert "Echo: hi" in json.dumps(value["echo"])


def test_without_pydantic_ai_the_import_names_the_pip_install_that_fixes_it() -> None:
    blocked = ("import sys; sys.modules['pydantic_ai'] = None\n"
               "import progtc_kernel.integrations.pydantic_ai")
    done = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError: CodeModeToolset needs pydantic-ai")
    assert last.endswith(f"install the 'pydantic-ai' extra: {install_hint('pydantic-ai')}")
