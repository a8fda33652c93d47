"""OpenTelemetry, end to end: each run is a span, each tool call its code makes a
child span (GenAI semantic conventions), and the trace crosses into the kernel.

The spans are the OpenTelemetry SDK's, taken by its in-memory exporter; the kernels
are real, over ZMQ and over a real Jupyter Server's websocket.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the test group brings opentelemetry-sdk")

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from progtc_kernel import (
    AsyncProgtcClient,
    JupyterServer,
    LocalKernel,
    ProgrammaticToolset,
    RemoteKernel,
    Timeout,
    ToolKernel,
)
from progtc_kernel.host.results import ExecutionResult

from .conftest import LINES, ROOT, build_env
from .servers import jupyter_server, kernelspec, until

EXPORTER = InMemorySpanExporter()


def _collect_spans() -> None:
    """The SDK's provider, taking every span to EXPORTER (another test module may have
    set the provider first: a process has one)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))


_collect_spans()
tracer = trace.get_tracer("tests")


async def get_weather(city: str) -> str:
    return f"Sunny in {city}"


def broken(city: str) -> str:
    raise ValueError(f"no station in {city}")


TOOLS = [get_weather, broken]


class Trace:
    """The finished spans of one trace, by name and by id."""

    def __init__(self, root: trace.Span) -> None:
        self.trace_id = root.get_span_context().trace_id
        self.root_id = root.get_span_context().span_id

    @property
    def spans(self) -> list[ReadableSpan]:
        return [
            span
            for span in EXPORTER.get_finished_spans()
            if span.context is not None and span.context.trace_id == self.trace_id
        ]

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans if span.name == name]

    def one(self, name: str) -> ReadableSpan:
        (span,) = self.named(name)
        return span

    def run(self, result: ExecutionResult) -> ReadableSpan:
        """The span of the run that gave ``result``."""
        (span,) = [
            span
            for span in self.named("execute_code")
            if (span.attributes or {}).get("progtc_kernel.run_id") == result.run_id
        ]
        return span

    def runs_in(self, parent: ReadableSpan) -> list[ReadableSpan]:
        """The run spans whose parent is ``parent``."""
        return [span for span in self.named("execute_code") if parent_id(span) == span_id(parent)]

    def children(self, parent: ReadableSpan | int) -> list[str]:
        parent_id = parent if isinstance(parent, int) else span_id(parent)
        return sorted(
            span.name
            for span in self.spans
            if span.parent is not None and span.parent.span_id == parent_id
        )


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def traceparent_of(span: ReadableSpan) -> str:
    assert span.context is not None
    context = span.context
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


@pytest.fixture
def traced() -> Iterator[Trace]:
    """A root span, current for the test: every span of the test is in its trace."""
    with tracer.start_as_current_span("the test") as root:
        yield Trace(root)


GATHER = """\
import asyncio
from tools import get_weather
print(await asyncio.gather(get_weather('Oslo'), get_weather('Lima')))
"""


def check_tool_span(span: ReadableSpan, name: str) -> None:
    attributes = dict(span.attributes or {})
    assert span.name == f"execute_tool {name}"
    assert attributes["gen_ai.operation.name"] == "execute_tool"
    assert attributes["gen_ai.tool.name"] == name
    assert attributes["gen_ai.tool.type"] == "function"
    assert str(attributes["gen_ai.tool.call.id"]).isdigit()


# -- the tree, over ZMQ -----------------------------------------------------------------


async def test_a_gathers_calls_are_children_of_the_run_span(
    kernel_python: str, traced: Trace
) -> None:
    async with ToolKernel(TOOLS, kernel=LocalKernel(python=kernel_python)) as kernel:
        result = await kernel.execute(GATHER)
    assert result.stdout == "['Sunny in Oslo', 'Sunny in Lima']\n", result.error

    run = traced.named("execute_code")[-1]  # the kernel's start ran code of its own first
    assert parent_id(run) == traced.root_id  # the span current where execute was called
    assert traced.children(run) == ["execute_tool get_weather"] * 2
    calls = traced.named("execute_tool get_weather")
    for call in calls:
        check_tool_span(call, "get_weather")
        assert call.status.status_code is not StatusCode.ERROR
        assert "gen_ai.tool.call.arguments" not in (call.attributes or {})  # not opted in
        assert "gen_ai.tool.call.result" not in (call.attributes or {})
    assert len({(call.attributes or {})["gen_ai.tool.call.id"] for call in calls}) == 2
    assert (run.attributes or {})["progtc_kernel.run_id"] == result.run_id


