"""Reading signed Jupyter messages, for both sides.

``Session.deserialize`` parses the header's dates into datetimes, a good third of
the cost of a small message; nothing here needs them, so they stay ISO strings.
Signatures are checked, and replays refused, just as jupyter_client does.
"""

from __future__ import annotations

import hmac
import logging
from collections import Counter, deque
from typing import Any


class SignatureCheck:
    """Verifies each message's HMAC and refuses one seen before (a replay)."""

    def __init__(self, session: Any, remember: int = 2**16) -> None:
        self.session = session
        self.remember = remember
        self._seen: set[bytes] = set()
        self._order: deque[bytes] = deque()

    def __call__(self, head: list[bytes]) -> None:
        """``head``: the signature, header, parent header, metadata and content frames."""
        if self.session.auth is None:
            return
        signature = head[0]
        if not hmac.compare_digest(signature, self.session.sign(head[1:5])):
            raise ValueError("invalid message signature")
        if signature in self._seen:
            raise ValueError("duplicate message signature (a replay?)")
        self._seen.add(signature)
        self._order.append(signature)
        if len(self._order) > self.remember:
            self._seen.discard(self._order.popleft())


def frame_bytes(frame: Any) -> bytes:
    return frame.bytes if hasattr(frame, "bytes") else bytes(frame)


def head_of(frames: list[Any]) -> list[bytes]:
    """The five leading frames of a message (after its identities), as bytes."""
    return [frame_bytes(frame) for frame in frames[:5]]


def decode(session: Any, check: SignatureCheck, frames: list[Any]) -> dict[str, Any]:
    """A message dict like ``Session.deserialize(frames, content=True, copy=False)``."""
    _, frames = session.feed_identities(frames, copy=False)
    head = head_of(frames)
    check(head)
    header = session.unpack(head[1])
    return {
        "header": header,
        "msg_id": header["msg_id"],
        "msg_type": header["msg_type"],
        "parent_header": session.unpack(head[2]),
        "metadata": session.unpack(head[3]),
        "content": session.unpack(head[4]),
        "buffers": [memoryview(frame) for frame in frames[5:]],
    }


class BadMessages:
    """Logs the first bad message of each kind in one line, and counts the rest.

    A peer that sends garbage (a bug, a fuzzer, a forged message) must not flood the
    log with tracebacks; ``counts`` says how many of each kind were dropped."""

    def __init__(self, logger: logging.Logger, side: str) -> None:
        self.logger = logger
        self.side = side
        self.counts: Counter[str] = Counter()

    def report(self, kind: str, detail: object) -> None:
        self.counts[kind] += 1
        if self.counts[kind] == 1:
            self.logger.warning(
                "progtc_kernel %s: dropped a bad message (%s): %s; further ones of this "
                "kind are only counted",
                self.side,
                kind,
                _short(detail),
            )


def _short(detail: object, limit: int = 200) -> str:
    text = " ".join(str(detail).split())
    return text if len(text) <= limit else text[:limit] + "..."
