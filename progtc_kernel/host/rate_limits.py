"""A Jupyter Server past its iopub rate limits drops the kernel's messages, tool calls
too, until its window has passed: telling its notice, and having the kernel send its
waiting calls again meanwhile."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

_RATE_LIMIT_NOTICES = ("IOPub message rate exceeded.", "IOPub data rate exceeded.")
_WINDOW = re.compile(r"rate_limit_window=([0-9.]+)")


def rate_limit_window(channel: str, msg: dict[str, Any]) -> float | None:
    """If ``msg`` is a Jupyter Server's notice that it drops iopub messages past its
    rate limits (tool calls among them, until its window has passed), that window in
    seconds; else None. The server sends it on stderr, once per episode."""
    content = msg.get("content") or {}
    if (
        channel != "iopub"
        or msg.get("header", {}).get("msg_type") != "stream"
        or content.get("name") != "stderr"
    ):
        return None
    text = str(content.get("text", ""))
    if not text.startswith(_RATE_LIMIT_NOTICES):
        return None
    window = _WINDOW.search(text)
    return float(window.group(1)) if window else 3.0  # Jupyter Server's default


class RateLimitResender:
    """While a server drops messages, asks the kernel to send again every call still
    waiting for a result (``resume``) each time the server's window has passed.

    Args:
        resume: sends ``resume`` to the kernel (each call id is served once).
    """

    def __init__(self, resume: Callable[[], None]) -> None:
        self._resume = resume
        self._limited = False
        self._resender: asyncio.Task[None] | None = None

    def watch(self, channel: str, msg: dict[str, Any]) -> None:
        """The server's notice starts the resending; the end of the cell that printed
        ends it."""
        window = rate_limit_window(channel, msg)
        if window is not None:
            self._limited = True
            if self._resender is None or self._resender.done():
                self._resender = asyncio.ensure_future(self._resend_while_limited(window))
        elif (
            self._limited
            and msg["header"]["msg_type"] == "status"
            and msg["content"].get("execution_state") == "idle"
            and msg["parent_header"].get("msg_type") == "execute_request"
        ):
            self._limited = False  # the server resets its counts when a cell ends

    def stop(self) -> None:
        self._limited = False
        if self._resender is not None:
            self._resender.cancel()

    async def _resend_while_limited(self, window: float) -> None:
        while self._limited:
            await asyncio.sleep(window)  # the server forwards again only after its window
            if self._limited:
                self._resume()
