"""A host killed without a word is forgotten by the file descriptor of its connection,
which the OS gives to the next connection: the kernel side must not take the old
connection's disconnect for the new one's (tested with fabricated frames and events)."""

from __future__ import annotations

import struct
from types import SimpleNamespace

import pytest
import zmq

from progtc_kernel.kernel_side._ipykernel import _SRCFD, ShellInterception

pytestmark = pytest.mark.fast


class Identity:
    """A received identity frame, as pyzmq gives it: its bytes and the fd it came on."""

    def __init__(self, name: bytes, fd: int) -> None:
        self.bytes = name
        self.fd = fd

    def get(self, option: int) -> int:
        assert option == _SRCFD
        return self.fd


def disconnected(fd: int) -> list[bytes]:
    """A socket monitor's EVENT_DISCONNECTED message for connection ``fd``."""
    return [struct.pack("=hi", zmq.EVENT_DISCONNECTED, fd), b"tcp://127.0.0.1:5555"]


def watching() -> tuple[ShellInterception, list[str]]:
    gone: list[str] = []
    kernel = SimpleNamespace(session=SimpleNamespace(auth=None))
    return ShellInterception(
        kernel, lambda msg: False, lambda msg, channel: None, gone.append
    ), gone


def test_a_host_whose_connection_closes_is_forgotten() -> None:
    shell, gone = watching()
    shell._note_sender(Identity(b"host-a", 7))

    shell._on_disconnect(disconnected(7))

    assert gone == ["host-a"]


def test_a_new_connection_on_a_reused_fd_means_the_old_host_is_gone() -> None:
    shell, gone = watching()
    shell._note_sender(Identity(b"host-a", 7))

    shell._note_sender(Identity(b"host-b", 7))  # before A's disconnect event was read

    assert gone == ["host-a"]


def test_the_old_connections_late_event_does_not_forget_the_new_host() -> None:
    shell, gone = watching()
    shell._note_sender(Identity(b"host-a", 7))
    shell._note_sender(Identity(b"host-b", 7))

    shell._on_disconnect(disconnected(7))  # A's, read late
    assert gone == ["host-a"]

    shell._on_disconnect(disconnected(7))  # B's own
    assert gone == ["host-a", "host-b"]


def test_the_same_host_on_its_connection_is_not_forgotten() -> None:
    shell, gone = watching()
    for _ in range(3):
        shell._note_sender(Identity(b"host-a", 7))

    assert gone == []


class PendingEvents:
    """A monitor socket holding events not read yet (ZMQ says EAGAIN after them)."""

    def __init__(self, *events: list[bytes]) -> None:
        self.events = list(events)

    def recv_multipart(self, flags: int) -> list[bytes]:
        if not self.events:
            raise zmq.Again()
        return self.events.pop(0)


def test_a_gone_hosts_departure_is_acted_on_before_a_new_host_registers() -> None:
    """A killed host's disconnect event may wait in the monitor while the next host's
    comm_open is read: the next host must hear of the runs the gone one left."""
    seen: list[str] = []
    kernel = SimpleNamespace(session=SimpleNamespace(auth=None))
    shell = ShellInterception(
        kernel,
        lambda msg: False,
        lambda msg, channel: None,
        lambda host: seen.append(f"{host} gone"),
        opens=("progtc", lambda msg, channel: seen.append("registered")),
    )
    shell._note_sender(Identity(b"host-a", 7))
    shell._monitor = SimpleNamespace(socket=PendingEvents(disconnected(7)))

    shell._dispatch({"header": {"msg_type": "comm_open"}, "content": {}})

    assert seen == ["host-a gone", "registered"]
