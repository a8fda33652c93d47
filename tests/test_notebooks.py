"""Notebooks whose cells call host tools, run for real: ``execute_notebook``, the
papermill engine (from Python and from the ``papermill`` command), ``progtc-kernel
notebook``, and the example notebooks in ``notebooks/``, executed with nbclient and
checked by their outputs."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import papermill
import pytest
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from nbformat import NotebookNode
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from progtc_kernel import NotebookExecutionError, execute_notebook, load_tools
from progtc_kernel.cli import main
from progtc_kernel.cli.notebook import parameter_value
from progtc_kernel.integrations.nbclient import (
    ToolNotebookClient,
    inject_parameters,
)
from progtc_kernel.kernels.local import single_spec
from progtc_kernel.timeouts import Timeout

from .conftest import TOOLS, bare_kernel_env, plain_kernel, selected_lines
from .servers import jupyter_server, kernelspec
from .test_attach import HOST_TOOLS, Attach
from .test_cli import progtc_kernel

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
EXAMPLE_TOOLS = str(ROOT / "examples" / "tools.py")
TRIP = NOTEBOOKS / "trip_report.ipynb"  # parameters: city, country, nights, currency


def notebook(*cells: str, parameters: str | None = None) -> NotebookNode:
    """A notebook of code cells, after a cell tagged ``parameters`` if given."""
    nb: NotebookNode = new_notebook(
        cells=[new_markdown_cell("# A report"), *(new_code_cell(source) for source in cells)]
    )
    if parameters is not None:
        nb.cells.insert(1, new_code_cell(parameters, metadata={"tags": ["parameters"]}))
    return nb


def printed(cell: NotebookNode) -> str:
    return "".join(
        output.text
        for output in cell.get("outputs", [])
        if output.output_type == "stream" and output.name == "stdout"
    )


def errors(cell: NotebookNode) -> list[tuple[str, str]]:
    return [
        (output.ename, output.evalue)
        for output in cell.get("outputs", [])
        if output.output_type == "error"
    ]


def plain(text: str) -> str:
    """Text without ANSI colour codes."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def frames(traceback: str) -> list[str]:
    """The frames an IPython traceback shows: ``Cell In[1], line 2`` or ``File ...``."""
    return [
        line.split(", in ")[0]
        for line in plain(traceback).splitlines()
        if line.startswith(("Cell In[", "File ", "    [... skipping"))
    ]


def error_tracebacks(nb: NotebookNode) -> list[str]:
    return [
        plain("\n".join(output.traceback))
        for cell in nb.cells
        for output in cell.get("outputs", [])
        if output.output_type == "error"
    ]


def no_tool_threads_left() -> bool:
    return not any(
        thread.name == "progtc-kernel-notebook-tools" for thread in threading.enumerate()
    )


# -- execute_notebook ---------------------------------------------------------------


def test_a_notebook_file_runs_with_tools_and_parameters(kernel_python: str, tmp_path: Path) -> None:
    path = tmp_path / "weather.ipynb"
    nbformat.write(
        notebook(
            "from tools import get_weather\nprint(await get_weather(city, country))",
            # No await in this cell: the call blocks and returns the result.
            'import tools, os\nprint(tools.search_database("hotels", limit=2))\nprint(os.getcwd())',
            'from IPython.display import HTML\nHTML(f"<b>{city}</b>")',
            parameters='city = "Paris"\ncountry = "France"',
        ),
        path,
    )

    nb = execute_notebook(
        path, tools=TOOLS, parameters={"city": "Oslo", "country": "Norway"}, python=kernel_python
    )

    _, injected, weather, search, html = nb.cells[1:]
    assert injected.metadata.tags == ["injected-parameters"]
    assert injected.source == "# Parameters\ncity = 'Oslo'\ncountry = 'Norway'\n"
    assert printed(weather) == "Weather in Oslo, Norway: Sunny, 22°C\n"
    assert printed(search) == (
        f"[{{'id': 0, 'name': 'hotels 0'}}, {{'id': 1, 'name': 'hotels 1'}}]\n{tmp_path}\n"
    )  # it ran in the notebook's folder
    assert html.outputs[0].data["text/html"] == "<b>Oslo</b>"
    assert [cell.execution_count for cell in nb.cells[1:]] == [1, 2, 3, 4, 5]
    assert "Paris" in nbformat.read(path, as_version=4).cells[1].source  # the file is kept
    assert no_tool_threads_left()


