"""The ``progtc-kernel`` command, run the way a user runs it, against real kernels."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from progtc_kernel import ToolBridge, __version__, load_tools
from progtc_kernel.cli import main
from progtc_kernel.cli.run import describe_output

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def progtc_kernel(
    *args: str, stdin: str | None = None, cwd: Path = ROOT, python: str = sys.executable
) -> subprocess.CompletedProcess[str]:
    """``progtc-kernel ARGS...`` in a subprocess, without colours."""
    command = [python, "-c", "from progtc_kernel.cli import main; raise SystemExit(main())"]
    env = {**os.environ, "NO_COLOR": "1", "PYTHONIOENCODING": "utf-8"}
    return subprocess.run(
        [*command, *args],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=cwd,
        env=env,
        timeout=120,
    )


def write(path: Path, code: str) -> Path:
    path.write_text(textwrap.dedent(code), encoding="utf-8")
    return path


# -- run ----------------------------------------------------------------------------


def test_the_example_agent_runs(kernel_python: str) -> None:
    done = progtc_kernel(
        "run", "examples/agent.py", "--tools", "examples/tools.py", "--python", kernel_python
    )

    assert done.returncode == 0, done.stderr
    # stdout holds what the code printed and displayed, nothing else.
    assert done.stdout.startswith("London  Light rain, 14°C\nParis   Sunny, 22°C\n")
    assert "Noise-cancelling headphones  € 229.08" in done.stdout  # a blocking call in a def
    assert "No hotel in Paris: no rooms available in Paris" in done.stdout  # except ToolError
    assert "| Paris | Sunny, 22°C | no rooms left |" in done.stdout  # display(Markdown(...))
    assert "→" not in done.stdout and "WARNING" not in done.stderr
    # stderr traces the tool calls as they happen.
    trace = done.stderr.splitlines()
    assert "→ get_weather(city='London', country='UK')" in trace
    assert "→ convert_currency(amount=249.0, from_currency='USD', to_currency='EUR')" in trace
    assert "✗ book_hotel ValueError: no rooms available in Paris" in trace
    assert sum(line.startswith("✓ get_weather ") for line in trace) == 3
    assert trace[-1].startswith("done in ") and trace[-1].endswith("10 tool calls (1 failed)")


def test_a_failing_script_exits_1_with_its_traceback(kernel_python: str, tmp_path: Path) -> None:
    script = write(
        tmp_path / "failing.py",
        """\
        from tools import get_weather

        print("checking the weather")
        forecast = await get_weather("Paris", "France")
        temperature = int(forecast.split(", ")[1])
    """,
    )

    done = progtc_kernel(
        "run", str(script), "--tools", "examples/tools.py", "--python", kernel_python
    )

    assert done.returncode == 1
    assert done.stdout == "checking the weather\n"
    assert "----> 5 temperature = int(forecast.split" in done.stderr
    assert "ValueError: invalid literal for int() with base 10: '22°C'" in done.stderr
    assert done.stderr.rstrip().splitlines()[-1].startswith("failed after ")


def test_code_from_stdin_and_an_unhandled_tool_error(kernel_python: str) -> None:
    code = 'from tools import book_hotel\nprint(await book_hotel("Paris"))\n'

    done = progtc_kernel(
        "run", "-", "--tools", "examples/tools.py", "--python", kernel_python, stdin=code
    )

    assert done.returncode == 1
    assert "✗ book_hotel ValueError: no rooms available in Paris" in done.stderr
    assert (
        "ToolError: tool 'book_hotel' failed: ValueError: no rooms available in Paris"
        in done.stderr
    )


def test_a_script_that_runs_too_long_is_interrupted(kernel_python: str) -> None:
    done = progtc_kernel(
        "run",
        "-",
        "--timeout",
        "1",
        "--python",
        kernel_python,
        stdin="import time\nprint('working', flush=True)\ntime.sleep(60)\n",
    )

    assert done.returncode == 1
    assert done.stdout == "working\n"
    assert "timed out after 1 s" in done.stderr and "--timeout" in done.stderr


def test_tools_files_serve_the_functions_they_define(kernel_python: str, tmp_path: Path) -> None:
    # Named tools.py on purpose: it must not be confused with the kernel's `tools`.
    write(
        tmp_path / "tools.py",
        """\
        from os.path import basename  # imported: not a tool

        def shout(text: str) -> str:
            \"\"\"Upper-case text.\"\"\"
            return text.upper() + "!"

        def _helper() -> None:  # private: not a tool
            pass
    """,
    )
    write(
        tmp_path / "script.py",
        """\
        import tools
        print(sorted(name for name in dir(tools)))
        print(tools.shout("hello"))
    """,
    )

    done = progtc_kernel(
        "run", "script.py", "--tools", "tools.py", "--python", kernel_python, cwd=tmp_path
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "['HostDisconnectedError', 'ToolArgumentError', 'ToolDeniedError', 'ToolError', "
        "'ToolTimeoutError', 'catalog', 'shout']\nHELLO!\n"
    )


@pytest.mark.fast
def test_tools_lists_choose_what_a_file_serves(tmp_path: Path) -> None:
    chosen = write(
        tmp_path / "chosen.py",
        """\
        def a() -> int:
            return 1

        def b() -> int:
            return 2

        TOOLS = {"first": a}
    """,
    )
    exported = write(
        tmp_path / "exported.py",
        """\
        __all__ = ["c", "VERSION"]
        VERSION = "1.0"  # not callable: skipped

        def c() -> int:
            return 3

        def d() -> int:
            return 4
    """,
    )

    assert sorted(load_tools([str(chosen), str(exported)])) == ["c", "first"]
    assert sorted(load_tools([str(EXAMPLES / "tools.py")])) == [
        "book_hotel",
        "convert_currency",
        "get_weather",
        "search_database",
    ]


# -- usage errors -------------------------------------------------------------------


@pytest.mark.fast
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "missing.py", "--tools", "examples/tools.py"], "script not found: missing.py"),
        (
            ["run", "examples/agent.py", "--tools", "no/such/tools.py"],
            "tools file not found: no/such/tools.py",
        ),
        (
            ["run", "examples/agent.py", "--tools", "no_such_module"],
            "no module named 'no_such_module': give a .py file path",
        ),
        (
            ["run", "examples/agent.py", "--tools", "examples/tools.py", "--python", "/no/python"],
            "could not start a kernel with --python /no/python: no Python interpreter at "
            "'/no/python'",
        ),
        (["run", "examples/agent.py", "--timeout", "soon"], "'soon' is not a number of seconds"),
        (["run"], "the following arguments are required: SCRIPT"),
        (["mcp", "--max-result-chars", "0"], "'0': give a whole number of characters, 1 or more"),
        (
            ["install", "--prefix", str(ROOT / "pyproject.toml")],
            "cannot write the kernelspec ([Errno 20] Not a directory",
        ),
    ],
)
def test_usage_errors_exit_2_and_say_what_to_do(
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("NO_COLOR", "1")

    assert main(args) == 2

    out, err = capsys.readouterr()
    assert out == ""
    assert message in " ".join(err.split())


@pytest.mark.fast
def test_a_tools_file_without_tools_is_a_usage_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    empty = write(tmp_path / "empty.py", "from json import dumps, loads\n\ndef _private(): ...\n")
    broken = write(tmp_path / "broken.py", "import json\nraise RuntimeError('no config')\n")

    assert main(["run", str(ROOT / "examples/agent.py"), "--tools", str(empty)]) == 2
    assert (
        "defines no tools: define public functions in it, or list the tools to serve in "
        "TOOLS" in " ".join(capsys.readouterr().err.split())
    )
    assert main(["run", str(ROOT / "examples/agent.py"), "--tools", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "importing" in err and "RuntimeError: no config" in err and "line 2" in err


@pytest.mark.parametrize(
    ("upstream", "message"),
    [
        (
            f"{sys.executable} -c pass",
            "-c pass': it exited before its handshake (its own output, above, says why)",
        ),
        (
            "no-such-program-here",
            "could not start the MCP server 'no-such-program-here': [Errno 2]",
        ),
    ],
)
def test_an_upstream_that_cannot_start_is_a_usage_error(upstream: str, message: str) -> None:
    done = progtc_kernel("mcp", "--upstream", upstream, stdin="")
    assert done.returncode == 2
    assert message in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr


def command_with_tools(command: str, tools: Path, tmp_path: Path) -> list[str]:
    """``command`` with ``--tools tools`` and whatever else it needs to get that far."""
    notebook = tmp_path / "in.ipynb"
    notebook.write_text(
        json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    )
    rest = {
        "run": [str(ROOT / "examples/agent.py")],
        "mcp": [],
        "attach": [],
        "notebook": [str(notebook), str(tmp_path / "out.ipynb")],
    }[command]
    return [command, *rest, "--tools", str(tools)]


@pytest.mark.fast
@pytest.mark.parametrize("command", ["run", "mcp", "notebook", "attach"])
def test_a_tools_module_that_exits_or_fails_on_import_is_a_usage_error(
    command: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    exits = write(tmp_path / "exits.py", "import json\nraise SystemExit(7)\n")
    fails = write(tmp_path / "fails.py", "def tool(): ...\n{}['missing']\n")

    assert main(command_with_tools(command, exits, tmp_path)) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert (
        f"a --tools module raised SystemExit(7) while it was imported ({exits}, line 2): "
        "a tools module must not exit when imported"
    ) in err
    assert main(command_with_tools(command, fails, tmp_path)) == 2
    err = capsys.readouterr().err
    assert f"importing {fails} failed" in err and "KeyError: 'missing'" in err


@pytest.mark.fast
@pytest.mark.parametrize(
    "content",
    ['{"a": 1}', '{"cells": "x", "nbformat": 4, "nbformat_minor": 5, "metadata": {}}', "[1, 2]"],
)
def test_json_that_is_not_a_notebook_is_a_usage_error(
    content: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = tmp_path / "data.ipynb"
    source.write_text(content)

    assert main(["notebook", str(source), str(tmp_path / "out.ipynb")]) == 2

    err = " ".join(capsys.readouterr().err.split())
    assert f"cannot read {source} as a notebook (" in err
    assert "give a Jupyter notebook (.ipynb, nbformat 4)" in err
    assert "Traceback" not in err


@pytest.mark.fast
def test_every_command_takes_log_level(capsys: pytest.CaptureFixture[str]) -> None:
    from progtc_kernel.cli import COMMANDS

    for command in COMMANDS:
        name = command.__name__.rsplit(".", 1)[-1]
        assert main([name, "--help"]) == 0
        assert "--log-level {debug,info,warning,error,critical}" in capsys.readouterr().out


def test_log_level_shows_the_records_it_asks_for(kernel_python: str) -> None:
    quiet = progtc_kernel("run", "-", "--python", kernel_python, stdin="print(1)\n")
    debug = progtc_kernel(
        "run", "-", "--python", kernel_python, "--log-level", "DEBUG", stdin="print(1)\n"
    )
    assert quiet.returncode == debug.returncode == 0, debug.stderr
    assert "DEBUG" not in quiet.stderr and "WARNING" not in quiet.stderr
    assert " asyncio DEBUG: Using selector" in debug.stderr


@pytest.mark.fast
@pytest.mark.parametrize(
    ("command", "module", "extra", "needs"),
    [
        ("mcp", "mcp", "mcp", "progtc-kernel's MCP server needs the MCP SDK"),
        ("serve", "jupyter_server", "server", "the server needs Jupyter Server"),
    ],
)
def test_a_missing_extra_names_the_pip_install_that_fixes_it(
    command: str, module: str, extra: str, needs: str
) -> None:
    from progtc_kernel._install import install_hint

    done = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys; sys.modules[{module!r}] = None\n"
            f"from progtc_kernel.cli import main; raise SystemExit(main([{command!r}]))",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert done.returncode == 2
    said = " ".join(done.stderr.split())
    assert needs in said
    assert f"install the {extra!r} extra: {install_hint(extra)}" in said


@pytest.mark.fast
def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"progtc-kernel {__version__}\n"  # the wheel's too


# -- display outputs ----------------------------------------------------------------


@pytest.mark.fast
def test_display_outputs_become_text_or_a_one_line_note() -> None:
    assert describe_output({"text/plain": "42"}) == ("42", None)
    assert describe_output(
        {"text/plain": "<IPython.core.display.Markdown object>", "text/markdown": "# Hi"}
    ) == ("# Hi", None)
    assert describe_output(
        {"text/plain": "<IPython.core.display.HTML object>", "text/html": "<b>hi</b>"}
    ) == (None, "[text/html, 9 B]")
    png = base64.b64encode(bytes(18_000)).decode()
    assert describe_output(
        {"text/plain": "<Figure size 640x480 with 1 Axes>", "image/png": png}
    ) == (None, "[image/png, 18.0 kB]")


# -- install ------------------------------------------------------------------------


async def test_an_installed_kernelspec_serves_tools(kernel_python: str, tmp_path: Path) -> None:
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    # Installed from the kernel's environment, so the spec runs that interpreter.
    done = progtc_kernel("install", "--prefix", str(tmp_path), python=kernel_python)

    assert done.returncode == 0, done.stderr
    kernels = tmp_path / "share" / "jupyter" / "kernels"
    assert str(kernels / "progtc") in done.stdout
    spec = json.loads((kernels / "progtc" / "kernel.json").read_text())
    assert spec["display_name"] == "Python 3 (progtc)" and spec["language"] == "python"
    assert Path(spec["argv"][0]).resolve() == Path(kernel_python).resolve()
    assert spec["argv"][1:] == [
        "-m",
        "ipykernel_launcher",
        "-f",
        "{connection_file}",
        "--ext=progtc_kernel",
    ]

    async def get_weather(city: str, country: str) -> str:
        return f"Sunny in {city}, {country}"

    km = AsyncKernelManager(
        kernel_name="progtc", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)])
    )
    await km.start_kernel()
    client = km.client()
    try:
        client.start_channels()
        await client.wait_for_ready(timeout=60)
        # extension="loaded": the kernelspec's --ext=progtc_kernel already loaded it.
        async with ToolBridge(km, tools=[get_weather], extension="loaded"):
            printed: list[str] = []

            def collect(msg: dict[str, object]) -> None:
                if msg["header"]["msg_type"] == "stream":  # type: ignore[index]
                    printed.append(msg["content"]["text"])  # type: ignore[index]

            reply = await client.execute_interactive(
                "from tools import get_weather\nprint(await get_weather('Paris', 'France'))",
                output_hook=collect,
                timeout=60,
            )
        assert reply["content"]["status"] == "ok"
        assert "".join(printed) == "Sunny in Paris, France\n"
    finally:
        client.stop_channels()
        await km.shutdown_kernel(now=True)
