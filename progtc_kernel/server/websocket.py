"""The kernel websocket, without Nagle's algorithm.

A kernel answers an execute request with several small messages in a row (status,
input, output, reply). On a socket that holds back small writes until the previous
one is acknowledged, and a client that delays its acknowledgements, each run waits
some 40 ms for nothing. Jupyter Server leaves the option on; this connection turns
it off.
"""

from __future__ import annotations

import asyncio

from jupyter_server.services.kernels.connection.channels import (
    ZMQChannelsWebsocketConnection,
)


class NoDelayConnection(ZMQChannelsWebsocketConnection):
    """Jupyter Server's ZMQ-backed kernel websocket, writing small messages at once."""

    # (jupyter_server types it a coroutine in the base class, a future here: its own mismatch)
    def connect(self) -> asyncio.Future[None] | None:  # type: ignore[override]
        self.websocket_handler.set_nodelay(True)
        return super().connect()