def test_a_failing_tool_call_is_a_cell_error_that_stops_the_run(kernel_python: str) -> None:
    nb = notebook(
        'print("booking")\nimport tools\nawait tools.fail("no rooms left")', 'print("paid")'
    )

    with pytest.raises(NotebookExecutionError) as raised:
        execute_notebook(nb, tools=TOOLS, python=kernel_python)

    error = raised.value
    assert isinstance(error, CellExecutionError)  # what nbclient users catch
    assert (error.ename, error.evalue) == (
        "ToolError",
        "tool 'fail' failed: ValueError: no rooms left",
    )
    assert error.cell_index == 1 and error.notebook is nb
    assert printed(nb.cells[1]) == "booking\n"
    assert errors(nb.cells[1]) == [("ToolError", "tool 'fail' failed: ValueError: no rooms left")]
    assert nb.cells[2].outputs == []  # not run
    assert "await tools.fail(" in str(error)  # nbclient's message: the cell and its traceback
    assert frames(str(error)) == ["Cell In[1], line 3"]  # the user's lines only


@pytest.mark.parametrize("kernel_side", ["installed", "brought by the host"])
def test_tracebacks_show_the_users_lines_only(kernel_side: str, newest_kernel_python: str) -> None:
    python = (
        newest_kernel_python
        if kernel_side == "installed"
        else bare_kernel_env(selected_lines()[-1])
    )  # ipykernel alone
    nb = notebook(
        "import tools\nawait tools.fail('no rooms left')",
        "def book():\n    return tools.fail('no rooms left')\n\nbook()",
        "tools.no_such_tool()",
        "tools.get_weather('Oslo')",
        "import asyncio\nawait asyncio.gather(tools.fail('a'), tools.fail('b'))",
    )

    execute_notebook(nb, tools=TOOLS, python=python, allow_errors=True)

    assert [frames(traceback) for traceback in error_tracebacks(nb)] == [
        ["Cell In[1], line 2"],
        ["Cell In[2], line 4", "Cell In[2], line 2"],
        ["Cell In[3], line 1"],
        ["Cell In[4], line 1"],
        ["Cell In[5], line 2"],
    ]
    assert [name for cell in nb.cells for name, _ in errors(cell)] == [
        "ToolError",
        "ToolError",
        "AttributeError",
        "ToolArgumentError",
        "ToolError",
    ]


def test_allow_errors_runs_every_cell(newest_kernel_python: str) -> None:
    nb = notebook("import tools\ntools.fail('no rooms left')", 'print("paid")')

    executed = execute_notebook(nb, tools=TOOLS, python=newest_kernel_python, allow_errors=True)

    assert executed is nb  # a notebook object is run in place
    assert errors(nb.cells[1])[0][0] == "ToolError"  # a blocking call, in a cell with no await
    assert printed(nb.cells[2]) == "paid\n"


def test_a_cell_that_runs_past_its_timeout_is_interrupted(kernel_python: str) -> None:
    cancelled = threading.Event()

    async def wait_forever() -> None:
        """Never answers."""
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    nb = notebook("import tools\nawait tools.wait_forever()", "print('next cell')")

    with pytest.raises(NotebookExecutionError) as raised:
        execute_notebook(
            nb, tools=[wait_forever], python=kernel_python, timeout=Timeout(2, tool_call=None)
        )

    assert raised.value.ename == "CellTimeoutError"
    (interrupted, _), (timed_out, why) = errors(nb.cells[1])
    # The kernel's own word first: ipykernel 7 raises KeyboardInterrupt in the cell,
    # ipykernel 6 cancels the task that awaits; then the reason.
    assert interrupted in {"KeyboardInterrupt", "CancelledError"}
    assert timed_out == "CellTimeoutError"
    assert why == (
        "the cell ran longer than its timeout (2 s) and was interrupted; give it "
        "more time with timeout=..."
    )  # execute_notebook's own parameter
    assert isinstance(raised.value, CellTimeoutError)  # what nbclient raises for a timeout
    assert cancelled.wait(10), "the pending tool call was not cancelled"
    assert nb.cells[2].outputs == []


