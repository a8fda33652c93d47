"""Message framing and the protocol's checks, against the libraries that define them:
websocket frames as Jupyter Server writes and reads them, signed messages as
jupyter_client's ``Session`` reads them, and the protocol's own body checks."""

from __future__ import annotations

import inspect
import json
import logging
from typing import Any

import pytest
import zmq
from jupyter_client.session import Session
from jupyter_server.services.kernels.connection.base import (
    deserialize_binary_message,
    deserialize_msg_from_ws_v1,
    serialize_binary_message,
    serialize_msg_to_ws_v1,
)

from progtc_kernel import _wire
from progtc_kernel.kernels.jupyter_server.frames import decode_frame, legacy_frame, v1_frame
from progtc_kernel.protocol import (
    PROTOCOL_VERSION,
    ToolSpec,
    body_bytes,
    pack,
    result_problem,
    signature_of,
    unpack_header,
)

pytestmark = pytest.mark.fast

KEY = b"a-secret-key"


def a_message(session: Session, **content: Any) -> dict[str, Any]:
    return session.msg(
        "comm_msg",
        {"comm_id": "c1", "data": {"v": 2, "type": "calls"}, **content},
        parent={"msg_id": "cell-1"},
    )


def parts_of(session: Session, msg: dict[str, Any]) -> list[bytes]:
    pack_ = session.pack
    return [
        pack_(msg["header"]),
        pack_(msg["parent_header"]),
        pack_(msg["metadata"]),
        pack_(msg["content"]),
    ]


# -- websocket frames -------------------------------------------------------------------


@pytest.mark.parametrize("buffers", [[], [b'{"calls":[]}'], [b"one", b"", b"\x00three"]])
def test_a_v1_frame_is_what_jupyter_server_writes_and_reads(buffers: list[bytes]) -> None:
    session = Session(key=KEY)
    msg = a_message(session)
    parts = [*parts_of(session, msg), *buffers]
    frame = v1_frame("shell", parts)
    assert frame == serialize_msg_to_ws_v1(parts, "shell")  # type: ignore[no-untyped-call]
    channel, read = deserialize_msg_from_ws_v1(frame)  # type: ignore[no-untyped-call]
    assert (channel, [bytes(part) for part in read]) == ("shell", parts)


@pytest.mark.parametrize("buffers", [[], [b'{"results":[]}'], [b"a", b"bc"]])
def test_a_v1_frame_from_jupyter_server_decodes_to_the_message(buffers: list[bytes]) -> None:
    session = Session(key=KEY)
    msg = a_message(session)
    frame = serialize_msg_to_ws_v1([*parts_of(session, msg), *buffers], "iopub")  # type: ignore[no-untyped-call]
    channel, read = decode_frame(frame, legacy=False)
    assert channel == "iopub"
    assert read["header"] == json.loads(session.pack(msg["header"]))
    assert (read["msg_id"], read["msg_type"]) == (msg["msg_id"], "comm_msg")
    assert read["parent_header"] == {"msg_id": "cell-1"}
    assert read["content"] == msg["content"] and read["metadata"] == {}
    assert [bytes(buffer) for buffer in read["buffers"]] == buffers


@pytest.mark.parametrize("buffers", [[b'{"calls":[]}'], [b"x", b"yz"]])
def test_a_legacy_binary_frame_is_what_jupyter_server_reads(buffers: list[bytes]) -> None:
    session = Session(key=KEY)
    msg = a_message(session)
    frame, binary = legacy_frame("control", parts_of(session, msg), buffers)
    assert binary
    read = deserialize_binary_message(frame)  # type: ignore[no-untyped-call]
    assert read["channel"] == "control"
    assert read["content"] == msg["content"] and read["header"]["msg_id"] == msg["msg_id"]
    assert [bytes(buffer) for buffer in read["buffers"]] == buffers


def test_a_legacy_message_without_buffers_is_a_text_frame() -> None:
    session = Session(key=KEY)
    msg = a_message(session)
    frame, binary = legacy_frame("shell", parts_of(session, msg), [])
    assert not binary
    read = json.loads(frame)
    assert read["channel"] == "shell" and read["content"] == msg["content"]


