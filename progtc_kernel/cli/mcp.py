"""``progtc-kernel mcp``: the two ProgrammaticToolset tools as an MCP server on stdio."""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import TYPE_CHECKING, Any

from ..exceptions import ToolDefinitionError, UpstreamStartError
from ..kernel_side.catalog import LIST_TOOLS_ABOVE
from ..timeouts import MCP_TIMEOUT
from ._common import UsageError, add_timeout_options, load_tools, timeout_from

if TYPE_CHECKING:
    from ._common import Subcommands


def add_parser(commands: Subcommands) -> None:
    mcp = commands.add_parser(
        "mcp",
        help="serve get_execution_environment and execute_tool_script over MCP (stdio)",
        description="An MCP server on stdin/stdout with the two ProgrammaticToolset tools: a "
        "model writes one script that calls the --tools functions and the tools of the "
        "--upstream MCP servers (a tool named 'get-sum' there is get_sum in scripts). "
        "Needs the 'mcp' extra.",
    )
    mcp.add_argument(
        "--tools",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE",
        help="a module name or .py file with host tools (repeat to combine)",
    )
    mcp.add_argument(
        "--upstream",
        action="append",
        default=[],
        metavar="[NAME=]'COMMAND ARGS'",
        help="an MCP server to start; its tools become tools scripts can call "
        "(repeatable); with NAME=, in the namespace tools.NAME (from tools.NAME import "
        "x), so that two servers may offer tools of the same name",
    )
    mcp.add_argument(
        "--list-tools-above",
        type=_tool_count,
        default=LIST_TOOLS_ABOVE,
        metavar="N",
        help="with more than N tools, the environment lists them by name and one line, "
        "and scripts find them with tools.catalog.search/describe (default: "
        f"{LIST_TOOLS_ABOVE}; 0: always; 'never': list every stub)",
    )
    mcp.add_argument(
        "--approve",
        action="append",
        default=[],
        metavar="TOOL",
        help="ask the MCP client's user (by elicitation) before each call of TOOL runs, "
        "a host or upstream tool (repeatable; a --tools module may also set "
        "REQUIRES_APPROVAL = {names} or a function (tool, arguments) -> bool)",
    )
    mcp.add_argument(
        "--module",
        action="append",
        dest="modules",
        metavar="NAME",
        help="a module scripts may import (repeat; default: json, math, re, "
        "datetime, collections, itertools, functools, statistics, asyncio...)",
    )
    mcp.add_argument(
        "--max-tool-calls",
        type=int,
        metavar="N",
        help="tool calls one script may make (default: no limit)",
    )
    add_timeout_options(
        mcp,
        MCP_TIMEOUT,
        kinds=("run", "tool_call", "start", "request", "approval"),
        helps={
            "run": "stop a script after S seconds",
            "tool_call": "fail a tool call after S seconds, a --tools function's or an "
            "--upstream server's alike: the one timeout of a call",
            "request": "fail an HTTP request to --kernel-url after S seconds",
        },
        deprecated={"tool_call": ["--tool-timeout", "--upstream-timeout"]},
    )
    mcp.add_argument(
        "--max-result-chars",
        type=_positive_int,
        metavar="N",
        help="cut the JSON a script returns after N characters, saying so (default: 200,000)",
    )
    mcp.add_argument(
        "--max-output-bytes",
        type=_byte_count,
        metavar="N",
        help="leave out an image or other output a script displays past N bytes, "
        "saying so (default: 1,000,000)",
    )
    mcp.add_argument(
        "--max-total-output-bytes",
        type=_byte_count,
        metavar="N",
        help="leave out what a script displays past N bytes in all, saying so (default: 3,000,000)",
    )
    mcp.add_argument(
        "--python", metavar="PATH", help="the local kernel's interpreter (default: this one)"
    )
    mcp.add_argument(
        "--server",
        "--kernel-url",  # its first spelling; --server is every command's
        dest="server",
        metavar="URL",
        help="run scripts on a kernel of this Jupyter Server or gateway",
    )
    mcp.add_argument(
        "--token",
        metavar="T",
        default=os.environ.get("JUPYTER_TOKEN"),
        help="the server's token (default: $JUPYTER_TOKEN)",
    )
    mcp.add_argument("--kernel-name", metavar="NAME", help="the kernelspec to start")
    mcp.add_argument(
        "--check-types",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="type-check each script against the tools' stubs before it runs (with ty, "
        "the 'typecheck' extra; default: on when ty is installed)",
    )
    mcp.set_defaults(handler=command)


def _byte_count(text: str) -> int:
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a whole number of bytes, 1 or more"
        ) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of characters, 1 or more")
    return value


def _tool_count(text: str) -> int | None:
    if text == "never":
        return None
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of tools, 0 or more, or never")
    return value


def command(args: argparse.Namespace) -> int:
    try:
        from ..integrations.mcp import serve
    except ImportError as exc:  # names the pip install that fixes it
        raise UsageError(str(exc)) from None
    if args.server and args.python:
        raise UsageError(
            "--python picks a local interpreter; with --server the server "
            "runs the kernel: pick its kernelspec with --kernel-name"
        )
    from ..host.loading import approval_policy

    tools = load_tools(args.tools)
    try:
        declared = approval_policy(args.tools)
    except ToolDefinitionError as exc:
        raise UsageError(str(exc)) from None
    try:
        asyncio.run(
            serve(
                tools,
                upstreams=args.upstream,
                approve=args.approve,
                requires_approval=declared,
                **toolset_options(args),
            )
        )
    except (ValueError, ToolDefinitionError, UpstreamStartError) as exc:
        # Bad options, an --approve name that is no tool, an upstream that cannot start.
        raise UsageError(str(exc)) from None
    return 0


def toolset_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of ``progtc_kernel.integrations.mcp.toolset_for`` the command gives."""
    return {
        "timeout": timeout_from(args, MCP_TIMEOUT),
        "python": args.python,
        "server": args.server,
        "token": args.token,
        "kernel_name": args.kernel_name,
        "supported_modules": args.modules,
        "max_tool_calls": args.max_tool_calls,
        "check_types": args.check_types,
        "list_tools_above": args.list_tools_above,
        **({"max_result_chars": args.max_result_chars} if args.max_result_chars else {}),
        **_given(args, "max_output_bytes", "max_total_output_bytes"),
    }


def _given(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The options among ``names`` given on the command line (the others keep their
    defaults)."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}
