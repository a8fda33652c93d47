"""Timeouts without a kernel: the ``Timeout`` value, the ``USE_DEFAULT`` sentinel and
how each level resolves it, the old keyword spellings, and the command line's shared
timeout options (``none``: no limit; a bad value is a usage error, exit status 2)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import pickle
from collections.abc import AsyncIterator
from typing import Any

import pytest

from progtc_kernel import (
    USE_DEFAULT,
    JupyterServer,
    ProgrammaticToolset,
    Timeout,
    ToolBridge,
    ToolKernel,
)
from progtc_kernel.cli import _parser, main
from progtc_kernel.cli._common import timeout_from
from progtc_kernel.progtc.client import AsyncProgtcClient
from progtc_kernel.timeouts import (
    DEFAULT_RUN,
    DEFAULT_START,
    DEFAULT_TOOL_CALL,
    MCP_TIMEOUT,
    NOTEBOOK_TIMEOUT,
    UseDefault,
    resolve,
    run_seconds,
)

from .fakes import FakeKernel, FakeTransport

pytestmark = pytest.mark.fast


def get_weather(city: str) -> str:
    return f"Sunny in {city}"


# -- the value object -------------------------------------------------------------------


def test_a_timeout_has_a_default_for_each_wait_and_a_number_is_the_run_timeout() -> None:
    assert Timeout() == Timeout(DEFAULT_RUN, tool_call=DEFAULT_TOOL_CALL, start=DEFAULT_START)
    assert Timeout(5) == Timeout(run=5.0)
    assert Timeout(5).tool_call == DEFAULT_TOOL_CALL
    assert repr(Timeout(5, tool_call=None)) == (
        "Timeout(run=5, tool_call=None, start=60, request=10, approval=None)"
    )


def test_a_timeout_is_frozen_hashable_and_changed_by_replace() -> None:
    limits = Timeout(5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        limits.run = 6  # type: ignore[misc]
    assert len({limits, Timeout(5.0)}) == 1
    assert dataclasses.replace(limits, tool_call=None) == Timeout(5, tool_call=None)


def test_only_the_run_timeout_is_positional() -> None:
    with pytest.raises(TypeError):
        Timeout(5, 10)  # type: ignore[call-arg]


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, True, "5"])
def test_a_timeout_that_is_no_number_of_seconds_is_refused_naming_the_fix(bad: Any) -> None:
    with pytest.raises(
        ValueError, match="give a finite number of seconds above 0, or None for no limit"
    ):
        Timeout(tool_call=bad)


def test_use_default_is_one_named_value_even_through_pickle() -> None:
    assert repr(USE_DEFAULT) == "USE_DEFAULT"
    assert UseDefault() is USE_DEFAULT
    assert pickle.loads(pickle.dumps(USE_DEFAULT)) is USE_DEFAULT


# -- resolving what a caller gave, one level below a default -------------------------------


def test_each_kind_of_timeout_resolves_below_the_level_up() -> None:
    up = Timeout(20, tool_call=3)
    assert resolve(USE_DEFAULT, up) is up
    assert resolve(7, up) == Timeout(7, tool_call=3)  # a number: the run; the rest kept
    assert resolve(None, up) == Timeout(None, tool_call=3)  # None: no limit, never the default
    assert resolve(Timeout(1), up) == Timeout(1)
    assert run_seconds(USE_DEFAULT, 20) == 20
    assert run_seconds(None, 20) is None
    assert run_seconds(Timeout(4), 20) == 4
    with pytest.raises(TypeError, match="give seconds, a Timeout, None"):
        run_seconds("soon", 20)  # type: ignore[arg-type]


@pytest.fixture
async def fake() -> FakeKernel:
    return FakeKernel()


@pytest.fixture
async def kernel(fake: FakeKernel) -> AsyncIterator[ToolKernel]:
    limits = Timeout(0.05, tool_call=None)
    async with ToolKernel([get_weather], kernel=fake, extension="loaded", timeout=limits) as k:
        yield k


async def test_the_kernel_tells_the_kernel_side_its_tool_call_timeout(
    kernel: ToolKernel, fake: FakeKernel
) -> None:
    opened = next(sent for sent in fake.transport.sent if sent.msg_type == "comm_open")
    assert opened.body["tool_timeout"] is None  # Timeout(tool_call=None): no limit


@pytest.mark.parametrize("timeout", [USE_DEFAULT, Timeout(0.05, tool_call=7)])
async def test_a_run_given_use_default_or_a_timeout_takes_that_run_timeout(
    kernel: ToolKernel, fake: FakeKernel, timeout: Any
) -> None:
    interrupted = {"ename": "KeyboardInterrupt", "evalue": "", "traceback": []}
    task = asyncio.ensure_future(kernel.execute("while True: pass", timeout=timeout))
    request = await fake.transport.request("execute_request")
    fake.on_interrupt = lambda: fake.transport.run_cell(
        request, reply={"status": "error", **interrupted}
    )
    result = await task
    assert result.error is not None and result.error.kind == "timeout"  # the kernel's 0.05 s


def test_setting_a_number_on_a_kernel_changes_its_run_timeout_only(fake: FakeKernel) -> None:
    kernel = ToolKernel(kernel=fake, timeout=Timeout(tool_call=3))
    kernel.timeout = 0.5
    assert kernel.timeout == Timeout(0.5, tool_call=3)


def test_the_old_keywords_still_work_and_warn_naming_the_new_spelling(fake: FakeKernel) -> None:
    with pytest.warns(DeprecationWarning) as w:
        kernel = ToolKernel(kernel=fake, tool_timeout=None, startup_timeout=600)
    assert kernel.timeout == Timeout(tool_call=None, start=600)
    assert [str(warning.message) for warning in w] == [
        "tool_timeout= is deprecated: give timeout=Timeout(tool_call=...)",
        "startup_timeout= is deprecated: give timeout=Timeout(start=...)",
    ]
    assert {warning.filename for warning in w} == {__file__}  # points at the caller


# -- the toolset ------------------------------------------------------------------------


def test_the_toolset_runs_scripts_for_60_s_and_gives_its_kernel_the_tool_call_timeout() -> None:
    assert ProgrammaticToolset([get_weather]).kernel.timeout.run == 60
    toolset = ProgrammaticToolset([get_weather], timeout=Timeout(90, tool_call=5))
    assert (toolset.timeout.run, toolset.kernel.timeout.tool_call) == (90, 5)


def test_a_toolset_refuses_a_tool_call_timeout_that_a_kernel_given_would_not_use(
    fake: FakeKernel,
) -> None:
    kernel = ToolKernel(kernel=fake)
    with pytest.raises(ValueError, match=r"set them on the kernel, ToolKernel\(\.\.\., timeout="):
        ProgrammaticToolset(kernel=kernel, timeout=Timeout(60, tool_call=5))
    assert ProgrammaticToolset(kernel=kernel, timeout=90).timeout.run == 90


# -- Jupyter Server and the progtc client ------------------------------------------------


def test_a_server_takes_none_for_no_limit_and_refuses_zero() -> None:
    assert JupyterServer("http://127.0.0.1:1/", request_timeout=None).request_timeout is None
    with pytest.raises(ValueError, match="request_timeout=0 is not a timeout"):
        JupyterServer("http://127.0.0.1:1/", request_timeout=0)
    with pytest.raises(ValueError, match="request_timeout=-1 is not a timeout"):
        AsyncProgtcClient("http://127.0.0.1:1/", request_timeout=-1)


async def test_the_progtc_client_takes_the_run_timeout_once() -> None:
    client = AsyncProgtcClient("http://127.0.0.1:1/")
    with pytest.raises(TypeError, match="timeout= or code_execution_timeout="):
        await client.execute_code("1", timeout=5, code_execution_timeout=5)
    with pytest.raises(ValueError, match="tool_call_timeout=0 is not a timeout"):
        await client.execute_code("1", tool_call_timeout=0)


# -- the command line ---------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    return _parser().parse_args(list(argv))


def test_every_command_with_timeouts_has_the_shared_options_with_its_defaults() -> None:
    assert timeout_from(parse("run", "x.py")) == Timeout()
    assert timeout_from(parse("mcp"), MCP_TIMEOUT) == Timeout(60, tool_call=60)
    assert timeout_from(parse("notebook", "in.ipynb", "out.ipynb"), NOTEBOOK_TIMEOUT).run is None
    serve = parse("serve")
    assert (serve.run_timeout, serve.tool_call_timeout, serve.start_timeout) == (30, 10, 60)
    attach = parse("attach", "--existing", "k.json", "--start-timeout", "5")
    assert (attach.start_timeout, attach.tool_call_timeout) == (5, 10)


def test_none_means_no_limit_on_the_command_line() -> None:
    args = parse("run", "x.py", "--timeout", "none", "--tool-call-timeout", "NONE")
    assert timeout_from(args) == Timeout(None, tool_call=None)


def test_serve_takes_progtcs_spelling_of_the_execution_timeout() -> None:
    assert parse("serve", "--code-execution-timeout", "5").run_timeout == 5
    assert parse("serve", "--timeout", "5").run_timeout == 5


@pytest.mark.parametrize(
    ("argv", "new", "value"),
    [
        (["run", "x.py", "--tool-timeout", "3"], "--tool-call-timeout", 3.0),
        (["notebook", "in.ipynb", "out.ipynb", "--tool-timeout", "3"], "--tool-call-timeout", 3.0),
        (["mcp", "--upstream-timeout", "3"], "--tool-call-timeout", 3.0),
        (["attach", "--existing", "k.json", "--timeout", "3"], "--start-timeout", 3.0),
    ],
)
def test_old_option_names_still_work_and_warn(
    argv: list[str], new: str, value: float, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse(*argv)
    dest = "start_timeout" if new == "--start-timeout" else "tool_call_timeout"
    assert getattr(args, dest) == value
    assert f"{argv[-2]} is deprecated: use {new}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "'0': give a number of seconds above 0, or none for no limit"),
        ("-2", "'-2': give a number of seconds above 0, or none for no limit"),
        ("inf", "'inf': give a number of seconds above 0, or none for no limit"),
        ("soon", "'soon' is not a number of seconds: give seconds above 0, or none"),
    ],
)
@pytest.mark.parametrize(
    "command", [["run", "x.py"], ["serve"], ["mcp"], ["notebook", "i.ipynb", "o.ipynb"]]
)
def test_a_bad_timeout_is_a_usage_error_that_names_the_fix(
    command: list[str], value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*command, "--tool-call-timeout", value]) == 2
    assert message in " ".join(capsys.readouterr().err.split())


# -- notebooks ----------------------------------------------------------------------------


def test_the_notebook_client_takes_tool_call_timeout_and_warns_for_tool_timeout() -> None:
    nbformat = pytest.importorskip("nbformat")
    from progtc_kernel.integrations.nbclient import ToolNotebookClient

    notebook = nbformat.v4.new_notebook()
    assert ToolNotebookClient(notebook, tool_call_timeout=None).tool_call_timeout is None
    with pytest.warns(
        DeprecationWarning, match="tool_timeout= is deprecated: give tool_call_timeout="
    ):
        client = ToolNotebookClient(notebook, tool_timeout=3)
    assert client.tool_call_timeout == 3


def test_nbclient_gets_whole_seconds_and_a_start_with_no_limit_as_a_year() -> None:
    pytest.importorskip("nbclient")
    from progtc_kernel.integrations.nbclient import nbclient_timeouts

    assert nbclient_timeouts(Timeout(1.2, start=30)) == {"timeout": 2, "startup_timeout": 30}
    assert nbclient_timeouts(Timeout(None, start=None)) == {
        "timeout": None,
        "startup_timeout": 365 * 24 * 3600,
    }


def test_a_tool_bridge_takes_its_tool_call_timeout_by_its_name_and_warns_for_the_old() -> None:
    assert ToolBridge(FakeTransport(), tool_call_timeout=None).tool_call_timeout is None
    with pytest.warns(DeprecationWarning, match="tool_timeout= is deprecated"):
        bridge = ToolBridge(FakeTransport(), tool_timeout=5)
    assert bridge.tool_call_timeout == 5