@pytest.mark.parametrize("buffers", [[], [b"payload"], [b"a", b"b"]])
def test_legacy_frames_from_jupyter_server_decode(buffers: list[bytes]) -> None:
    session = Session(key=KEY)
    msg = json.loads(json.dumps(a_message(session), default=str))
    written = {**msg, "channel": "iopub", "buffers": buffers}
    frame: str | bytes = (
        serialize_binary_message(written)  # type: ignore[no-untyped-call]
        if buffers
        else json.dumps({**written, "buffers": []})
    )
    channel, read = decode_frame(frame, legacy=True)
    assert channel == "iopub" and read["content"] == msg["content"]
    assert [bytes(buffer) for buffer in read["buffers"]] == buffers


# -- signed messages: _wire.decode is a copy of Session.deserialize; keep them equal --


def signed(session: Session, msg: dict[str, Any], buffers: tuple[bytes, ...] = ()) -> list[bytes]:
    """The frames of a message as a kernel sends them (identity first)."""
    return [b"an-identity", *session.serialize({**msg, "buffers": list(buffers)})]


def read_both(session: Session, frames: list[bytes]) -> tuple[Any, Any]:
    """What each reader makes of the same frames: a dict, or the error it raised."""
    results: list[Any] = []
    for reader in (_read_with_wire, _read_with_session):
        try:
            results.append(reader(Session(key=session.key, check_pid=False), frames))
        except ValueError as exc:
            results.append(exc)
    return results[0], results[1]


def received(frames: list[bytes]) -> list[zmq.Frame]:
    """The frames as a ZMQ socket hands them over (both readers take them uncopied)."""
    return [zmq.Frame(frame) for frame in frames]


def _read_with_wire(session: Session, frames: list[bytes]) -> dict[str, Any]:
    return _wire.decode(session, _wire.SignatureCheck(session), received(frames))


def _read_with_session(session: Session, frames: list[bytes]) -> dict[str, Any]:
    _, rest = session.feed_identities(received(frames), copy=False)
    return session.deserialize(rest, content=True, copy=False)


@pytest.mark.parametrize("buffers", [[], [b'{"calls":[]}', b"more"]])
def test_a_signed_message_reads_the_same_as_session_deserialize(buffers: list[bytes]) -> None:
    session = Session(key=KEY)
    ours, theirs = read_both(session, signed(session, a_message(session), tuple(buffers)))
    for key in ("msg_id", "msg_type", "content", "metadata"):
        assert ours[key] == theirs[key], key
    # Session parses the header's dates; ours stay ISO strings, the same instant.
    assert {**ours["header"], "date": None} == {**theirs["header"], "date": None}
    assert ours["header"]["date"] == theirs["header"]["date"].isoformat().replace("+00:00", "Z")
    assert ours["parent_header"] == {"msg_id": "cell-1"}
    assert [bytes(b) for b in ours["buffers"]] == [bytes(b) for b in theirs["buffers"]]


@pytest.mark.parametrize("tamper", ["signature", "header", "content", "key"])
def test_a_bad_signature_is_refused_by_both(tamper: str) -> None:
    session = Session(key=KEY)
    frames = signed(session, a_message(session, note="pay 10"))
    at = {"signature": 2, "header": 3, "content": 6}.get(tamper)
    if at is not None:
        frames[at] = (
            (b"f" if frames[at][:1] != b"f" else b"e") + frames[at][1:]
            if tamper == "signature"
            else (frames[at].replace(b"pay 10", b"pay 99").replace(b'"comm_msg"', b'"shutdown"'))
        )
    else:
        session = Session(key=b"another-key")
    ours, theirs = read_both(session, frames)
    assert isinstance(ours, ValueError) and isinstance(theirs, ValueError)
    assert "signature" in str(ours).lower() and "signature" in str(theirs).lower()


def test_a_replayed_message_is_refused_by_both() -> None:
    session = Session(key=KEY)
    frames = signed(session, a_message(session))
    reader = Session(key=KEY)
    check = _wire.SignatureCheck(reader)
    _wire.decode(reader, check, received(frames))
    with pytest.raises(ValueError, match="duplicate message signature"):
        _wire.decode(reader, check, received(frames))
    _, rest = reader.feed_identities(received(frames), copy=False)
    reader.deserialize(rest, copy=False)
    with pytest.raises(ValueError, match="Duplicate Signature"):
        reader.deserialize(rest, copy=False)


