"""A raw peer for hostile-peer tests: hand-built HTTP and frames.

Shared by ``test_bad_input``, ``test_attacks``, ``test_attacks_protocol`` and
``test_fuzzing``: frame and handshake builders, a raw client and a raw
server that speak them by hand, and a recorded server of ours. The handshake
request and ``HOST`` are ``raw_http``'s.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import os
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
import trio
from raw_http import HOST, MAX_READS, upgrade_request

from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    WebSocketRequest,
    WebSocketServer,
    open_websocket_url,
    serve_websocket,
)

#: max_message_size of the servers and clients under test.
LIMIT = 200
#: Bound on every test's real (or virtual) duration: a bug fails, never hangs.
TEST_BOUND = 10
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA

Outcome = str | bytes | CloseReason | None


@pytest.fixture(autouse=True)
def no_errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Bad input from a hostile peer is never an internal error of ours.

    Autouse in every test module that imports it.
    """
    yield
    errors = [
        record.getMessage()
        for record in caplog.get_records("call")
        if record.name.startswith("trio-websocket") and record.levelno >= logging.ERROR
    ]
    assert errors == []


# -- Hand-built frames -------------------------------------------------------


def wire_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    key: bytes | None = b"\x01\x02\x03\x04",
) -> bytes:
    """Encode one frame exactly as asked, masked with ``key`` unless None."""
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if key is not None else 0
    size = len(payload)
    if size < 126:
        head += bytes([mask_bit | size])
    elif size < 2**16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", size)
    if key is None:
        return head + payload
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
) -> bytes:
    """Encode one frame, valid or not, exactly as asked; masked with a random key."""
    key = os.urandom(4) if masked else None
    return wire_frame(opcode, payload, fin=fin, rsv=rsv, key=key)


