"""The agent toolset without a kernel: what a model is told (the environment), what a
script may import (read before it runs), how a script's outcome becomes the result or
the exception the contract names, and the per-script call budget, all through a
fake kernel that publishes what the script runner would."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import pytest

from progtc_kernel import ProgrammaticToolset, ToolKernel
from progtc_kernel.exceptions import KernelDiedError, ScriptError
from progtc_kernel.protocol import OUTCOME_MIME
from progtc_kernel.toolset.environment import DEFAULT_MODULES, ENVIRONMENT_SCHEMA, modules_of
from progtc_kernel.toolset.imports import check_script
from progtc_kernel.toolset.toolset import error_text

from .fakes import FakeKernel, Sent

pytestmark = pytest.mark.fast


async def get_weather(city: str, country: str = "France") -> str:
    """Current weather for a city."""
    return f"Sunny in {city}"


def count_rooms(hotel: str) -> int:
    return 3


# -- the import policy, read before the script runs -------------------------------------


@pytest.mark.parametrize(
    "script",
    [
        "import json\ndef run():\n    return {}",
        "from collections import Counter\nimport collections.abc",
        "from tools import get_weather\nimport tools",
        "from __future__ import annotations",
        "import math as m, re",
        "x = __import__('json')",
    ],
)
def test_supported_imports_pass(script: str) -> None:
    check_script(script, DEFAULT_MODULES)


@pytest.mark.parametrize(
    ("script", "message"),
    [
        (
            "import os",
            "importing 'os' is not allowed: use only the supported modules "
            "(asyncio, base64, bisect, collections",
        ),
        ("import json\n\nimport subprocess as sp", "(line 3: `import subprocess as sp`)"),
        ("from os.path import join", "importing 'os.path' is not allowed"),
        ("def run():\n    import socket\n    return {}", "(line 2: `import socket`)"),
        ("mod = __import__('shutil')", "importing 'shutil' is not allowed"),
        ("import importlib\nimportlib.import_module('ctypes')", "importing 'importlib'"),
        ("x = something.import_module('ctypes')", "importing 'ctypes' is not allowed"),
        (
            "from . import sibling",
            "relative imports are not supported: import supported "
            "modules by name (line 1: `from . import sibling`)",
        ),
        ("from .tools import x", "relative imports are not supported"),
    ],
)
def test_an_import_outside_the_policy_names_the_module_and_the_line(
    script: str, message: str
) -> None:
    with pytest.raises(ValueError) as refused:
        check_script(script, DEFAULT_MODULES)
    assert message in str(refused.value)


def test_the_supported_modules_are_whatever_the_toolset_was_given() -> None:
    check_script("import numpy.linalg", ["numpy"])
    with pytest.raises(
        ValueError,
        match=r"use only the supported modules \(numpy\) and "
        r"`tools`",
    ):
        check_script("import json", ["numpy"])


@pytest.mark.parametrize(
    ("script", "message"),
    [
        (
            "def run(:\n    pass",
            "fix the syntax and send the whole script again (line 1: `def run(:`)",
        ),
        ("def run():\nreturn {}", "expected an indented block"),
    ],
)
def test_invalid_syntax_is_a_syntax_error_naming_the_line(script: str, message: str) -> None:
    with pytest.raises(SyntaxError) as refused:
        check_script(script, DEFAULT_MODULES)
    assert message in str(refused.value)


def test_a_script_that_is_not_text_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="the script must be a string of Python code, not bytes"):
        check_script(b"import json", DEFAULT_MODULES)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, DEFAULT_MODULES),
        (["json", "numpy"], {"json": "encode and decode JSON", "numpy": ""}),
        (
            {"numpy": "arrays", "scipy.stats": "statistics"},
            {"numpy": "arrays", "scipy.stats": "statistics"},
        ),
    ],
)
def test_supported_modules_come_as_names_or_with_descriptions(
    given: Any, expected: dict[str, str]
) -> None:
    assert modules_of(given) == expected


@pytest.mark.parametrize("name", ["os path", "1json", "json.", ""])
def test_a_supported_module_must_be_a_module_name(name: str) -> None:
    with pytest.raises(ValueError, match="is not a module name"):
        modules_of([name])


# -- the environment a model is told -----------------------------------------------------


def a_toolset(tools: Any = (get_weather, count_rooms), **options: Any) -> ProgrammaticToolset:
    """A toolset whose kernel is never started: the environment needs none."""
    return ProgrammaticToolset(list(tools), kernel=ToolKernel(kernel=FakeKernel()), **options)


async def test_the_environment_is_the_contracts_and_needs_no_kernel() -> None:
    toolset = a_toolset()
    env = await toolset.get_execution_environment()
    jsonschema.validate(env, ENVIRONMENT_SCHEMA)
    assert not toolset.kernel.running
    assert env["language"] == "python"
    assert [module["name"] for module in env["supported_modules"]] == list(DEFAULT_MODULES)


async def test_the_instructions_list_every_tool_as_a_typed_stub() -> None:
    instructions = (await a_toolset().get_execution_environment())["instructions"]
    assert (
        "Call the tools by importing them from the `tools` module (get_weather, "
        "count_rooms)." in instructions
    )
    assert (
        '''```python
def get_weather(city: str, country: str = 'France') -> str:
    """Current weather for a city.

    Returns JSON matching: {"type":"string"}"""

def count_rooms(hotel: str) -> int:
    """Returns JSON matching: {"type":"integer"}"""
```'''
        in instructions
    )


@pytest.mark.parametrize(
    ("options", "said", "unsaid"),
    [
        (
            {},
            [
                "Limits: it may run for at most 60 s.",
                "Each script starts with a fresh namespace.",
                "Text the script prints is not returned to you",
            ],
            ["tool calls."],
        ),
        (
            {"max_tool_calls": 5, "timeout": 2.5},
            ["Limits: it may run for at most 2.5 s and it may make at most 5 tool calls."],
            [],
        ),
        (
            {"timeout": None, "fresh_namespace": False},
            ["Names defined by one script are still there for the next one."],
            ["Limits:"],
        ),
        (
            {"returns_printed_text": True, "max_output_chars": 1234},
            ["Text the script prints is returned to you after the return value (at most 1,234"],
            ["is not returned to you"],
        ),
        ({"max_result_chars": 5000}, ["The returned JSON is cut after 5,000"], []),
        ({"supported_modules": {"numpy": "arrays"}}, ["- numpy: arrays"], ["- json:"]),
    ],
)
async def test_the_instructions_state_the_toolsets_limits(
    options: dict[str, Any], said: list[str], unsaid: list[str]
) -> None:
    instructions = (await a_toolset(**options).get_execution_environment())["instructions"]
    flat = " ".join(instructions.split())
    for text in said:
        assert " ".join(text.split()) in flat, text
    for text in unsaid:
        assert text not in instructions, text


async def test_with_no_tools_the_instructions_say_so() -> None:
    instructions = (await a_toolset(()).get_execution_environment())["instructions"]
    assert "(none)" in instructions and "# no tools are available" in instructions


# -- running a script, with a fake kernel playing the script runner ---------------------


@pytest.fixture
async def fake() -> FakeKernel:
    return FakeKernel()


@pytest.fixture
async def toolset(fake: FakeKernel) -> AsyncIterator[ProgrammaticToolset]:
    kernel = ToolKernel(kernel=fake, extension="loaded")
    async with ProgrammaticToolset(
        [get_weather, count_rooms], kernel=kernel, max_tool_calls=2
    ) as toolset:
        yield toolset


async def script_ran(
    fake: FakeKernel,
    toolset: ProgrammaticToolset,
    outcome: dict[str, Any],
    *outputs: tuple[str, dict[str, Any]],
    script: str = "def run(): ...",
) -> asyncio.Task[Any]:
    task = asyncio.ensure_future(toolset.run_script(script))
    request = await fake.transport.request("execute_request")
    fake.transport.run_cell(
        request, *outputs, ("display_data", {"data": {OUTCOME_MIME: outcome}, "metadata": {}})
    )
    return task


async def test_the_script_runs_silently_with_the_supported_modules(
    fake: FakeKernel, toolset: ProgrammaticToolset
) -> None:
    task = await script_ran(
        fake, toolset, {"ok": True, "json": "{}"}, script="def run():\n    return {}"
    )
    await task
    request: Sent = next(s for s in fake.transport.sent if s.msg_type == "execute_request")
    assert request.content["silent"] and not request.content["store_history"]
    assert "run_script('def run():\\n    return {}'" in request.content["code"]
    assert repr(sorted(DEFAULT_MODULES)) in request.content["code"]


async def test_what_run_returned_comes_back_as_json_with_what_it_printed(
    fake: FakeKernel, toolset: ProgrammaticToolset
) -> None:
    task = await script_ran(
        fake,
        toolset,
        {"ok": True, "json": '{"city": "Paris", "n": 3}'},
        ("stream", {"name": "stdout", "text": "working\n"}),
    )
    result = await task
    assert result.value == {"city": "Paris", "n": 3}
    assert result.json_text == '{"city": "Paris", "n": 3}'
    assert result.stdout == "working\n"


@pytest.mark.parametrize(
    ("outcome", "raised", "message"),
    [
        (
            {
                "ok": False,
                "type": "ValueError",
                "message": "the script defines no run() function",
                "line": None,
            },
            ValueError,
            "the script defines no run() function",
        ),
        (
            {
                "ok": False,
                "type": "TypeError",
                "message": "run() returned list, not a dict",
                "line": 1,
                "code": "def run():",
            },
            TypeError,
            "run() returned list, not a dict (line 1: `def run():`)",
        ),
        ({"ok": False, "type": "KeyError", "message": "'city'", "line": 4}, KeyError, "line 4"),
        (
            {
                "ok": False,
                "type": "ToolError",
                "message": "no such city",
                "line": 2,
                "code": "get_weather('Atlantis')",
            },
            ScriptError,
            "ToolError: no such city (line 2: `get_weather('Atlantis')`)",
        ),
        (
            {"ok": False, "type": "UnicodeDecodeError", "message": "bad byte", "line": 3},
            ScriptError,
            "UnicodeDecodeError: bad byte (line 3)",
        ),  # wants more than a message
    ],
)
async def test_a_failed_script_raises_what_the_contract_names_with_its_line(
    fake: FakeKernel,
    toolset: ProgrammaticToolset,
    outcome: dict[str, Any],
    raised: type[Exception],
    message: str,
) -> None:
    task = await script_ran(fake, toolset, outcome)
    with pytest.raises(raised) as failed:
        await task
    assert message in error_text(failed.value)


async def test_a_script_that_exits_is_told_it_cannot(
    fake: FakeKernel, toolset: ProgrammaticToolset
) -> None:
    task = asyncio.ensure_future(toolset.run_script("def run(): ..."))
    request = await fake.transport.request("execute_request")
    error = {"ename": "SystemExit", "evalue": "3", "traceback": []}
    fake.transport.run_cell(request, ("error", error), reply={"status": "error", **error})
    with pytest.raises(
        ScriptError,
        match=r"the script raised SystemExit\(3\): a script "
        r"cannot exit or interrupt the kernel",
    ):
        await task


async def test_a_kernel_without_the_runner_is_a_version_problem(
    fake: FakeKernel, toolset: ProgrammaticToolset
) -> None:
    task = asyncio.ensure_future(toolset.run_script("def run(): ..."))
    request = await fake.transport.request("execute_request")
    error = {"ename": "ModuleNotFoundError", "evalue": "No module named 'x'", "traceback": []}
    fake.transport.run_cell(request, ("error", error), reply={"status": "error", **error})
    with pytest.raises(ScriptError, match="is progtc-kernel the same version in the kernel"):
        await task


async def test_a_script_whose_kernel_dies_says_so(
    fake: FakeKernel, toolset: ProgrammaticToolset
) -> None:
    task = asyncio.ensure_future(toolset.run_script("def run(): ..."))
    await fake.transport.request("execute_request")
    fake.alive = False
    with pytest.raises(KernelDiedError, match="the kernel running the script died"):
        await task


async def test_a_large_result_is_cut_and_the_cut_is_said(fake: FakeKernel) -> None:
    kernel = ToolKernel(kernel=fake, extension="loaded")
    async with ProgrammaticToolset(
        [get_weather], kernel=kernel, max_result_chars=10, max_output_chars=5
    ) as toolset:
        value = json.dumps({"text": "x" * 50})
        task = await script_ran(
            fake,
            toolset,
            {"ok": True, "json": value},
            ("stream", {"name": "stdout", "text": "1234567890"}),
        )
        result = await task
    assert result.value == {"text": "x" * 50}  # the value itself is whole
    assert result.json_text == value[:10] + (
        f"\n[... {len(value) - 10:,} more characters of the returned JSON were cut: "
        "return less (filter, count or summarise in the script)]"
    )
    assert result.stdout.startswith("12345\n[... 5 more characters were printed and cut")


async def test_the_call_budget_fails_the_calls_beyond_it(
    fake: FakeKernel, toolset: ProgrammaticToolset
) -> None:
    task = asyncio.ensure_future(toolset.run_script("def run(): ..."))
    request = await fake.transport.request("execute_request")
    transport = fake.transport
    transport.kernel_says(
        "calls",
        {
            "calls": [
                {"id": i, "tool": "count_rooms", "arguments": {"hotel": "Ritz"}} for i in (1, 2, 3)
            ],
            "reply_channel": "shell",
        },
        parent=request,
    )
    answered: dict[int, dict[str, Any]] = {}
    while len(answered) < 3:
        message = await transport.host_said("results")
        answered.update({entry["id"]: entry for entry in message.body["results"]})
    transport.run_cell(
        request,
        ("display_data", {"data": {OUTCOME_MIME: {"ok": True, "json": "{}"}}, "metadata": {}}),
    )
    result = await task
    assert [answered[i]["ok"] for i in (1, 2, 3)] == [True, True, False]
    assert answered[3]["error"]["type"] == "CallBudgetExceeded"
    assert "already made 2 tool calls, its limit" in answered[3]["error"]["message"]
    assert len(result.tool_calls) == 3