def test_the_replay_memory_is_bounded_and_forgets_the_oldest_first() -> None:
    session = Session(key=KEY)
    first, second, third = (signed(session, a_message(session)) for _ in range(3))
    check = _wire.SignatureCheck(session, remember=2)
    for frames in (first, second, third):
        _wire.decode(session, check, received(frames))
    _wire.decode(session, check, received(first))  # forgotten: the third pushed it out
    with pytest.raises(ValueError, match="duplicate"):
        _wire.decode(session, check, received(third))


def test_without_a_key_messages_go_unsigned_and_unchecked() -> None:
    session = Session(key=b"")
    frames = signed(session, a_message(session))
    assert frames[2] == b""  # no signature
    ours, theirs = read_both(session, frames)
    assert ours["content"] == theirs["content"]
    check = _wire.SignatureCheck(session)
    for _ in range(2):  # nothing to tell a replay by
        _wire.decode(session, check, received(frames))


def test_bad_messages_are_logged_once_per_kind_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad = _wire.BadMessages(logging.getLogger("progtc_kernel.test"), "host")
    with caplog.at_level(logging.WARNING, "progtc_kernel.test"):
        for _ in range(3):
            bad.report("unreadable", "x" * 500 + "\n\nend")
        bad.report("protocol version", "v9")
    assert bad.counts == {"unreadable": 3, "protocol version": 1}
    first, second = (record.getMessage() for record in caplog.records)
    assert first.startswith("progtc_kernel host: dropped a bad message (unreadable): xxx")
    assert first.endswith("...; further ones of this kind are only counted")
    assert "(protocol version): v9" in second


# -- the protocol's messages and checks --------------------------------------------


def test_a_message_is_a_small_routing_dict_and_its_body_in_a_buffer() -> None:
    data, buffers = pack("results", {"results": [{"id": 1, "ok": True, "value": "é"}]})
    assert data == {"v": PROTOCOL_VERSION, "type": "results"}
    assert json.loads(buffers[0]) == {"results": [{"id": 1, "ok": True, "value": "é"}]}
    assert pack("results", b'{"results":[]}')[1] == [b'{"results":[]}']  # bytes pass as is
    assert unpack_header(data) == (PROTOCOL_VERSION, "results")
    assert unpack_header({}) == (0, "")
    assert body_bytes([memoryview(b"body")]) == b"body"
    with pytest.raises(ValueError, match="without a body buffer"):
        body_bytes([])


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"id": 1, "ok": True, "value": None}, None),
        (
            {
                "id": 1,
                "ok": False,
                "error": {"kind": "tool", "type": "ValueError", "message": "no"},
            },
            None,
        ),
        ([1, 2], "a result must be an object, not list"),
        ({"id": 1, "ok": True}, "a successful result has no 'value'"),
        ({"id": 1, "ok": "yes", "value": 1}, "a result's 'ok' must be true or false"),
        ({"id": 1}, "a result's 'ok' must be true or false"),
        ({"id": 1, "ok": False}, "a failed result has no 'error' object"),
        ({"id": 1, "ok": False, "error": "boom"}, "a failed result has no 'error' object"),
        (
            {"id": 1, "ok": False, "error": {"kind": "oops", "type": "E", "message": "m"}},
            "unknown error kind 'oops'",
        ),
        (
            {"id": 1, "ok": False, "error": {"kind": "tool", "message": "m"}},
            "a failed result's error needs a 'type' and a 'message' string",
        ),
        (
            {"id": 1, "ok": False, "error": {"kind": "timeout", "type": "E", "message": 3}},
            "unknown error kind 'timeout'",
        ),
    ],
)
def test_result_problem_says_what_is_wrong_with_a_result(entry: Any, problem: str | None) -> None:
    assert result_problem(entry) == problem