async def test_trace_content_records_arguments_and_results(
    kernel_python: str, traced: Trace
) -> None:
    async with ToolKernel(
        TOOLS, kernel=LocalKernel(python=kernel_python), trace_content=True
    ) as kernel:
        await kernel.execute("from tools import get_weather\nawait get_weather('Oslo')")

    attributes = dict(traced.one("execute_tool get_weather").attributes or {})
    assert json.loads(str(attributes["gen_ai.tool.call.arguments"])) == {"city": "Oslo"}
    assert json.loads(str(attributes["gen_ai.tool.call.result"])) == "Sunny in Oslo"
    code = (traced.named("execute_code")[-1].attributes or {})["progtc_kernel.code"]
    assert "get_weather('Oslo')" in str(code)


async def test_a_failing_tool_and_its_run_are_error_spans(
    kernel_python: str, traced: Trace
) -> None:
    async with ToolKernel(TOOLS, kernel=LocalKernel(python=kernel_python)) as kernel:
        result = await kernel.execute("from tools import broken\nawait broken('Oslo')")
    assert result.error is not None

    call = traced.one("execute_tool broken")
    check_tool_span(call, "broken")
    assert (call.attributes or {})["error.type"] == "ValueError"
    assert call.status.status_code is StatusCode.ERROR
    assert call.status.description == "no station in Oslo"
    run = traced.named("execute_code")[-1]
    assert parent_id(call) == span_id(run)
    assert (run.attributes or {})["error.type"] == result.error.ename
    assert run.status.status_code is StatusCode.ERROR


async def test_a_tool_call_that_times_out_is_an_error_span(
    kernel_python: str, traced: Trace
) -> None:
    never = asyncio.Event()

    async def stalls() -> None:
        await never.wait()

    async with ToolKernel(
        [stalls], kernel=LocalKernel(python=kernel_python), timeout=Timeout(tool_call=1)
    ) as kernel:
        result = await kernel.execute(
            "from tools import stalls, ToolTimeoutError\n"
            "try:\n    await stalls()\nexcept ToolTimeoutError:\n    print('timed out')"
        )
        assert result.stdout == "timed out\n", result.error

        async def call_span_ended() -> bool:  # the kernel's cancel may come after its reply
            return bool(traced.named("execute_tool stalls"))

        await until(call_span_ended, "the timed-out call's span ended")

    call = traced.one("execute_tool stalls")
    assert (call.attributes or {})["error.type"] == "TimeoutError"
    assert call.status.status_code is StatusCode.ERROR
    assert parent_id(call) == span_id(traced.named("execute_code")[-1])


# -- the trace in the kernel ----------------------------------------------------------


def otel_kernel_env(kernel_python: str) -> str:
    """The kernel_python's ipykernel line, with opentelemetry's API and SDK besides."""
    line = Path(kernel_python).parent.parent.name.removeprefix("ipykernel-")
    return build_env(
        f"ipykernel-{line}-otel",
        ["-e", str(ROOT), LINES[line], "opentelemetry-api", "opentelemetry-sdk"],
    )


KERNEL_SDK = """\
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
tracer = provider.get_tracer("the kernel's code")
"""

KERNEL_SPANS = """\
import json
import os
print(json.dumps([
    {"name": s.name, "trace": s.context.trace_id, "id": s.context.span_id,
     "parent": s.parent.span_id if s.parent else None}
    for s in exporter.get_finished_spans()
]))
"""


@pytest.mark.ipykernel_lines
async def test_spans_opened_in_the_kernel_nest_under_the_run_and_parent_its_calls(
    kernel_python: str, traced: Trace
) -> None:
    python = otel_kernel_env(kernel_python)
    async with ToolKernel(TOOLS, kernel=LocalKernel(python=python)) as kernel:
        (await kernel.execute(KERNEL_SDK)).raise_for_error()
        awaiting = await kernel.execute(
            "import asyncio\nfrom tools import get_weather\n"
            "with tracer.start_as_current_span('gathering'):\n"
            "    await asyncio.gather(get_weather('Oslo'), get_weather('Lima'))"
        )
        awaiting.raise_for_error()
        blocking = await kernel.execute(  # no await: a plain cell, its call blocks
            "from tools import get_weather\n"
            "def run():\n    with tracer.start_as_current_span('blocking'):\n"
            "        return get_weather('Oslo')\nrun()"
        )
        blocking.raise_for_error()
        after = await kernel.execute(
            "from opentelemetry import trace as t\n"
            "print(f'{t.get_current_span().get_span_context().span_id:016x}')"
        )
        kernel_spans = json.loads((await kernel.execute(KERNEL_SPANS)).stdout)

    for name, result in [("gathering", awaiting), ("blocking", blocking)]:
        (opened,) = [span for span in kernel_spans if span["name"] == name]
        run = traced.run(result)
        assert opened["trace"] == traced.trace_id
        assert opened["parent"] == span_id(run)  # the run's span, sent with the cell
        assert traced.children(run) == []  # the calls nest under the kernel's span...
        calls = traced.children(opened["id"])
        assert calls == ["execute_tool get_weather"] * (2 if name == "gathering" else 1)
    # Each cell has its own context: an earlier cell's spans are not left current.
    assert int(after.stdout, 16) == span_id(traced.run(after))


