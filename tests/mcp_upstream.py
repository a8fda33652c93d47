"""A small upstream MCP server for the tests (the MCP SDK's high-level API).

``crash`` ends the process and ``hang`` waits until ``release`` is called, for a
server that fails or hangs. ``get-sum`` has the name server-everything gives a tool
of its own, for a clash of renamed tools."""

from __future__ import annotations

import os
import threading
from typing import Any

from mcp.server.mcpserver import MCPServer

server = MCPServer("upstream-test", version="1.0")
TABLE = {"alpha": {"id": 1, "tags": ["x"]}, "beta": {"id": 2, "tags": []}}


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def lookup(key: str) -> dict[str, Any]:
    """A row of the table, by key."""
    return TABLE[key]


RELEASED = threading.Event()


@server.tool()
def hang() -> str:
    """Answer once ``release`` is called."""
    RELEASED.wait()
    return "released"


@server.tool()
def release() -> str:
    """Let every ``hang`` call answer."""
    RELEASED.set()
    return "released"


@server.tool(name="get-sum")
def get_sum(a: int, b: int) -> dict[str, Any]:
    """Add two integers (this server's)."""
    return {"sum": a + b, "by": "upstream-test"}


@server.tool()
def crash() -> str:
    """End the server process."""
    os._exit(3)


if __name__ == "__main__":
    server.run()
