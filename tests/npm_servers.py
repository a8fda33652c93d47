"""MCP servers from npm that the tests start, installed once into ``.npm-tools/``.

``npm install --prefix`` puts them in the checkout (ignored by git), so a fresh
clone needs only Node.js and npm: the first test that wants one installs it."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import one_at_a_time

NPM_TOOLS = Path(__file__).resolve().parent.parent / ".npm-tools"
EVERYTHING = "@modelcontextprotocol/server-everything@2026.8.31"


def everything_command() -> str:
    """The command line that starts server-everything on stdio."""
    return f"{shlex.quote(str(everything_binary()))} stdio"


def everything_binary() -> Path:
    """server-everything's program (give it the argument ``stdio``)."""
    binary = NPM_TOOLS / "node_modules" / ".bin" / "mcp-server-everything"
    with one_at_a_time("npm-tools"):  # (parallel workers install it once)
        _install(binary)
    return binary


def _install(binary: Path) -> None:
    if not binary.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail(
                "the MCP tests start @modelcontextprotocol/server-everything from "
                "npm: install Node.js 18+ and npm"
            )
        subprocess.run(
            [npm, "install", "--prefix", str(NPM_TOOLS), "--no-audit", "--no-fund", EVERYTHING],
            check=True,
            capture_output=True,
            timeout=600,
        )
