"""What a script displays comes back to the model: a chart, a table's HTML, text.

Each channel on a real kernel: ``ScriptResult.outputs`` in Python, image content
blocks from a real ``progtc-kernel mcp`` process read by the MCP SDK's client, and
``BinaryContent`` in the tool return a pydantic-ai ``FunctionModel`` reads. The
scripts draw their PNGs with the standard library (``png`` below, its source put in
the script), so the test computes the very bytes the model must get; one test draws
with matplotlib, in a kernel environment that has it.
"""

from __future__ import annotations

import base64
import inspect
import json
import struct
from typing import Any

import pytest

from progtc_kernel import LocalKernel, ProgrammaticToolset, ScriptOutput, ToolKernel
from progtc_kernel.toolset import DEFAULT_MODULES

from .conftest import LINES, ROOT, build_env, selected_lines

# What the scripts may import besides the defaults: to draw and display a PNG.
MODULES = [*DEFAULT_MODULES, "zlib", "struct", "IPython"]


def png(width: int, height: int, seed: int | None = None) -> bytes:
    """A valid RGB PNG: one colour, or noise (which does not compress) given a seed."""
    import random
    import struct
    import zlib

    noise = random.Random(seed)

    def pixel(x: int, y: int) -> bytes:
        return (
            bytes(noise.randrange(256) for _ in range(3)) if seed is not None else b"\x20\x80\xe0"
        )

    rows = b"".join(b"\x00" + b"".join(pixel(x, y) for x in range(width)) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


# A script as a model writes it: draws a chart, shows a table, writes a line of text.
SCRIPT = f"""\
from IPython.display import HTML, Image, Markdown, display

{inspect.getsource(png)}

def run():
    display(Image(data=png(4, 3), format="png"))
    display(HTML("<table><tr><th>city</th><th>temp</th></tr><tr><td>Oslo</td><td>3</td></tr></table>"))
    display(Markdown("**Oslo** is the coldest"))
    display("three cities")
    print("drawn")
    return {{"cities": 3}}
"""
TABLE = "<table><tr><th>city</th><th>temp</th></tr><tr><td>Oslo</td><td>3</td></tr></table>"


def showing(*images: tuple[int, int, int | None]) -> str:
    """A script that displays PNGs of these (width, height, seed), in order."""
    shown = "\n".join(f"    display(Image(data=png{image}, format='png'))" for image in images)
    return (
        f"from IPython.display import Image, display\n\n{inspect.getsource(png)}\n\n"
        f"def run():\n{shown}\n    return {{}}\n"
    )


def toolset_on(kernel_python: str, **options: Any) -> ProgrammaticToolset:
    kernel = ToolKernel(kernel=LocalKernel(python=kernel_python))
    return ProgrammaticToolset(kernel=kernel, supported_modules=MODULES, **options)


# -- Python: ScriptResult.outputs -----------------------------------------------------


@pytest.mark.ipykernel_lines
async def test_what_a_script_displays_comes_back_in_order_beside_its_value(
    kernel_python: str,
) -> None:
    async with toolset_on(kernel_python) as toolset:
        result = await toolset.run_script(SCRIPT)

    assert result.value == {"cities": 3}
    assert result.stdout == "drawn\n"
    assert result.outputs == [
        ScriptOutput(mime_type="image/png", data=png(4, 3)),
        ScriptOutput(mime_type="text/html", text=TABLE),
        ScriptOutput(mime_type="text/markdown", text="**Oslo** is the coldest"),
        ScriptOutput(mime_type="text/plain", text="'three cities'"),
    ]
    assert result.outputs_left_out == ""
    # A model told to use display() learns that it comes back.
    toolset.returns_printed_text = True
    instructions = (await toolset.get_execution_environment())["instructions"]
    assert "`display(...)`" in " ".join(instructions.split())


# ipykernel shows a cell's figures on IPython's post_execute, which each line fires
# (differently) for a silent run too: a script runs silently.
@pytest.mark.parametrize("line", selected_lines(), ids=lambda line: f"ipykernel-{line}")
async def test_a_matplotlib_figure_left_open_comes_back_as_a_png(line: str) -> None:
    python = build_env(f"ipykernel-{line}-matplotlib", ["-e", str(ROOT), LINES[line], "matplotlib"])
    script = """\
import matplotlib.pyplot as plt

def run():
    temps = {"Oslo": 3, "Rome": 18, "Lima": 22}
    plt.bar(list(temps), list(temps.values()))
    plt.title("Temperature")
    return {"hottest": max(temps, key=temps.get)}
"""
    kernel = ToolKernel(kernel=LocalKernel(python=python))
    modules = [*DEFAULT_MODULES, "matplotlib"]
    async with ProgrammaticToolset(kernel=kernel, supported_modules=modules) as toolset:
        result = await toolset.run_script(script)
        again = await toolset.run_script("def run():\n    return {}\n")

    assert result.value == {"hottest": "Lima"}
    [figure] = result.outputs
    assert figure.mime_type == "image/png"
    assert figure.data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", figure.data[16:24])
    assert width > 100 and height > 100
    # Shown once: the figure was closed with the script that drew it.
    assert again.outputs == []


# -- the size limits, and the notice of what they left out ---------------------------


async def test_outputs_past_the_limits_are_left_out_and_the_model_is_told(
    kernel_python: str,
) -> None:
    small, noisy = png(2, 2), png(40, 40, seed=1)  # 4,800 bytes of noise: ~4.9 kB
    assert len(small) < 100 < 4_000 < len(noisy) < 6_000
    script = showing((2, 2, None), (40, 40, 1), (2, 2, None), (2, 2, None), (2, 2, None))
    limits = {"max_output_bytes": 4_000, "max_total_output_bytes": 3 * len(small)}
    async with toolset_on(kernel_python, **limits) as toolset:
        result = await toolset.run_script(script)

    assert result.outputs == [ScriptOutput(mime_type="image/png", data=small)] * 3
    assert result.outputs_left_out == (
        f"[1 image the script displayed was left out ({len(noisy) / 1000:.1f} kB), each over "
        "the 4 kB limit per output: display smaller ones (fewer pixels, a lower dpi, fewer "
        "rows) or return the data in the dict]\n"
        f"[1 image the script displayed was left out ({len(small)} bytes), past the "
        f"{3 * len(small)} bytes limit for all of a script's outputs: display fewer, or "
        "smaller ones]"
    )


async def test_a_long_text_output_is_cut_saying_so(kernel_python: str) -> None:
    script = (
        "from IPython.display import HTML, display\n\n"
        "def run():\n"
        "    display(HTML('<p>' + 'x' * 5000 + '</p>'))\n"
        "    return {}\n"
    )
    async with toolset_on(kernel_python, max_output_chars=1000) as toolset:
        result = await toolset.run_script(script)

    [html] = result.outputs
    assert html.text == (
        "<p>" + "x" * 997 + "\n[... 4,007 more characters were displayed and cut; display "
        "less, or return the data in the dict]"
    )


@pytest.mark.fast
def test_the_notice_counts_what_was_left_out_and_says_sizes_as_people_do() -> None:
    from progtc_kernel import Output
    from progtc_kernel.toolset.outputs import script_outputs

    big_png = base64.b64encode(b"\x89PNG" + bytes(3_100_000)).decode()
    outputs = [
        Output(kind="display_data", data={"image/png": big_png, "text/plain": "<Figure>"}),
        Output(kind="display_data", data={"text/html": "<p>" + "x" * 2_000_000 + "</p>"}),
        Output(kind="display_data", data={"text/plain": "kept"}),
    ]

    kept, left_out = script_outputs(
        outputs, max_bytes=1_000_000, max_total_bytes=3_000_000, max_chars=3_000_000
    )

    assert kept == [ScriptOutput(mime_type="text/plain", text="kept")]
    assert left_out == (
        "[1 image and 1 text output the script displayed were left out (5.1 MB), each over "
        "the 1 MB limit per output: display smaller ones (fewer pixels, a lower dpi, fewer "
        "rows) or return the data in the dict]"
    )


# -- MCP: image content blocks, from a real progtc-kernel mcp -------------------------


async def test_an_mcp_client_gets_the_chart_as_an_image_block(kernel_python: str) -> None:
    pytest.importorskip("mcp", reason="the MCP SDK is an optional extra")
    from mcp.types import ImageContent, TextContent

    from .test_mcp import mcp_session

    modules = [arg for name in MODULES for arg in ("--module", name)]
    script = SCRIPT.replace("return {", "display(Image(data=png(40, 40, seed=1)))\n    return {")
    async with mcp_session(
        "--python", kernel_python, *modules, "--max-output-bytes", "4000"
    ) as session:
        result = await session.call_tool("execute_tool_script", {"script": script})

    assert not result.is_error
    assert result.structured_content == {"returnValue": '{"cities": 3}'}
    image, *texts = result.content[2:]
    assert isinstance(image, ImageContent)
    assert (image.mime_type, base64.b64decode(image.data)) == ("image/png", png(4, 3))
    assert [block.text for block in texts if isinstance(block, TextContent)] == [
        f"The script displayed (text/html):\n{TABLE}",
        "The script displayed (text/markdown):\n**Oslo** is the coldest",
        "The script displayed (text/plain):\n'three cities'",
        f"[1 image the script displayed was left out ({len(png(40, 40, 1)) / 1000:.1f} kB), "
        "each over the 4 kB limit per output: display smaller ones (fewer pixels, a lower "
        "dpi, fewer rows) or return the data in the dict]",
    ]
    assert [type(block).__name__ for block in result.content[:2]] == ["TextContent"] * 2
    assert result.content[1].text == "The script printed:\ndrawn\n"  # type: ignore[union-attr]


@pytest.mark.fast
def test_the_mcp_limits_take_a_whole_number_of_bytes(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("mcp", reason="the MCP SDK is an optional extra")
    from progtc_kernel.cli import main

    assert main(["mcp", "--max-output-bytes", "1MB"]) == 2
    assert "'1MB': give a whole number of bytes, 1 or more" in " ".join(
        capsys.readouterr().err.split()
    )


# -- pydantic-ai: BinaryContent in the tool return ------------------------------------


async def test_a_pydantic_ai_model_sees_the_chart_in_the_tool_return(kernel_python: str) -> None:
    pytest.importorskip("pydantic_ai", reason="pydantic-ai needs Python 3.11+")
    from pydantic_ai import Agent, BinaryContent
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

    seen: list[ToolReturnPart] = []

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if len(messages) == 1:
            return ModelResponse(parts=[ToolCallPart("execute_tool_script", {"script": SCRIPT})])
        last = messages[-1]
        assert isinstance(last, ModelRequest)
        seen.extend(part for part in last.parts if isinstance(part, ToolReturnPart))
        return ModelResponse(parts=[TextPart("Oslo is the coldest")])

    toolset = CodeModeToolset(
        kernel=ToolKernel(kernel=LocalKernel(python=kernel_python)), supported_modules=MODULES
    )
    result = await Agent(FunctionModel(model), toolsets=[toolset]).run("Chart the weather")

    assert result.output == "Oslo is the coldest"
    [returned] = seen
    assert returned.content == [
        '{"cities": 3}',
        BinaryContent(png(4, 3), media_type="image/png"),
        f"The script displayed (text/html):\n{TABLE}",
        "The script displayed (text/markdown):\n**Oslo** is the coldest",
        "The script displayed (text/plain):\n'three cities'",
    ]
    [image] = returned.files
    assert isinstance(image, BinaryContent) and image.is_image
    # A model whose tool results hold only text gets the image in a message after it.
    text, files = returned.model_response_str_and_user_content()
    assert json.loads(text)[0] == '{"cities": 3}'
    assert image in files
