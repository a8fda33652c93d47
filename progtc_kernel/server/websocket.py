"""The kernel websocket, without Nagle's algorithm.

A kernel answers an execute request with several small messages in a row (status,
input, output, reply). On a socket that holds back small writes until the previous
one is acknowledged, and a client that delays its acknowledgements, each run waits
some 40 ms for nothing. Jupyter Server leaves the option on; this connection turns
it off.
"""

from __future__ import annotations

from typing import Any

from jupyter_server.services.kernels.connection.channels import (
    ZMQChannelsWebsocketConnection,
)


class NoDelayConnection(ZMQChannelsWebsocketConnection):  # type: ignore[misc]
    """Jupyter Server's ZMQ-backed kernel websocket, writing small messages at once."""

    async def connect(self) -> Any:
        self.websocket_handler.set_nodelay(True)
        return await super().connect()