def test_a_tool_call_past_its_tool_timeout_fails_in_the_cell(newest_kernel_python: str) -> None:
    async def slow() -> str:
        """Answers after a minute."""
        await asyncio.sleep(60)
        return "late"

    nb = notebook(
        "import tools\ntry:\n    await tools.slow()\n"
        "except tools.ToolTimeoutError as error:\n    print(error.message)"
    )

    nb = execute_notebook(
        nb, tools=[slow], python=newest_kernel_python, timeout=Timeout(None, tool_call=0.5)
    )

    assert "0.5" in printed(nb.cells[1])


def test_a_kernel_that_dies_is_a_cell_error_that_ends_the_run(newest_kernel_python: str) -> None:
    def kill(pid: int) -> None:
        """Kills the kernel that calls it, while its call is pending."""
        os.kill(pid, signal.SIGKILL)

    nb = notebook(
        "import os, tools\nprint('about to die', flush=True)\nawait tools.kill(os.getpid())",
        "print('never')",
    )

    with pytest.raises(NotebookExecutionError) as raised:
        execute_notebook(nb, tools=[kill], python=newest_kernel_python, allow_errors=True)

    error = raised.value
    assert isinstance(error, DeadKernelError)  # nbclient's, a RuntimeError
    assert error.ename == "DeadKernelError" and error.cell_index == 1
    assert error.evalue.startswith("the kernel died while this cell ran (killed by signal 9)")
    assert printed(nb.cells[1]) == "about to die\n"
    assert errors(nb.cells[1]) == [("DeadKernelError", error.evalue)]
    assert nb.cells[2].outputs == []
    assert no_tool_threads_left()


async def test_a_kernel_of_your_own_is_served_and_left_running(
    newest_kernel_python: str, tmp_path: Path
) -> None:
    km = await plain_kernel(newest_kernel_python, tmp=tmp_path)  # no extension loaded
    nb = notebook("import tools\nprint(await tools.get_weather('Lima', 'Peru'))")
    client = ToolNotebookClient(nb, km, tools=TOOLS)
    try:
        await client.async_execute()

        assert printed(nb.cells[1]) == "Weather in Lima, Peru: Sunny, 22°C\n"
        assert await km.is_alive()  # nbclient leaves a kernel it was given running
        assert no_tool_threads_left()  # ... but the tools are no longer served
    finally:
        if client.kc is not None:
            client.kc.stop_channels()
        await km.shutdown_kernel(now=True)


# -- as nbclient: hooks, exception types --------------------------------------------

HOOKS = [
    "on_notebook_start",
    "on_notebook_complete",
    "on_notebook_error",
    "on_cell_start",
    "on_cell_execute",
    "on_cell_complete",
    "on_cell_executed",
    "on_cell_error",
]


async def run_with_hooks(
    client_class: type[NotebookClient], cells: list[str], folder: Path, **options: Any
) -> tuple[list[str], Exception | None, list[Any]]:
    """Run a notebook of these cells (after a markdown cell) on the kernelspec
    ``progtc-test``, over Unix sockets in ``folder`` (no TCP ports to race for); return
    the hooks that fired, in order, what was raised, and each cell's execution count
    and outputs, but those the README says ToolNotebookClient adds (why a cell timed
    out or lost its kernel)."""
    seen: list[str] = []

    def recorder(name: str) -> Callable[..., None]:
        def hook(cell_index: int | None = None, **_: Any) -> None:
            seen.append(name if cell_index is None else f"{name} {cell_index}")

        return hook

    hooks: dict[str, Any] = {name: recorder(name) for name in HOOKS}
    nb = notebook(*cells)
    folder = folder / client_class.__name__  # each kernel's sockets apart
    folder.mkdir()
    km = AsyncKernelManager(kernel_name="progtc-test", transport="ipc", ip=str(folder / "kernel"))
    client = client_class(nb, km, **hooks, **options)
    raised = None
    try:
        await client.async_execute()
    except Exception as exc:
        raised = exc
    finally:
        if km.has_kernel:  # a kernel given to nbclient is the giver's to shut down
            await km.shutdown_kernel(now=True)
    documented = {"CellTimeoutError", "DeadKernelError"}
    cells_run = [
        (
            cell.get("execution_count"),
            [output for output in cell.get("outputs", []) if output.get("ename") not in documented],
        )
        for cell in nb.cells
    ]
    return seen, raised, cells_run


