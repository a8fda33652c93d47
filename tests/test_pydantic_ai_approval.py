"""CodeModeToolset: tools pydantic-ai says need approval need it inside scripts too.

The model is pydantic-ai's ``FunctionModel``, playing a model that writes a script
gathering two writes that need approval; the kernels are real. Inline, a
``HandleDeferredToolCalls`` capability decides during the run; deferred, the run
ends with ``DeferredToolRequests`` while the script waits in the kernel, and the
run resumed with ``DeferredToolResults`` carries the same script on."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("pydantic_ai", reason="pydantic-ai needs Python 3.11+")

from pydantic_ai import (
    Agent,
    ApprovalRequired,
    DeferredToolRequests,
    DeferredToolResults,
    FunctionToolset,
    RunContext,
    Tool,
    ToolDenied,
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

from progtc_kernel import LocalKernel, Timeout
from progtc_kernel.integrations.pydantic_ai import CodeModeToolset, script_calls, script_results

# Gathers two writes; a denied one comes back as the ToolDeniedError the script caught.
SCRIPT = """\
import asyncio
from tools import note, write_file, ToolDeniedError

async def run():
    await note("started")
    print("writing two files")
    done = await asyncio.gather(
        write_file(path="a.txt", text="A"),
        write_file(path="b.txt", text="B"),
        return_exceptions=True,
    )
    return {"done": [d if isinstance(d, str) else f"{type(d).__name__}: {d}" for d in done]}
"""


class Disk:
    """What the host's tools did: files written, notes taken."""

    def __init__(self) -> None:
        self.files: dict[str, str] = {}
        self.notes: list[str] = []

    def write_file(self, path: str, text: str) -> str:
        """Write a text file."""
        self.files[path] = text
        return f"wrote {path}"

    def note(self, text: str) -> None:
        """Take a note."""
        self.notes.append(text)

    def toolset(self) -> FunctionToolset[Any]:
        return FunctionToolset([Tool(self.write_file, requires_approval=True), Tool(self.note)])


def returns(messages: list[ModelMessage]) -> list[ToolReturnPart]:
    return [
        part
        for message in messages
        if isinstance(message, ModelRequest)
        for part in message.parts
        if isinstance(part, ToolReturnPart)
    ]


def scripted_model(script: str = SCRIPT) -> FunctionModel:
    """Writes ``script``, then answers with what it returned (or how it failed)."""

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        answered = returns(messages)
        if not answered:
            return ModelResponse(parts=[ToolCallPart("execute_tool_script", {"script": script})])
        return ModelResponse(parts=[TextPart(str(answered[-1].content))])

    return FunctionModel(model)


def read_only_b(requests: DeferredToolRequests) -> DeferredToolResults:
    """Allow writing a.txt; deny b.txt."""
    return requests.build_results(
        approvals={
            call.tool_call_id: True
            if call.args_as_dict()["path"] == "a.txt"
            else ToolDenied("b.txt is read-only")
            for call in requests.approvals
        }
    )


DONE = {
    "done": [
        "wrote a.txt",
        "ToolDeniedError: tool 'write_file' was denied: b.txt is read-only",
    ]
}


# The kernel sends a gather's calls that may wait for approval together: its loop,
# which differs by ipykernel line.
@pytest.mark.ipykernel_lines
async def test_a_handler_decides_the_scripts_calls_during_the_run(kernel_python: str) -> None:
    disk = Disk()
    asked: list[list[tuple[str, dict[str, Any]]]] = []

    def decide(ctx: RunContext[Any], requests: DeferredToolRequests) -> DeferredToolResults:
        asked.append([(call.tool_name, call.args_as_dict()) for call in requests.approvals])
        return read_only_b(requests)

    toolset = CodeModeToolset(toolsets=[disk.toolset()], kernel=LocalKernel(python=kernel_python))
    agent = Agent(
        scripted_model(), toolsets=[toolset], capabilities=[HandleDeferredToolCalls(decide)]
    )
    result = await agent.run("Write a.txt and b.txt")

    assert json.loads(result.output) == DONE
    assert disk.files == {"a.txt": "A"}
    # The gather's two calls were asked about together, by the tool's own name.
    assert asked == [
        [
            ("write_file", {"path": "a.txt", "text": "A"}),
            ("write_file", {"path": "b.txt", "text": "B"}),
        ]
    ]