@pytest.mark.ipykernel_lines
async def test_without_opentelemetry_the_kernel_sees_the_traceparent(
    kernel_python: str, traced: Trace
) -> None:
    async with ToolKernel(TOOLS, kernel=LocalKernel(python=kernel_python)) as kernel:
        seen = await kernel.execute(
            "import os, importlib.util\n"
            "print(importlib.util.find_spec('opentelemetry') is None)\n"
            "print(os.environ['TRACEPARENT'])"
        )
        after = await kernel.execute("import os\nprint(os.environ.get('TRACEPARENT'))")
    no_otel, traceparent = seen.stdout.split()
    assert no_otel == "True"
    assert traceparent == traceparent_of(traced.run(seen))
    assert after.stdout.strip() == traceparent_of(traced.run(after))  # each cell its own


# -- over a Jupyter Server's websocket ----------------------------------------------------


async def test_over_a_jupyter_servers_websocket(
    kernel_python: str, tmp_path: Path, traced: Trace
) -> None:
    kernelspec(tmp_path / "share", "progtc", kernel_python)
    process = await jupyter_server(tmp_path).start()
    try:
        server = JupyterServer(process.url, token=process.token)
        async with ToolKernel(TOOLS, kernel=RemoteKernel(server, kernel_name="progtc")) as kernel:
            result = await kernel.execute(GATHER + "import os\nprint(os.environ['TRACEPARENT'])")
        assert result.stdout.startswith("['Sunny in Oslo', 'Sunny in Lima']\n"), result.error
        run = traced.named("execute_code")[-1]
        assert result.stdout.splitlines()[1] == traceparent_of(run)
        assert traced.children(run) == ["execute_tool get_weather"] * 2

        async with AsyncProgtcClient(process.server(), kernel_name="progtc") as client:
            answer = await client.execute_code(
                GATHER, tool_call_handlers={"get_weather": get_weather}
            )
        assert "Sunny in Lima" in answer.stdout
        (client_run,) = traced.runs_in(traced.one("progtc.execute_code"))
        assert traced.children(client_run) == ["execute_tool get_weather"] * 2
    finally:
        process.stop()


# -- the toolset, MCP and pydantic-ai ---------------------------------------------------

SCRIPT = """\
import asyncio
from tools import get_weather

async def run():
    return {"w": await asyncio.gather(get_weather("Oslo"), get_weather("Lima"))}
"""


async def test_a_scripts_span_holds_its_run_and_its_calls(
    kernel_python: str, traced: Trace
) -> None:
    async with ProgrammaticToolset(
        [get_weather], kernel=LocalKernel(python=kernel_python)
    ) as toolset:
        await toolset.execute_tool_script(SCRIPT)

    script = traced.one("execute_tool_script")
    assert parent_id(script) == traced.root_id
    (run,) = traced.runs_in(script)
    assert traced.children(run) == ["execute_tool get_weather"] * 2


def ancestors(spans: list[ReadableSpan], span: ReadableSpan) -> list[str]:
    """The names of a span's ancestors, nearest first."""
    by_id = {span_id(other): other for other in spans}
    names = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        names.append(span.name)
    return names


async def test_an_mcp_requests_traceparent_parents_the_scripts_span(kernel_python: str) -> None:
    from mcp import Client

    from progtc_kernel.integrations.mcp import make_server

    async with (
        ProgrammaticToolset([get_weather], kernel=LocalKernel(python=kernel_python)) as toolset,
        # Over JSON-RPC (in memory), the server in a task of its own with no span current.
        Client(make_server(toolset), mode="legacy") as client,
    ):
        with tracer.start_as_current_span("the caller") as caller:
            # The MCP SDK's client sends the caller's span as the request's
            # _meta.traceparent; the server's span of the request is its child.
            result = await client.call_tool("execute_tool_script", {"script": SCRIPT})
    assert not result.is_error, result.content

    spans = Trace(caller).spans
    (script,) = [span for span in spans if span.name == "execute_tool_script"]
    assert ancestors(spans, script) == [
        "tools/call execute_tool_script",  # the MCP server's, parented by _meta.traceparent
        "MCP send tools/call execute_tool_script",  # the MCP client's
        "the caller",
    ]
    (run,) = [span for span in spans if parent_id(span) == span_id(script)]
    assert (
        sorted(s.name for s in spans if parent_id(s) == span_id(run))
        == ["execute_tool get_weather"] * 2
    )