SLEEP = "import time\ntime.sleep(120)"


@pytest.mark.parametrize(
    "cells, options, raised",
    [
        (["print('ok')", "raise ValueError('no')", "print('never')"], {}, [CellExecutionError]),
        (["print('ok')", "raise ValueError('no')", "print('after')"], {"allow_errors": True}, []),
        (
            [
                "print('ok')",
                "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
                "print('never')",
            ],
            {},
            [DeadKernelError, RuntimeError],
        ),
        # nbclient's interrupt gives the cell the kernel's KeyboardInterrupt; ours also says why
        (
            ["print('ok')", SLEEP, "print('never')"],
            {"timeout": 1, "interrupt_on_timeout": True},
            [CellExecutionError, CellTimeoutError],
        ),
        (
            ["print('ok')", SLEEP, "print('never')"],
            {"timeout": 1, "interrupt_on_timeout": False},
            [CellTimeoutError],
        ),
    ],
    ids=[
        "a failing cell",
        "allow_errors",
        "a kernel that dies",
        "a timeout, interrupted",
        "a timeout, not interrupted",
    ],
)
async def test_hooks_fire_and_errors_are_raised_as_nbclient_does(
    cells: list[str],
    options: dict[str, Any],
    raised: list[type[Exception]],
    newest_kernel_python: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kernelspec(tmp_path / "share", "progtc-test", newest_kernel_python)
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "share"))

    plain_hooks, plain_error, plain_cells = await run_with_hooks(
        NotebookClient, cells, tmp_path, **options
    )
    our_hooks, our_error, our_cells = await run_with_hooks(
        ToolNotebookClient, cells, tmp_path, tools=TOOLS, **options
    )

    assert our_hooks == plain_hooks
    if DeadKernelError in raised:  # what a kernel sends as it is killed may never leave it
        del our_cells[2], plain_cells[2]
    assert our_cells == plain_cells
    assert type(plain_error) is (raised[0] if raised else type(None))  # nbclient's own
    for kind in raised:  # what nbclient raised, and what code that catches it expects
        assert isinstance(our_error, kind), (kind, our_error)
    if raised:
        assert isinstance(our_error, NotebookExecutionError) and our_error.cell_index == 2
    else:
        assert our_error is None


def test_bad_input_is_refused_before_any_kernel_starts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no Python interpreter at"):
        execute_notebook(notebook("pass"), python=str(tmp_path / "python"))
    with pytest.raises(ValueError, match="not a Python variable name"):
        execute_notebook(notebook("pass"), parameters={"two words": 1})
    with pytest.raises(ValueError, match="cannot be written in a cell"):
        execute_notebook(notebook("pass"), parameters={"when": object()})
    with pytest.raises(FileNotFoundError):
        execute_notebook(tmp_path / "missing.ipynb")


def test_parameters_go_after_the_parameters_cell_as_papermill_puts_them() -> None:
    nb = notebook("print(n)", parameters="n = 1")

    inject_parameters(nb, {"n": 2})
    inject_parameters(nb, {"n": 3, "names": ["a", "b"], "ok": None})  # replaces the first

    assert [cell.source for cell in nb.cells[1:]] == [
        "n = 1",
        "# Parameters\nn = 3\nnames = ['a', 'b']\nok = None\n",
        "print(n)",
    ]
    untagged = notebook("print(n)")
    inject_parameters(untagged, {"n": 2.5})
    assert untagged.cells[0].source == "# Parameters\nn = 2.5\n"


# -- papermill ------------------------------------------------------------------------