async def test_a_run_ends_with_the_scripts_calls_deferred_and_the_resumed_run_carries_it_on(
    kernel_python: str,
) -> None:
    disk = Disk()
    kernel = LocalKernel(python=kernel_python)
    toolset = CodeModeToolset(toolsets=[disk.toolset()], kernel=kernel)
    agent = Agent(scripted_model(), toolsets=[toolset], output_type=[str, DeferredToolRequests])

    first = await agent.run("Write a.txt and b.txt")

    # The run ended; the script waits in the kernel, in the middle of its gather.
    assert isinstance(first.output, DeferredToolRequests)
    [script_call] = first.output.approvals
    assert script_call.tool_name == "execute_tool_script"
    assert disk.notes == ["started"] and disk.files == {}
    assert toolset.programmatic.kernel.running
    pending = script_calls(first.output)
    assert [(call.tool_name, call.args_as_dict()) for call in pending.approvals] == [
        ("write_file", {"path": "a.txt", "text": "A"}),
        ("write_file", {"path": "b.txt", "text": "B"}),
    ]
    assert toolset.waiting_scripts == {script_call.tool_call_id: pending.approvals}

    second = await agent.run(
        message_history=first.all_messages(),
        deferred_tool_results=script_results(first.output, read_only_b(pending)),
    )

    assert json.loads(str(second.output)) == DONE
    assert disk.files == {"a.txt": "A"}
    assert disk.notes == ["started"]  # the script went on from where it waited
    printed = [
        part.content
        for message in second.new_messages()
        if isinstance(message, ModelRequest)
        for part in message.parts
        if isinstance(part, UserPromptPart)
    ]
    assert "The script printed:\nwriting two files\n" in printed
    assert toolset.waiting_scripts == {}
    assert not toolset.programmatic.kernel.running  # closed with its last user


async def test_approving_the_script_call_allows_every_call_it_waits_on(
    kernel_python: str,
) -> None:
    disk = Disk()
    toolset = CodeModeToolset(toolsets=[disk.toolset()], kernel=LocalKernel(python=kernel_python))
    agent = Agent(scripted_model(), toolsets=[toolset], output_type=[str, DeferredToolRequests])

    first = await agent.run("Write a.txt and b.txt")
    assert isinstance(first.output, DeferredToolRequests)
    second = await agent.run(
        message_history=first.all_messages(),
        deferred_tool_results=first.output.build_results(approve_all=True),
    )

    assert json.loads(str(second.output)) == {"done": ["wrote a.txt", "wrote b.txt"]}
    assert disk.files == {"a.txt": "A", "b.txt": "B"}


async def test_an_approval_required_toolset_and_a_tool_raising_it_ask_too(
    kernel_python: str,
) -> None:
    sent: list[str] = []

    def send_email(ctx: RunContext[Any], to: str) -> str:
        """Send an email; to anyone outside the company only once approved."""
        if not to.endswith("@example.com") and not ctx.tool_call_approved:
            raise ApprovalRequired(metadata={"why": "external address"})
        sent.append(to)
        return f"sent to {to}"

    def delete_account(user: str) -> str:
        """Delete a user's account."""
        return f"{user} deleted"

    seen: list[tuple[str, dict[str, Any], dict[str, Any]]] = []

    def decide(ctx: RunContext[Any], requests: DeferredToolRequests) -> DeferredToolResults:
        for call in requests.approvals:
            seen.append(
                (call.tool_name, call.args_as_dict(), requests.metadata.get(call.tool_call_id, {}))
            )
        return requests.build_results(
            approvals={
                call.tool_call_id: call.tool_name == "send_email" for call in requests.approvals
            }
        )

    script = (
        "from tools import send_email, delete_account, ToolDeniedError\n"
        "def run():\n"
        "    inside = send_email(to='ann@example.com')\n"
        "    outside = send_email(to='bob@elsewhere.org')\n"
        "    try:\n"
        "        deleted = delete_account(user='bob')\n"
        "    except PermissionError as error:\n"
        "        deleted = str(error)\n"
        "    return {'sent': [inside, outside], 'deleted': deleted}"
    )
    toolset = CodeModeToolset(
        toolsets=[
            FunctionToolset([send_email]),
            FunctionToolset([delete_account]).approval_required(),
        ],
        kernel=LocalKernel(python=kernel_python),
    )
    agent = Agent(
        scripted_model(script), toolsets=[toolset], capabilities=[HandleDeferredToolCalls(decide)]
    )
    result = await agent.run("Mail Ann and Bob, delete Bob")

    assert json.loads(result.output) == {
        "sent": ["sent to ann@example.com", "sent to bob@elsewhere.org"],
        "deleted": "tool 'delete_account' was denied: The tool call was denied.",
    }
    assert sent == ["ann@example.com", "bob@elsewhere.org"]
    assert seen == [
        ("send_email", {"to": "bob@elsewhere.org"}, {"why": "external address"}),
        ("delete_account", {"user": "bob"}, {}),
    ]