def spec(parameters: list[dict[str, Any]], returns: str | None = None) -> ToolSpec:
    return {
        "name": "t",
        "description": None,
        "parameters": parameters,  # type: ignore[typeddict-item]
        "returns": returns,
        "input_schema": {},
        "output_schema": None,
    }


def p(
    name: str,
    kind: str = "positional_or_keyword",
    annotation: str | None = None,
    default: str | None = None,
) -> dict[str, Any]:
    return {"name": name, "kind": kind, "annotation": annotation, "default_repr": default}


@pytest.mark.parametrize(
    ("parameters", "returns", "shown"),
    [
        ([], None, "()"),
        ([p("city", annotation="str")], "str", "(city: str) -> str"),
        ([p("city", annotation="str", default="'Paris'")], None, "(city: str = 'Paris')"),
        ([p("a", "positional_only"), p("b")], None, "(a, /, b)"),
        (
            [
                p("query", annotation="str"),
                p("tags", "var_positional", "str"),
                p("limit", "keyword_only", "int", "10"),
                p("filters", "var_keyword", "bool"),
            ],
            "list[str]",
            "(query: str, *tags: str, limit: int = 10, **filters: bool) -> list[str]",
        ),
        (
            [p("when", annotation="datetime.date | None", default="None")],
            "dict[str, Any]",
            "(when: datetime.date | None = None) -> dict[str, Any]",
        ),
    ],
)
def test_signature_of_shows_a_tool_as_the_kernel_does(
    parameters: list[dict[str, Any]], returns: str | None, shown: str
) -> None:
    signature = signature_of(spec(parameters, returns))
    assert str(signature) == shown
    assert isinstance(signature, inspect.Signature)


# -- ZmqTransport against raw sockets standing in for a kernel --------------------------

CHANNEL_NAMES = ("shell", "iopub", "stdin", "control", "hb")


@pytest.mark.fast
async def test_zmq_transport_keeps_every_message_in_order_when_the_kernel_reads_late(
    tmp_path: Any,
) -> None:
    """A kernel that reads nothing for a while: the transport's sends fill ZMQ's queues
    and then wait in the transport, and all arrive, in order, once the kernel reads;
    meanwhile what the kernel sends still comes in (ZMQ signals a socket's changes, not
    its messages: a send must not swallow the signal of a message that came)."""
    import asyncio

    from progtc_kernel.kernels.local import ZmqTransport

    key = b"secret"
    info = {
        "transport": "ipc",
        "ip": str(tmp_path / "kernel"),
        "key": key.decode(),
        "signature_scheme": "hmac-sha256",
        **{f"{name}_port": port for port, name in enumerate(CHANNEL_NAMES, start=1)},
    }
    context = zmq.Context()
    kernel_session = Session(key=key)
    sockets = {
        name: context.socket(zmq.PUB if name == "iopub" else zmq.ROUTER) for name in CHANNEL_NAMES
    }
    for name, socket in sockets.items():
        socket.bind(f"ipc://{info['ip']}-{info[f'{name}_port']}")
    transport = ZmqTransport.connect(info)
    received: list[tuple[str, Any]] = []
    got_reply = asyncio.Event()

    def on_message(channel: str, msg: dict[str, Any]) -> None:
        received.append((channel, msg["content"]))
        got_reply.set()

    try:
        await transport.start(on_message)
        count = 10_000  # more than ZMQ queues (1,000 messages each way) and buffers hold
        for n in range(count):
            transport.send("shell", "comm_msg", {"n": n})
        assert transport._sockets["shell"].waiting  # the kernel reads nothing yet
        shell = sockets["shell"]
        identity, first = kernel_session.recv(shell, mode=0)
        assert first is not None and first["content"] == {"n": 0}
        kernel_session.send(shell, "comm_msg", {"reply": 1}, ident=identity)
        seen = [first["content"]["n"]]
        while len(seen) < count:
            if shell.poll(0):
                _, msg = kernel_session.recv(shell, mode=0)
                assert msg is not None
                seen.append(msg["content"]["n"])
            else:
                await asyncio.sleep(0)  # the transport sends what waited as room frees
        assert seen == list(range(count))
        await got_reply.wait()
        assert received == [("shell", {"reply": 1})]
    finally:
        await transport.close()
        context.destroy(linger=0)
