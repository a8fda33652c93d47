"""The kernel websocket of ``progtc-kernel serve``: checked frames, without Nagle.

Checked frames: Jupyter Server's decoders trust the counts at the start of a binary
frame. The v1 protocol's first 8 bytes say how many offsets follow, and its decoder
builds a list that long before looking at the frame; the legacy protocol's first 4
bytes say how many buffers, and its decoder builds a struct format that long. One
16-byte frame saying 2**63 took a server to gigabytes and made it unresponsive. Here
every binary frame is checked before it is decoded: counts that fit in the frame and
stay below ``MAX_PARTS``, offsets inside it, in order. A bad frame closes that
websocket (code 1007, saying why); the server and its other clients go on.
``MAX_MESSAGE_BYTES`` caps a frame's size (``serve`` gives it to tornado, which closes
the socket with 1009 for a larger one).

Without Nagle: a kernel answers an execute request with several small messages in a
row (status, input, output, reply). On a socket that holds back small writes until
the previous one is acknowledged, and a client that delays its acknowledgements,
each run waits some 40 ms for nothing. Jupyter Server leaves the option on.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import struct
from typing import Any

from jupyter_server.services.kernels.connection.channels import (
    ZMQChannelsWebsocketConnection,
)

log = logging.getLogger("progtc_kernel.server")

V1 = "v1.kernel.websocket.jupyter.org"
# A message has a channel, header, parent header, metadata and content, then its
# binary buffers (widgets send a few).
MAX_PARTS = 1024
MAX_MESSAGE_BYTES = 10 * 2**20  # tornado's default, stated: one batch of tool results
INVALID_FRAME = 1007  # websocket close code: the data does not fit its type


def v1_frame_problem(frame: bytes) -> str | None:
    """Why a v1 binary frame cannot be decoded safely, or None. Layout: an 8-byte
    little-endian count n, n 8-byte offsets; n - 1 parts lie between them."""
    if len(frame) < 8:
        return f"a v1 frame of {len(frame)} bytes has no offset count"
    count = int.from_bytes(frame[:8], "little")
    if not 6 <= count <= MAX_PARTS + 6 or 8 * (count + 1) > len(frame):
        return (
            f"a v1 frame of {len(frame)} bytes says it has {count} offsets (a message "
            f"has 6 to {MAX_PARTS + 6}, and they must fit in the frame)"
        )
    offsets = [int.from_bytes(frame[8 * i : 8 * (i + 1)], "little") for i in range(1, count + 1)]
    return _offsets_problem(offsets, len(frame))


def legacy_frame_problem(frame: bytes) -> str | None:
    """Why a legacy binary frame cannot be decoded safely, or None. Layout: a 4-byte
    big-endian buffer count n, n 4-byte offsets, then the buffers."""
    if len(frame) < 4:
        return f"a binary frame of {len(frame)} bytes has no buffer count"
    (count,) = struct.unpack("!i", frame[:4])
    if not 1 <= count <= MAX_PARTS or 4 * (count + 1) > len(frame):
        return (
            f"a binary frame of {len(frame)} bytes says it has {count} buffers (a "
            f"message has 1 to {MAX_PARTS}, and their offsets must fit in the frame)"
        )
    offsets = list(struct.unpack(f"!{count}I", frame[4 : 4 * (count + 1)]))
    return _offsets_problem(offsets, len(frame))


def _offsets_problem(offsets: list[int], size: int) -> str | None:
    if any(b < a for a, b in itertools.pairwise(offsets)) or offsets[-1] > size:
        return f"its offsets {offsets[:8]}... are not in order within its {size} bytes"
    return None


class CheckedConnection(ZMQChannelsWebsocketConnection):
    """Jupyter Server's ZMQ-backed kernel websocket: binary frames checked before they
    are decoded, small messages written at once."""

    # (jupyter_server types it a coroutine in the base class, a future here: its own mismatch)
    def connect(self) -> asyncio.Future[None] | None:  # type: ignore[override]
        self.websocket_handler.set_nodelay(True)
        return super().connect()

    def handle_incoming_message(self, incoming_msg: Any) -> None:
        if isinstance(incoming_msg, bytes):
            check = v1_frame_problem if self.subprotocol == V1 else legacy_frame_problem
            problem = check(incoming_msg)
            if problem is not None:
                log.warning("kernel websocket closed: %s", problem)
                self.websocket_handler.close(INVALID_FRAME, f"refused: {problem}"[:120])
                return
        super().handle_incoming_message(incoming_msg)
