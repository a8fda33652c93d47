"""The typed protocol against a real kernel and the real type checker: a host
message the kernel cannot use gets an ``error`` reply naming the problem, and the
kernel serves on; mypy rejects a body that does not fit its message type."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from mypy import api as mypy_api

from progtc_kernel import ToolKernel
from progtc_kernel.protocol import PROTOCOL_VERSION

FORGE = (
    "from progtc_kernel.kernel_side import extension\n"
    "ext = extension.current()\n"
    "for kind, body in {messages!r}:\n"
    "    data = {{'v': {version}, 'type': kind}}\n"
    "    content = {{'comm_id': {comm_id!r}, 'data': data}}\n"
    "    ext.on_message({{'content': content, 'buffers': [body]}}, 'test')\n"
    "print(sorted(ext.bad_messages.counts.items()))\n"
    "from tools import get_weather\n"
    "print(await get_weather('Oslo', 'NO'))\n"
)


async def test_a_host_message_the_kernel_cannot_use_is_answered_with_an_error_naming_it(
    kernel: ToolKernel, caplog: pytest.LogCaptureFixture
) -> None:
    messages = [
        ("queued", b'{"ids": "no"}'),
        ("frobnicate", b"{}"),
        ("close", b"{}"),  # no reason: not a close, and the host stays
        ("results", b"[1]"),
        ("register", b'{"tools": [], "tool_timeout": null, "max_in_flight": 1}'),  # not here
    ]
    code = FORGE.format(messages=messages, version=PROTOCOL_VERSION, comm_id=kernel.bridge.comm_id)
    with caplog.at_level(logging.WARNING, "progtc_kernel"):
        result = await kernel.execute(code)
    assert result.ok, result.error
    counted, served = result.stdout.splitlines()
    assert counted == str(
        [
            ("bad 'close' message", 1),
            ("bad 'queued' message", 1),
            ("bad 'register' message", 1),
            ("bad 'results' message", 1),
            ("unknown type", 1),
        ]
    )
    assert served == "Weather in Oslo, NO: Sunny, 22°C"
    # Each came back to the host as an error message, published before the cell ended.
    assert kernel.bridge.bad_messages.counts["refused by the kernel"] == 5
    assert "bad 'queued' message: 'ids' must be a list of integers, not 'no'" in caplog.text


def test_mypy_rejects_a_body_that_does_not_fit_its_message_type(tmp_path: Path) -> None:
    snippet = tmp_path / "senders.py"
    snippet.write_text(
        "from progtc_kernel.protocol import pack\n"
        "pack('queued', {'ids': [1]})\n"
        "pack('results', b'{\"results\":[]}')\n"
        "pack('queued', {'ids': ['x']})\n"
        "pack('close', {'ids': [1]})\n"
        "pack('hello', {'reason': 'x'})\n"
        "pack('frobnicate', {})\n"
    )
    out, _, status = mypy_api.run(
        ["--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"), str(snippet)]
    )
    assert status == 1
    flagged = sorted({line.split(":")[1] for line in out.splitlines() if ": error:" in line})
    assert flagged == ["4", "5", "6", "7"], out
