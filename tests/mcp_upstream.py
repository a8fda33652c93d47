"""A small upstream MCP server for the tests (the MCP SDK's high-level API).

``crash`` ends the process and ``hang`` sleeps, for a server that fails or hangs."""

from __future__ import annotations

import os
import time
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


@server.tool()
def hang(seconds: float) -> str:
    """Sleep, then answer."""
    time.sleep(seconds)
    return "awake"


@server.tool()
def crash() -> str:
    """End the server process."""
    os._exit(3)


if __name__ == "__main__":
    server.run()