def test_papermill_runs_a_notebook_with_tools_from_python(
    newest_kernel_python: str, tmp_path: Path
) -> None:
    out = tmp_path / "tokyo.ipynb"

    papermill.execute_notebook(
        str(TRIP),
        str(out),
        parameters={"city": "Tokyo", "country": "Japan", "nights": 3},
        engine_name="progtc",
        tools=load_tools([EXAMPLE_TOOLS]),
        python=newest_kernel_python,
        progress_bar=False,
    )

    cells = nbformat.read(out, as_version=4).cells
    assert printed(cells[3]) == "Weather in Tokyo: Cloudy, 18°C\n"
    assert printed(cells[4]) == "Hotel booked for 3 nights: HTL-TOK-003\n"
    assert "Carry-on suitcase" in cells[5].outputs[0].data["text/html"]
    assert all(cell.metadata.papermill.status == "completed" for cell in cells)

    with pytest.raises(papermill.PapermillExecutionError, match="no rooms available in Paris"):
        papermill.execute_notebook(
            str(TRIP),
            str(out),
            parameters={"city": "Paris", "country": "France"},
            engine_name="progtc",
            tools=load_tools([EXAMPLE_TOOLS]),
            python=newest_kernel_python,
            progress_bar=False,
        )
    failed = nbformat.read(out, as_version=4)
    assert "An Exception was encountered" in failed.cells[0].source  # papermill's banner
    assert [name for cell in failed.cells for name, _ in errors(cell)] == ["ToolError"]
    assert [frames(traceback) for traceback in error_tracebacks(failed)] == [
        ["Cell In[4], line 1"]
    ]  # the user's lines only


def test_the_papermill_command_serves_the_tools_named_in_the_environment(
    newest_kernel_python: str, tmp_path: Path
) -> None:
    kernelspec(tmp_path / "share", "progtc-test", newest_kernel_python)
    (tmp_path / "extra.py").write_text("def shout(text: str) -> str:\n    return text.upper()\n")
    source = nbformat.read(TRIP, as_version=4)
    source.cells.append(new_code_cell("import tools\nprint(tools.shout(city))"))
    nbformat.write(source, tmp_path / "trip.ipynb")
    env = {
        **os.environ,
        "JUPYTER_PATH": str(tmp_path / "share"),
        "PROGTC_KERNEL_TOOLS": os.pathsep.join([EXAMPLE_TOOLS, "extra.py"]),
    }

    def run_papermill(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "papermill",
                "trip.ipynb",
                "out.ipynb",
                "-k",
                "progtc-test",
                "--engine",
                "progtc",
                "--no-progress-bar",
                *args,
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=120,
        )

    done = run_papermill("-p", "city", "London", "-p", "country", "UK")

    assert done.returncode == 0, done.stderr
    cells = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells
    assert printed(cells[3]) == "Weather in London: Light rain, 14°C\n"
    assert printed(cells[-1]) == "LONDON\n"

    failed = run_papermill("-p", "city", "Paris", "-p", "country", "France")

    assert failed.returncode == 1
    assert "ToolError: tool 'book_hotel' failed: ValueError: no rooms available in Paris" in (
        plain(failed.stderr)
    )

    env["PROGTC_KERNEL_TOOLS"] = ""
    unserved = run_papermill()

    assert unserved.returncode == 1 and "PROGTC_KERNEL_TOOLS" in unserved.stderr


