"""Scripts checked before they run: ``ProgrammaticToolset(check_types=...)`` with ty.

The corpus (``tests/typecheck_corpus``): every good script runs on a real kernel and
the checker finds nothing in it; every bad one is caught on its line. A script the
checker refuses never runs (a tool with a side effect is not called).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.types import TextContent

from progtc_kernel import LocalKernel, ProgrammaticToolset, ToolKernel
from progtc_kernel._install import install_hint
from progtc_kernel.host.tools import ToolRegistry
from progtc_kernel.toolset.environment import DEFAULT_MODULES
from progtc_kernel.toolset.typecheck import ScriptChecker

from .typecheck_corpus.bad import BAD
from .typecheck_corpus.corpus_tools import HELPERS, TOOLS
from .typecheck_corpus.good import GOOD

MODULES = [*DEFAULT_MODULES, "helpers"]
SPECS = ToolRegistry.of(TOOLS).specs()

WRONG_KEY = """\
from tools import get_forecast, send_email

def run():
    send_email("boss@example.com", "The forecast")
    forecast = get_forecast("Oslo")
    return {"temp": forecast["temp"]}
"""


def error_line(script: str) -> int:
    return next(n for n, line in enumerate(script.splitlines(), 1) if "# error" in line)


@pytest.mark.fast
@pytest.mark.parametrize("name", sorted(GOOD))
async def test_the_checker_finds_nothing_in_a_good_script(name: str) -> None:
    assert await ScriptChecker().check(GOOD[name], SPECS) == []


@pytest.mark.fast
@pytest.mark.parametrize("name", sorted(BAD))
async def test_the_checker_finds_the_error_of_a_bad_script_on_its_line(name: str) -> None:
    findings = await ScriptChecker().check(BAD[name], SPECS)
    assert error_line(BAD[name]) in [finding.line for finding in findings]


@pytest.mark.fast
async def test_names_an_earlier_script_left_are_no_error_when_namespaces_are_kept() -> None:
    script = "def run():\n    return {'total': total}\n"
    assert [f.rule for f in await ScriptChecker().check(script, SPECS)] == ["unresolved-reference"]
    assert await ScriptChecker().check(script, SPECS, names_kept=True) == []


@pytest.mark.fast
@pytest.mark.filterwarnings("ignore:Default value")  # pydantic: the default is no JSON
async def test_tools_whose_stub_is_no_python_leave_scripts_unchecked() -> None:
    sentinel = object()

    def pick(key: str, default: object = sentinel) -> str:
        """A default shown as `<object object at 0x...>`: the stub is no Python."""
        return key

    script = "from tools import pick\ndef run():\n    return {'x': pick(1, 2, 3)}"
    assert await ScriptChecker().check(script, ToolRegistry.of([pick]).specs()) == []


@pytest.mark.fast
def test_check_types_true_without_ty_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "ty", None)  # as if ty were not installed
    with pytest.raises(ModuleNotFoundError) as raised:
        ProgrammaticToolset(TOOLS, check_types=True)
    assert install_hint("typecheck") in str(raised.value)
    assert "pip install progtc-kernel" not in str(raised.value)
    # By default, without ty, scripts run unchecked.
    assert ProgrammaticToolset(TOOLS).checker is None
    assert ProgrammaticToolset(TOOLS, check_types=False).checker is None


@pytest.mark.fast
def test_unchecked_toolsets_do_not_import_the_checker() -> None:
    code = (
        "import sys\n"
        "from progtc_kernel import ProgrammaticToolset\n"
        "ProgrammaticToolset([], check_types=False)\n"
        "print('ty' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout == "False\n", done.stderr


@pytest.mark.fast
def test_check_types_is_on_by_default_when_ty_is_installed() -> None:
    assert ProgrammaticToolset(TOOLS).checker is not None


@pytest.mark.fast
def test_the_mcp_command_takes_check_types() -> None:
    from progtc_kernel.cli import _parser
    from progtc_kernel.cli.mcp import toolset_options

    parser = _parser()
    for flag, expected in [([], None), (["--check-types"], True), (["--no-check-types"], False)]:
        args = parser.parse_args(["mcp", "--tools", "examples/tools.py", *flag])
        assert toolset_options(args)["check_types"] is expected


# -- on a real kernel ------------------------------------------------------------------

sent: list[str] = []


def send_email(to: str, subject: str) -> str:
    """Send an email (a side effect: the tests see whether it was called)."""
    sent.append(to)
    return "sent"


@pytest.fixture(scope="module")
async def toolset(kernel_python: str) -> AsyncIterator[ProgrammaticToolset]:
    kernel = ToolKernel(kernel=LocalKernel(python=kernel_python))
    async with ProgrammaticToolset(
        [*TOOLS, send_email], kernel=kernel, supported_modules=MODULES, check_types=True
    ) as toolset:
        await toolset.kernel.install_modules(HELPERS)
        yield toolset


async def test_every_good_script_of_the_corpus_runs(toolset: ProgrammaticToolset) -> None:
    failed = {}
    for name, script in GOOD.items():
        try:
            result = await toolset.run_script(script)
        except Exception as exc:
            failed[name] = f"{type(exc).__name__}: {exc}"
        else:
            assert isinstance(result.value, dict)
    assert failed == {}


async def test_a_wrong_key_is_the_contracts_type_error_and_the_script_never_runs(
    toolset: ProgrammaticToolset,
) -> None:
    sent.clear()
    with pytest.raises(TypeError) as raised:
        await toolset.execute_tool_script(WRONG_KEY)
    assert str(raised.value).startswith("the script did not run: type-checking it")
    assert (
        '- line 6: `return {"temp": forecast["temp"]}`: Unknown key "temp" for TypedDict '
        "`Forecast` [invalid-typed-dict-key]; index a result only with the keys its "
        "TypedDict declares"
    ) in str(raised.value)
    assert sent == []  # nothing ran: the email was not sent
    # The TypedDict the checker knows is the one the model was shown.
    instructions = (await toolset.get_execution_environment())["instructions"]
    assert "class Forecast(TypedDict):\n    city: str\n" in instructions
    assert "def get_forecast(city: str, days: int = 3) -> Forecast:" in instructions


async def test_a_misspelt_tool_import_is_the_contracts_value_error(
    toolset: ProgrammaticToolset,
) -> None:
    with pytest.raises(ValueError, match=r"line 1: `from tools import get_wether`"):
        await toolset.execute_tool_script("from tools import get_wether\ndef run():\n    return {}")


async def test_without_checking_the_same_script_runs_and_fails_late(kernel_python: str) -> None:
    sent.clear()
    kernel = ToolKernel(kernel=LocalKernel(python=kernel_python))
    async with ProgrammaticToolset([*TOOLS, send_email], kernel=kernel, check_types=False) as ts:
        with pytest.raises(KeyError):
            await ts.execute_tool_script(WRONG_KEY)
    assert sent == ["boss@example.com"]  # the side effect happened before the error


# -- the MCP server and pydantic-ai -----------------------------------------------------


@contextlib.asynccontextmanager
async def mcp_session(*args: str) -> AsyncIterator[ClientSession]:
    command = [sys.executable, "-c", "from progtc_kernel.cli import main; main()", "mcp", *args]
    parameters = StdioServerParameters(command=command[0], args=command[1:])
    async with (
        stdio_client(parameters) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def test_the_mcp_server_returns_the_finding_as_the_tools_error(kernel_python: str) -> None:
    script = "from tools import get_weather\ndef run():\n    return {'w': get_weather('Paris')}"
    tools = str(__import__("pathlib").Path(__file__).parent.parent / "examples" / "tools.py")
    async with mcp_session("--tools", tools, "--python", kernel_python, "--check-types") as s:
        result = await s.call_tool("execute_tool_script", {"script": script})
    assert result.is_error
    text = "".join(block.text for block in result.content if isinstance(block, TextContent))
    assert text.startswith("TypeError: the script did not run")
    assert "line 3: `return {'w': get_weather('Paris')}`: No argument provided" in text


async def test_a_pydantic_ai_model_gets_the_finding_and_corrects_itself(
    kernel_python: str,
) -> None:
    pytest.importorskip("pydantic_ai", reason="pydantic-ai needs Python 3.11+")
    from pydantic_ai import Agent
    from pydantic_ai.messages import (
        ModelMessage,
        ModelRequest,
        ModelResponse,
        TextPart,
        ToolCallPart,
        ToolReturnPart,
    )
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    from progtc_kernel.integrations.pydantic_ai import CodeModeToolset

    fixed = WRONG_KEY.replace('forecast["temp"]', 'forecast["days"][0]["high"]')
    scripts = [WRONG_KEY, fixed]
    seen: list[Any] = []

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        returned = [
            part
            for message in messages
            if isinstance(message, ModelRequest)
            for part in message.parts
            if isinstance(part, ToolReturnPart)
        ]
        seen[:] = returned
        if len(returned) < len(scripts):
            script = scripts[len(returned)]
            return ModelResponse(parts=[ToolCallPart("execute_tool_script", {"script": script})])
        return ModelResponse(parts=[TextPart(str(returned[-1].content))])

    sent.clear()
    toolset = CodeModeToolset(
        [*TOOLS, send_email], kernel=LocalKernel(python=kernel_python), check_types=True
    )
    result = await Agent(FunctionModel(model), toolsets=[toolset]).run("Forecast?")

    first, _ = seen
    assert first.outcome == "failed"
    assert str(first.content).startswith("TypeError: the script did not run")
    assert 'Unknown key "temp"' in str(first.content)
    assert json.loads(result.output) == {"temp": 10.0}
    assert sent == ["boss@example.com"]  # once: by the corrected script only