async def test_a_pydantic_ai_agent_runs_span_parents_the_scripts(
    kernel_python: str, traced: Trace
) -> None:
    pytest.importorskip("pydantic_ai", reason="pydantic-ai needs Python 3.11+")
    from pydantic_ai import Agent, ModelResponse, TextPart, ToolCallPart
    from pydantic_ai.capabilities.instrumentation import Instrumentation
    from pydantic_ai.messages import ModelMessage
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    from progtc_kernel.integrations.pydantic_ai import CodeModeToolset

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if sum(isinstance(message, ModelResponse) for message in messages) == 0:
            return ModelResponse(parts=[ToolCallPart("execute_tool_script", {"script": SCRIPT})])
        return ModelResponse(parts=[TextPart("done")])

    toolset = CodeModeToolset([get_weather], kernel=LocalKernel(python=kernel_python))
    agent = Agent(FunctionModel(model), toolsets=[toolset], capabilities=[Instrumentation()])
    result = await agent.run("Weather?")
    assert result.output == "done"

    script = traced.one("execute_tool_script")
    # pydantic-ai's span of the tool call, in its span of the agent run.
    assert ancestors(traced.spans, script) == [
        "execute_tool execute_tool_script",
        "invoke_agent agent",
    ]
    (run,) = traced.runs_in(script)
    assert traced.children(run) == ["execute_tool get_weather"] * 2


# -- without opentelemetry ----------------------------------------------------------------

BLOCKED = """\
import sys

class NoOpenTelemetry:
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ImportError(f"{name} is not installed (blocked)")
        return None

sys.meta_path.insert(0, NoOpenTelemetry())

import progtc_kernel
from progtc_kernel import AsyncProgtcClient, ProgrammaticToolset, ToolKernel
from progtc_kernel.host import serving, tool_kernel, tracing
from progtc_kernel.kernel_side import extension

assert tracing.ENABLED is False
imported = sorted(name for name in sys.modules if name.startswith("opentelemetry"))
assert imported == [], imported
print("nothing imported")
"""


@pytest.mark.fast
def test_without_opentelemetry_nothing_of_it_is_imported() -> None:
    import subprocess

    result = subprocess.run(
        [sys.executable, "-c", BLOCKED], capture_output=True, text=True, check=False
    )
    assert result.stdout == "nothing imported\n", result.stderr


@pytest.mark.fast
def test_a_call_carries_a_traceparent_as_an_optional_key_of_protocol_3() -> None:
    from progtc_kernel.host.dispatch import _calls
    from progtc_kernel.kernel_side.bridge import PendingCall
    from progtc_kernel.protocol import PROTOCOL_VERSION

    traceparent = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    owner: Any = None  # the bridge that holds a call: not needed to encode it
    traced = PendingCall(1, "get_weather", {"city": "Oslo"}, {}, owner, traceparent)
    plain = PendingCall(2, "get_weather", {"city": "Oslo"}, {}, owner)
    body = b'{"calls":[%s,%s],"reply_channel":"shell"}' % (traced.request, plain.request)

    first, second = _calls.validate_json(body)["calls"]  # the host's check of the body
    assert first.get("traceparent") == traceparent
    assert "traceparent" not in second
    assert PROTOCOL_VERSION == 3


def request(metadata: dict[str, Any]) -> dict[str, Any]:
    """An execute_request as ipykernel keeps it while its cell runs (its parent)."""
    return {"header": {"msg_id": "m"}, "metadata": metadata}


@pytest.mark.fast
def test_the_cells_traceparent_is_its_environments_while_it_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from progtc_kernel.kernel_side import tracing as kernel_tracing

    monkeypatch.setenv("TRACEPARENT", "what the kernel was started with")
    traceparent = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    cell = kernel_tracing.CellTrace()
    cell.pre_execute(request({"traceparent": traceparent}))
    assert os.environ["TRACEPARENT"] == traceparent
    assert kernel_tracing.running == traceparent
    cell.post_execute()
    assert os.environ["TRACEPARENT"] == "what the kernel was started with"
    assert kernel_tracing.running is None

    malformed = kernel_tracing.CellTrace()
    malformed.pre_execute(request({"traceparent": "not one"}))
    assert os.environ["TRACEPARENT"] == "what the kernel was started with"
    assert kernel_tracing.running is None
    malformed.post_execute()