async def test_a_script_nobody_decides_for_ends_at_its_approval_timeout(
    kernel_python: str,
) -> None:
    disk = Disk()
    script = (
        "from tools import write_file\n"
        "def run():\n"
        "    return {'done': write_file(path='a.txt', text='A')}\n"
    )
    toolset = CodeModeToolset(
        toolsets=[disk.toolset()],
        kernel=LocalKernel(python=kernel_python),
        timeout=Timeout(60, approval=1),
    )
    agent = Agent(
        scripted_model(script), toolsets=[toolset], output_type=[str, DeferredToolRequests]
    )

    first = await agent.run("Write a.txt")
    assert isinstance(first.output, DeferredToolRequests)
    assert toolset.programmatic.kernel.running

    await toolset.wait_scripts()  # the application never resumes the run

    assert not toolset.programmatic.kernel.running  # the waiting script let it go
    assert toolset.waiting_scripts == {}
    # A run resumed after that is told how the script ended; nothing ran.
    second = await agent.run(
        message_history=first.all_messages(),
        deferred_tool_results=first.output.build_results(approve_all=True),
    )
    assert second.output == (
        "ToolDeniedError: tool 'write_file' was denied: no decision within 1 s (the "
        "approval timeout) (line 3: `return {'done': write_file(path='a.txt', text='A')}`) "
        "(it ended while it waited for decisions on its tool calls)"
    )
    assert disk.files == {}


async def test_denying_the_script_call_tells_the_model_and_stops_the_script(
    kernel_python: str,
) -> None:
    disk = Disk()
    toolset = CodeModeToolset(toolsets=[disk.toolset()], kernel=LocalKernel(python=kernel_python))
    agent = Agent(scripted_model(), toolsets=[toolset], output_type=[str, DeferredToolRequests])

    first = await agent.run("Write a.txt and b.txt")
    assert isinstance(first.output, DeferredToolRequests)
    [script_call] = first.output.approvals
    second = await agent.run(
        message_history=first.all_messages(),
        deferred_tool_results=DeferredToolResults(
            approvals={script_call.tool_call_id: ToolDenied("not today")}
        ),
    )
    await toolset.wait_scripts()

    assert second.output == "not today"
    assert disk.files == {}
    assert not toolset.programmatic.kernel.running


async def test_requires_approval_names_the_toolsets_own_tools_that_need_it(
    kernel_python: str,
) -> None:
    sent: list[str] = []

    def send_sms(to: str) -> str:
        """Send a text message."""
        sent.append(to)
        return f"texted {to}"

    asked: list[str] = []

    def decide(ctx: RunContext[Any], requests: DeferredToolRequests) -> DeferredToolResults:
        asked.extend(call.tool_name for call in requests.approvals)
        return requests.build_results(approve_all=True)

    script = "from tools import send_sms\ndef run():\n    return {'sms': send_sms('ann')}"
    toolset = CodeModeToolset(
        [send_sms], kernel=LocalKernel(python=kernel_python), requires_approval={"send_sms"}
    )
    agent = Agent(
        scripted_model(script), toolsets=[toolset], capabilities=[HandleDeferredToolCalls(decide)]
    )
    result = await agent.run("Text Ann")

    assert json.loads(result.output) == {"sms": "texted ann"}
    assert asked == ["send_sms"] and sent == ["ann"]
    with pytest.raises(TypeError, match="takes no approve="):
        CodeModeToolset([send_sms], approve=lambda request: None)
