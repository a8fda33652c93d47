"""What a model reads before it can use 20, 300 or 1,000 tools.

    python benchmarks/bench_catalog.py [--json]

The tools are real MCP servers' tools: those of @modelcontextprotocol/server-github
(2025.4.8, 26 tools) and @modelcontextprotocol/server-everything (the tests'
version), listed live over MCP (npm installs them into .npm-tools/ on first use;
no token is needed to list them). Larger sets are the same shapes repeated, as if
from several servers, each copy in a namespace of its own (``gh2.create_issue``).

For each size, three ways to give a model the tools, in bytes of JSON it reads:

1. direct: every tool as a tool definition (name, description, input and output
   schema, as an MCP client or pydantic-ai sends them to the model);
2. listed: ``get_execution_environment()`` with every tool's stub
   (``list_tools_above=None``);
3. catalog: ``get_execution_environment()`` with the default ``list_tools_above``
   (30): above it, names and one line within a fixed budget, the rest found with
   ``tools.catalog``.

Goal: direct / catalog >= 50 at 1,000 tools. Bytes are deterministic: one run is
the result (no medians needed). No kernel is started: the environment is text.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from mcp import ClientSession, StdioServerParameters, stdio_client

from progtc_kernel import ProgrammaticToolset, Tool
from progtc_kernel.host.naming import ForeignTool, foreign_tools
from progtc_kernel.integrations.mcp import namespaced

ROOT = Path(__file__).resolve().parent.parent
NPM_TOOLS = ROOT / ".npm-tools"
SERVERS = {
    "github": ("@modelcontextprotocol/server-github@2025.4.8", "mcp-server-github", []),
    "everything": (
        "@modelcontextprotocol/server-everything@2026.8.31",
        "mcp-server-everything",
        ["stdio"],
    ),
}
SIZES = (20, 300, 1000)
GOAL = 50.0


def binary(package: str, program: str) -> Path:
    path = NPM_TOOLS / "node_modules" / ".bin" / program
    if not path.exists():
        npm = shutil.which("npm") or sys.exit("this benchmark lists npm MCP servers: install npm")
        subprocess.run(
            [npm, "install", "--prefix", str(NPM_TOOLS), "--no-audit", "--no-fund", package],
            check=True,
            capture_output=True,
        )
    return path


async def listed_tools() -> list[dict[str, Any]]:
    """The real tools' definitions, as the servers list them (MCP JSON)."""
    definitions: list[dict[str, Any]] = []
    for package, program, args in SERVERS.values():
        parameters = StdioServerParameters(command=str(binary(package, program)), args=args)
        with open("/dev/null", "w") as quiet:
            async with (
                stdio_client(parameters, errlog=quiet) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                for tool in (await session.list_tools()).tools:
                    definitions.append(
                        tool.model_dump(
                            mode="json",
                            by_alias=True,
                            exclude_none=True,
                            include={"name", "description", "input_schema", "output_schema"},
                        )
                    )
    return definitions


def tool_set(real: list[dict[str, Any]], size: int) -> tuple[list[dict[str, Any]], list[Tool]]:
    """``size`` tools: the real ones, then copies in namespaces ``s2``, ``s3``...; as
    direct definitions (namespaced names joined by ``_``) and as host tools."""
    direct: list[dict[str, Any]] = []
    tools: list[Tool] = []
    copy = 1
    while len(direct) < size:
        chunk = real[: size - len(direct)]
        namespace = None if copy == 1 else f"s{copy}"
        for definition in chunk:
            name = definition["name"] if namespace is None else f"{namespace}_{definition['name']}"
            direct.append({**definition, "name": name})
        foreign = [
            ForeignTool(
                d["name"],
                d["inputSchema"],
                _never_called,
                "a benchmark server",
                d.get("description"),
                d.get("outputSchema"),
            )
            for d in chunk
        ]
        built = foreign_tools(foreign)
        tools.extend(built if namespace is None else namespaced(namespace, built))
        copy += 1
    return direct, tools


async def _never_called(arguments: dict[str, Any]) -> Any:
    raise AssertionError("the benchmark calls no tool")


async def environment_bytes(tools: list[Tool], list_tools_above: int | None) -> int:
    toolset = ProgrammaticToolset(tools, list_tools_above=list_tools_above)
    return len(json.dumps(await toolset.get_execution_environment()).encode())


async def measure() -> list[dict[str, Any]]:
    real = await listed_tools()
    rows = []
    for size in SIZES:
        direct, tools = tool_set(real, size)
        direct_bytes = len(json.dumps(direct).encode())
        listed = await environment_bytes(tools, None)
        catalog = await environment_bytes(tools, 30)
        rows.append(
            {
                "tools": size,
                "direct_bytes": direct_bytes,
                "listed_bytes": listed,
                "catalog_bytes": catalog,
                "direct_over_catalog": round(direct_bytes / catalog, 1),
                "listed_over_catalog": round(listed / catalog, 1),
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        rows = asyncio.run(measure())
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(
            "| tools | direct definitions | every stub listed | catalog (default) | "
            "direct / catalog | listed / catalog |"
        )
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['tools']:,} | {r['direct_bytes']:,} B | {r['listed_bytes']:,} B | "
                f"{r['catalog_bytes']:,} B | {r['direct_over_catalog']}x | "
                f"{r['listed_over_catalog']}x |"
            )
    met = rows[-1]["direct_over_catalog"] >= GOAL
    print(f"goal direct/catalog >= {GOAL:g}x at {SIZES[-1]:,} tools: {'met' if met else 'MISSED'}")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
