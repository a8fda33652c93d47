"""The kernel websocket's two framings of a Jupyter message, as Jupyter Server reads
and writes them: ``v1.kernel.websocket.jupyter.org`` (binary, with offsets) and the
legacy JSON framing (binary only when the message has buffers)."""

from __future__ import annotations

import json
import struct
from typing import Any


def v1_frame(channel: str, parts: list[bytes]) -> bytes:
    """``v1.kernel.websocket.jupyter.org``: u64 count, u64 offsets, channel, parts."""
    name = channel.encode()
    offsets = [8 * (len(parts) + 3), 8 * (len(parts) + 3) + len(name)]
    for part in parts:
        offsets.append(offsets[-1] + len(part))
    return b"".join([struct.pack(f"<{len(offsets) + 1}Q", len(offsets), *offsets), name, *parts])


def legacy_frame(channel: str, parts: list[bytes], buffers: list[bytes]) -> tuple[bytes, bool]:
    """The legacy framing: JSON with a ``channel`` key; binary (u32 big-endian count
    and offsets, then the JSON and the buffers) when there are buffers."""
    header, parent, metadata, content = parts
    text = b'{"channel":%s,"header":%s,"parent_header":%s,"metadata":%s,"content":%s}' % (
        json.dumps(channel).encode(),
        header,
        parent,
        metadata,
        content,
    )
    if not buffers:
        return text, False
    pieces = [text, *buffers]
    offsets = [4 * (len(pieces) + 1)]
    for piece in pieces[:-1]:
        offsets.append(offsets[-1] + len(piece))
    return b"".join([struct.pack(f"!{len(pieces) + 1}I", len(pieces), *offsets), *pieces]), True


def decode_frame(frame: str | bytes, legacy: bool) -> tuple[str, dict[str, Any]]:
    if isinstance(frame, str):  # legacy, no buffers
        msg = json.loads(frame)
        msg.setdefault("buffers", [])
        return str(msg.pop("channel")), msg
    view = memoryview(frame)
    if not legacy:
        count = struct.unpack_from("<Q", frame)[0]
        offsets = struct.unpack_from(f"<{count}Q", frame, 8)
        channel = bytes(view[offsets[0] : offsets[1]]).decode()
        parts = [view[offsets[i] : offsets[i + 1]] for i in range(1, count - 1)]
        header, parent, metadata, content = (json.loads(bytes(part)) for part in parts[:4])
        return channel, {
            "header": header,
            "msg_id": header.get("msg_id"),
            "msg_type": header.get("msg_type"),
            "parent_header": parent,
            "metadata": metadata,
            "content": content,
            "buffers": parts[4:],
        }
    count = struct.unpack_from("!I", frame)[0]
    bounds = [*struct.unpack_from(f"!{count}I", frame, 4), len(frame)]
    msg = json.loads(bytes(view[bounds[0] : bounds[1]]))
    msg["buffers"] = [view[bounds[i] : bounds[i + 1]] for i in range(1, count)]
    return str(msg.pop("channel")), msg