async def test_an_attached_kernel_shows_the_users_lines_only(tmp_path: Path) -> None:
    # A person's kernel, as JupyterLab runs it: ipykernel alone, the host brings the rest.
    km = await plain_kernel(bare_kernel_env(selected_lines()[-1]), tmp=tmp_path)
    client = km.client()
    client.start_channels()
    (tmp_path / "host_tools.py").write_text(HOST_TOOLS)
    shown: list[str] = []

    def collect(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "error":
            shown.append(plain("\n".join(msg["content"]["traceback"])))

    try:
        async with Attach(
            "--existing", km.connection_file, "--tools", str(tmp_path / "host_tools.py")
        ) as host:
            await host.line("serving ")
            for code in [
                "from tools import book\nawait book('Paris')",
                "import tools\ndef total():\n    return tools.add(2)\n\ntotal()",
            ]:
                await client.execute_interactive(code, output_hook=collect, timeout=60)
            assert await host.detach() == 0
    finally:
        client.stop_channels()
        await km.shutdown_kernel(now=True)

    assert [frames(traceback) for traceback in shown] == [
        ["Cell In[1], line 2"],
        ["Cell In[2], line 5", "Cell In[2], line 3"],
    ]
    assert shown[0].endswith("ToolError: tool 'book' failed: ValueError: no rooms in Paris")


# -- progtc-kernel notebook -----------------------------------------------------------


def test_the_notebook_command_runs_the_cells_with_tools_and_parameters(
    newest_kernel_python: str, tmp_path: Path
) -> None:
    out = tmp_path / "tokyo.ipynb"

    done = progtc_kernel(
        "notebook",
        str(TRIP),
        str(out),
        "--tools",
        EXAMPLE_TOOLS,
        "-p",
        "city",
        "Tokyo",
        "-r",
        "country",
        "Japan",
        "-p",
        "nights",
        "3",
        "--python",
        newest_kernel_python,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    cells = nbformat.read(out, as_version=4).cells
    assert "nights = 3\n" in cells[2].source  # -p 3 is a number, as papermill reads it
    assert printed(cells[4]) == "Hotel booked for 3 nights: HTL-TOK-003\n"
    summary = done.stderr.strip().splitlines()[-1]
    assert summary.startswith("ran 5 cells, 5 tool calls in ")
    assert summary.endswith(f"s; wrote {out}")


def test_the_notebook_command_exits_1_and_writes_the_notebook_when_a_cell_fails(
    newest_kernel_python: str, tmp_path: Path
) -> None:
    out = tmp_path / "paris.ipynb"

    done = progtc_kernel(
        "notebook",
        str(TRIP),
        str(out),
        "--tools",
        EXAMPLE_TOOLS,
        "-p",
        "city",
        "Paris",
        "-p",
        "country",
        "France",
        "--python",
        newest_kernel_python,
    )

    assert done.returncode == 1
    assert "cell 4 failed: " in done.stderr
    assert "ToolError: tool 'book_hotel' failed: ValueError: no rooms available in Paris" in (
        done.stderr
    )
    assert done.stderr.strip().splitlines()[-1].startswith("failed: 2 tool calls (1 failed) in ")
    cells = nbformat.read(out, as_version=4).cells
    assert printed(cells[3]) == "Weather in Paris: Sunny, 22°C\n"
    assert errors(cells[4])[0][0] == "ToolError"
    assert cells[5].outputs == []


def test_the_notebook_command_says_what_is_wrong_with_its_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "out.ipynb")
    cases = [
        (["missing.ipynb", out], "notebook not found: missing.ipynb"),
        ([str(TRIP), out, "--tools", "missing.py"], "tools file not found: missing.py"),
        ([str(TRIP), out, "-p", "two words", "1"], "'two words' is not a Python variable name"),
        ([str(TRIP), out, "--python", str(tmp_path / "nothing")], "no Python interpreter at"),
        ([str(TRIP), out, "--cwd", str(tmp_path / "nowhere")], "no such folder"),
        ([str(TRIP), out, "--timeout", "soon"], "'soon' is not a number of seconds"),
    ]
    for args, message in cases:
        assert main(["notebook", *args]) == 2, args
        assert message in capsys.readouterr().err, args
    assert not Path(out).exists()


def test_ctrl_c_interrupts_the_running_cell_and_stops_the_notebook_command(
    newest_kernel_python: str, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    (tmp_path / "marker.py").write_text(
        "from pathlib import Path\n\n"
        "def started(kernel_pid: int) -> None:\n"
        f"    Path({str(started)!r}).write_text(str(kernel_pid))\n"
    )
    nb = notebook(
        "import os, time, tools\ntools.started(os.getpid())\ntime.sleep(120)", "print('never')"
    )
    nbformat.write(nb, tmp_path / "slow.ipynb")
    command = [
        sys.executable,
        "-c",
        "from progtc_kernel.cli import main; raise SystemExit(main())",
        "notebook",
        "slow.ipynb",
        "out.ipynb",
        "--tools",
        "marker.py",
        "--python",
        newest_kernel_python,
    ]
    with subprocess.Popen(
        command,
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    ) as run:
        try:
            deadline = time.monotonic() + 60
            while not started.exists():  # no event to wait on across processes: poll
                assert run.poll() is None and time.monotonic() < deadline, "never started"
                time.sleep(0.05)
            run.send_signal(signal.SIGINT)  # what Ctrl-C sends
            _, stderr = run.communicate(timeout=60)
        finally:
            run.kill()

    assert run.returncode == 130
    assert stderr.rstrip().endswith("progtc-kernel: error: interrupted")
    cells = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells
    assert errors(cells[1])[0][0] == "KeyboardInterrupt"
    assert cells[2].outputs == []
    with pytest.raises(ProcessLookupError):  # the kernel was shut down, not left behind
        os.kill(int(started.read_text()), 0)


def test_a_kernel_with_only_ipykernel_runs_the_notebook(tmp_path: Path) -> None:
    bare = bare_kernel_env(selected_lines()[-1])  # nothing of progtc-kernel there
    out = tmp_path / "tokyo.ipynb"

    done = progtc_kernel(
        "notebook",
        str(TRIP),
        str(out),
        "--tools",
        EXAMPLE_TOOLS,
        "-p",
        "city",
        "Tokyo",
        "-p",
        "country",
        "Japan",
        "--python",
        bare,
    )

    assert done.returncode == 0, done.stderr
    assert printed(nbformat.read(out, as_version=4).cells[4]) == (
        "Hotel booked for 2 nights: HTL-TOK-002\n"
    )


def test_a_timeout_names_the_option_of_the_entry_point_in_use(
    newest_kernel_python: str, tmp_path: Path
) -> None:
    nbformat.write(notebook(SLEEP, "print('never')"), tmp_path / "slow.ipynb")

    def why(path: Path) -> str:
        return next(
            evalue
            for cell in nbformat.read(path, as_version=4).cells
            for ename, evalue in errors(cell)
            if ename == "CellTimeoutError"
        )

    with pytest.raises(papermill.PapermillExecutionError):
        papermill.execute_notebook(
            str(tmp_path / "slow.ipynb"),
            str(tmp_path / "papermill.ipynb"),
            engine_name="progtc",
            tools=TOOLS,
            python=newest_kernel_python,
            kernel_name="python3",  # papermill wants one; python= picks the kernel
            execution_timeout=1,
            progress_bar=False,
        )
    done = progtc_kernel(
        "notebook",
        str(tmp_path / "slow.ipynb"),
        str(tmp_path / "cli.ipynb"),
        "--tools",
        EXAMPLE_TOOLS,
        "--timeout",
        "1",
        "--python",
        newest_kernel_python,
    )

    interrupted = "the cell ran longer than its timeout (1 s) and was interrupted; "
    assert why(tmp_path / "papermill.ipynb") == interrupted + (
        "give it more time with papermill's --execution-timeout (execution_timeout= in "
        "papermill.execute_notebook)"
    )
    assert done.returncode == 1
    assert why(tmp_path / "cli.ipynb") == interrupted + "give it more time with --timeout S"
    assert "give it more time with --timeout S" in done.stderr


def test_parameter_values_are_read_as_papermill_reads_them() -> None:
    assert [
        parameter_value(text)
        for text in [
            "Oslo",
            "3",
            "2.5",
            "True",
            "False",
            "None",
            '["a", 1]',
            '{"k": null}',
            "[not json",
            "0123",
            "1e3",
            "",
        ]
    ] == ["Oslo", 3, 2.5, True, False, None, ["a", 1], {"k": None}, "[not json", 123, 1000.0, ""]


# -- the example notebooks ------------------------------------------------------------

EXAMPLES = [
    "quickstart.ipynb",
    "agent_toolset.ipynb",
    "remote_kernel.ipynb",
    "run_notebook_with_tools.ipynb",
    "trip_report.ipynb",
]


def test_the_example_notebooks_are_kept_without_outputs() -> None:
    assert sorted(path.name for path in NOTEBOOKS.glob("*.ipynb")) == sorted(EXAMPLES)
    for name in EXAMPLES:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        code = [cell for cell in nb.cells if cell.cell_type == "code"]
        assert all(cell.outputs == [] and cell.execution_count is None for cell in code), name


async def run_example(name: str, env: dict[str, str] | None = None) -> NotebookNode:
    """Run an example notebook with plain nbclient, as Jupyter would: in its folder, on
    this interpreter's kernel (where progtc-kernel and its extras are installed)."""
    nb: NotebookNode = nbformat.read(NOTEBOOKS / name, as_version=4)
    km = AsyncKernelManager(kernel_spec_manager=single_spec(sys.executable), kernel_name="progtc")
    client = NotebookClient(
        nb, km=km, timeout=120, resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    try:
        await client.async_execute(env={**os.environ, **(env or {})})
    finally:
        if client.kc is not None:
            client.kc.stop_channels()
        if km.has_kernel:
            await km.shutdown_kernel(now=True)
    return nb


def outputs(nb: NotebookNode) -> list[list[Any]]:
    """Each cell's outputs (none for markdown cells)."""
    return [cell.get("outputs", []) for cell in nb.cells]


async def test_the_quickstart_notebook() -> None:
    nb = await run_example("quickstart.ipynb")

    cells = [printed(cell) for cell in nb.cells]
    assert cells[4] == (
        "Oslo     4 °C  39.2 °F  snow\nRome    19 °C  66.2 °F  sun\n"
        "Lima    17 °C  62.6 °F  cloud\nCairo   27 °C  80.6 °F  sun\n\n"
        "8 tool calls: " + ", ".join(["get_weather"] * 4 + ["to_fahrenheit"] * 4) + "\n"
    )
    table, chart = outputs(nb)[6]
    assert "<tr><td>Cairo</td><td>27</td><td>sun</td></tr>" in table.data["text/html"]
    assert chart.data["image/svg+xml"].count("<rect ") == 4
    assert cells[8] == (
        "→ get_weather {'city': 'Oslo'}\n✓ get_weather \n"
        "  kernel: {'city': 'Oslo', 'celsius': 4, 'sky': 'snow'}\n"
        "→ get_weather {'city': 'Atlantis'}\n"
        "✗ get_weather ValueError: no weather station in Atlantis\n"
        "  kernel: no weather for Atlantis: no weather station in Atlantis\n"
    )


async def test_the_agent_toolset_notebook() -> None:
    nb = await run_example("agent_toolset.ipynb")

    cells = [printed(cell) for cell in nb.cells]
    assert "def search_products(query: str) -> list[dict]:" in cells[4]
    assert json.loads(cells[6]) == {
        "cheapest": [
            {"sku": "KET-5", "price": 25},
            {"sku": "KET-8", "price": 46},
            {"sku": "KET-1", "price": 57},
        ]
    }
    assert cells[7].startswith("the model reads 107 bytes instead of 42,632")
    assert cells[9].startswith("ZeroDivisionError: division by zero (line 4: ")


async def test_the_remote_kernel_notebook(tmp_path: Path) -> None:
    server = await jupyter_server(tmp_path).start()
    try:
        nb = await run_example(
            "remote_kernel.ipynb",
            env={"JUPYTER_SERVER_URL": server.url, "JUPYTER_TOKEN": server.token},
        )
        running = await server.server().kernels()
    finally:
        server.stop()

    cells = [printed(cell) for cell in nb.cells]
    assert "kernelspecs on the server: ['python3'] - default: python3" in cells[2]
    kernel_line, visits_line = cells[4].splitlines()
    assert kernel_line.endswith("- visits: [1, 2, 3]")
    assert visits_line == "visits recorded in this notebook: ['/', '/docs', '/pricing']"
    assert cells[6] == "[1, 2, 3] 4\n"
    assert running == []  # the notebook shut down the kernel it started


async def test_the_notebook_that_runs_a_notebook_with_tools() -> None:
    nb = await run_example("run_notebook_with_tools.ipynb")

    cells = [printed(cell) for cell in nb.cells]
    assert cells[1] == "tools: book_hotel, convert_currency, get_weather, search_database\n"
    assert cells[2] == ("Weather in Tokyo: Cloudy, 18°C\nHotel booked for 2 nights: HTL-TOK-002\n")
    assert "<td>Packing cubes</td><td>3767.45 JPY</td>" in outputs(nb)[2][-1].data["text/html"]
    assert cells[4] == (
        "cell 4 failed: ToolError: tool 'book_hotel' failed: ValueError: no "
        "rooms available in Paris\nits outputs: ['error']\n"
    )
    assert cells[6] == (
        "Weather in New York: Clear, 25°C\nHotel booked for 2 nights: HTL-NEW-002\n"
    )