def unmask(payload: bytes, key: bytes) -> bytes:
    """``payload`` XOR the repeated 4-byte ``key`` (fast for large payloads)."""
    size = len(payload)
    stream = (key * (size // 4 + 1))[:size]
    value = int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")
    return value.to_bytes(size, "big")


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


#: Bad frames a client may send, each with the close code a server answers.
SERVER_BAD_FRAMES = [
    pytest.param(frame(BINARY, b"hi", masked=False), 1002, id="unmasked"),
    pytest.param(frame(BINARY, b"hi", rsv=0b100), 1002, id="rsv1"),
    pytest.param(frame(BINARY, b"hi", rsv=0b001), 1002, id="rsv3"),
    pytest.param(frame(0x3, b"hi"), 1002, id="opcode-3"),
    pytest.param(frame(0xB, b"hi"), 1002, id="opcode-B"),
    pytest.param(frame(PING, b"hi", fin=False), 1002, id="fragmented-ping"),
    pytest.param(frame(PING, b"p" * 126), 1002, id="long-ping"),
    pytest.param(frame(CONT, b"hi"), 1002, id="continuation-first"),
    pytest.param(
        frame(TEXT, b"a", fin=False) + frame(TEXT, b"b"), 1002, id="text-in-text"
    ),
    pytest.param(frame(CLOSE, close_payload(999)), 1002, id="close-999"),
    pytest.param(frame(CLOSE, close_payload(1005)), 1002, id="close-1005"),
    pytest.param(frame(CLOSE, close_payload(1006)), 1002, id="close-1006"),
    pytest.param(frame(CLOSE, b"\x03"), 1002, id="close-1-byte"),
    pytest.param(frame(TEXT, b"bad \xff text"), 1007, id="invalid-utf8"),
    pytest.param(frame(TEXT, b"\xed\xa0\x80"), 1007, id="surrogate"),
    pytest.param(frame(TEXT, b"ok\xff", fin=False), 1007, id="first-fragment-invalid"),
    pytest.param(
        frame(TEXT, "é".encode(), fin=False) + frame(CONT, b"\x80", fin=False),
        1007,
        id="second-fragment-invalid",
    ),
    pytest.param(frame(BINARY, b"x" * (LIMIT + 1)), 1009, id="too-big"),
    pytest.param(
        frame(TEXT, ("é" * (LIMIT * 3 // 4)).encode()), 1009, id="too-big-utf8"
    ),
    pytest.param(
        frame(BINARY, b"x" * (LIMIT // 2 + 1), fin=False)
        + frame(CONT, b"x" * (LIMIT // 2 + 1), fin=False),
        1009,
        id="too-big-fragmented",
    ),
]


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def status_of(response: bytes) -> int:
    return int(response.split(b"\r\n", 1)[0].split()[1])


# -- A raw peer --------------------------------------------------------------


class RawPeer:
    """A stream plus a read buffer, for speaking HTTP and frames by hand."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._buffer = bytearray()

    async def _fill(self) -> bool:
        try:
            data = await self.stream.receive_some()
        except trio.BrokenResourceError:
            data = b""
        self._buffer += data
        return bool(data)

    async def _fill_until(self, done: Callable[[], bool]) -> None:
        for _ in range(MAX_READS):
            if done():
                return
            if not await self._fill():
                raise EOFError(f"end of stream; received {bytes(self._buffer)!r}")
        raise AssertionError("the peer sent too much")

    def _take(self, size: int) -> bytes:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def read_exactly(self, size: int) -> bytes:
        await self._fill_until(lambda: len(self._buffer) >= size)
        return self._take(size)

    async def read_head(self) -> bytes:
        """Read an HTTP head, up to and including the blank line."""
        await self._fill_until(lambda: b"\r\n\r\n" in self._buffer)
        return self._take(self._buffer.index(b"\r\n\r\n") + 4)

    async def read_to_eof(self) -> bytes:
        """Everything up to the end of the stream (which must come)."""
        for _ in range(MAX_READS):
            if not await self._fill():
                return self._take(len(self._buffer))
        raise AssertionError("the peer never closed the connection")

    async def read_frame(self, *, masked: bool) -> tuple[int, bytes]:
        """Read one frame; check its mask bit; return opcode and payload."""
        first, second = await self.read_exactly(2)
        assert first & 0x80, "expected FIN on a frame we read"
        assert bool(second & 0x80) == masked, "wrong mask bit"
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", await self.read_exactly(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", await self.read_exactly(8))
        key = await self.read_exactly(4) if masked else b""
        payload = await self.read_exactly(size)
        return first & 0x0F, unmask(payload, key) if key else payload

    async def read_close_code(self, *, masked: bool) -> int:
        opcode, payload = await self.read_frame(masked=masked)
        assert opcode == CLOSE, f"expected a close frame, got opcode {opcode}"
        code: int = struct.unpack("!H", payload[:2])[0]
        return code


@asynccontextmanager
async def raw_client(port: int) -> AsyncIterator[RawPeer]:
    stream = await trio.open_tcp_stream(HOST, port)
    async with stream:
        yield RawPeer(stream)


@asynccontextmanager
async def upgraded_raw_client(port: int) -> AsyncIterator[RawPeer]:
    """A raw client that completed a valid handshake with path ``/raw``."""
    key = base64.b64encode(os.urandom(16))
    async with raw_client(port) as peer:
        await peer.stream.send_all(upgrade_request("/raw", key=key))
        head = await peer.read_head()
        assert status_of(head) == 101
        assert b"\r\nSec-WebSocket-Accept: " + accept_key(key) + b"\r\n" in head
        yield peer


RawBehaviour = Callable[[RawPeer], Awaitable[None]]


async def start_raw_server(nursery: trio.Nursery, behaviour: RawBehaviour) -> int:
    """Serve ``behaviour`` on a raw TCP listener; return its port."""

    async def serve(stream: trio.SocketStream) -> None:
        async with stream:
            await behaviour(RawPeer(stream))

    listeners = await nursery.start(partial(trio.serve_tcp, serve, 0, host=HOST))
    port: int = listeners[0].socket.getsockname()[1]
    return port


def upgrade_response(request_head: bytes) -> bytes:
    """A valid 101 answer to the handshake request ``request_head``."""
    key = next(
        line.split(b":", 1)[1].strip()
        for line in request_head.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    return (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_key(key) + b"\r\n\r\n"
    )


async def raw_upgrade(peer: RawPeer) -> None:
    """The raw server's side of a valid handshake."""
    await peer.stream.send_all(upgrade_response(await peer.read_head()))


# -- Our server, recorded ----------------------------------------------------


async def serve_limited(
    nursery: trio.Nursery,
    handler: Callable[[WebSocketRequest], Awaitable[None]],
    **options: Any,
) -> WebSocketServer:
    """serve_websocket on ``HOST`` and a free port, with ``max_message_size=LIMIT``."""
    server: WebSocketServer = await nursery.start(
        partial(
            serve_websocket, handler, HOST, 0, None, max_message_size=LIMIT, **options
        )
    )
    return server


@dataclass
class Recorder:
    """A running server of ours and what its handler saw."""

    port: int
    outcomes: trio.MemoryReceiveChannel[Outcome]
    paths: list[str] = field(default_factory=list)

    async def next_outcome(self) -> Outcome:
        with trio.fail_after(TEST_BOUND):
            return await self.outcomes.receive()

    async def serves_a_normal_client(self) -> None:
        """The server still works: a well-behaved client gets its echo."""
        async with open_websocket_url(f"ws://{HOST}:{self.port}/ok") as ws:
            await ws.send_message("hello")
            assert await ws.get_message() == "hello"
        assert await self.next_outcome() == "hello"
        assert self.paths[-1] == "/ok"


async def start_server(
    nursery: trio.Nursery, *, connect_timeout: float = 60
) -> Recorder:
    """Start serve_websocket; the handler reports one message or the close."""
    send, receive = trio.open_memory_channel[Outcome](math.inf)
    paths: list[str] = []

    async def handler(request: WebSocketRequest) -> None:
        paths.append(request.path)
        ws = await request.accept()
        try:
            message = await ws.get_message()
        except ConnectionClosed as exc:
            send.send_nowait(exc.reason)
            return
        await ws.send_message(message)
        send.send_nowait(message)

    server = await serve_limited(nursery, handler, connect_timeout=connect_timeout)
    return Recorder(server.port, receive, paths)
