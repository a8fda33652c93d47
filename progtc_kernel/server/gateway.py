"""The kernel websocket of ``serve --gateway-url``: Jupyter Server's proxy to the
gateway, carrying binary messages too.

Jupyter Server's ``GatewayWebSocketConnection`` relays every message as text: it
decodes what the gateway sends as UTF-8 and writes what the client sends in text
frames. A message with buffers travels in a binary frame (the legacy framing's), and
the tool-call comm's messages have buffers: relayed as text, the gateway closes the
connection (a text frame must be UTF-8), and the client waits for nothing. This
relays each message in the kind of frame it came in.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

from jupyter_server.gateway.connections import GatewayWebSocketConnection
from jupyter_server.gateway.gateway_client import GatewayClient
from tornado import websocket
from tornado.ioloop import IOLoop


class BinaryGatewayConnection(GatewayWebSocketConnection):
    """``GatewayWebSocketConnection`` that keeps binary messages binary, both ways."""

    def handle_outgoing_message(self, incoming_msg: str | bytes, *args: Any) -> None:
        """To the client: in the kind of frame the gateway sent."""
        with contextlib.suppress(websocket.WebSocketClosedError):  # the client is gone
            self.websocket_handler.write_message(
                incoming_msg, binary=isinstance(incoming_msg, bytes)
            )

    def _write_message(self, message: str | bytes) -> None:
        """To the gateway: in the kind of frame the client sent."""
        try:
            if not self.disconnected and self.ws is not None:
                self.ws.write_message(message, binary=isinstance(message, bytes))
        except Exception as exc:
            self.log.error(f"Exception writing message to websocket: {exc}")

    async def _read_messages(self) -> None:
        """Relay what the gateway sends until it closes; then reconnect, as Jupyter
        Server's own does (this is its loop, without the decoding of binary frames)."""
        while self.ws is not None and not self.disconnected:
            try:
                message = await self.ws.read_message()
            except Exception as exc:
                self.log.error(f"Exception reading message from websocket: {exc}")
                message = None
            if message is None:
                if not self.disconnected:
                    self.log.warning(f"Lost connection to Gateway: {self.kernel_id}")
                break
            self.handle_outgoing_message(message)
        gateway = GatewayClient.instance()
        if not self.disconnected and self.retry < gateway.gateway_retry_max:
            jitter = random.randint(10, 100) * 0.01  # (a jitter, as Jupyter Server's)
            interval = min(
                gateway.gateway_retry_interval * (2**self.retry),
                gateway.gateway_retry_interval_max,
            )
            self.retry += 1
            await asyncio.sleep(interval + jitter)  # a back-off before the next attempt
            IOLoop.current().spawn_callback(self.connect)
