"""Bad input on both sides, over real loopback sockets.

Every test puts a raw peer written here (hand-built HTTP and frames) against
our server or our client, and checks that bad input is refused the way RFC
6455 says: HTTP errors before the upgrade, close codes 1002/1007/1009 after
it, ``HandshakeError`` on the client before the upgrade, and that nothing
hangs or leaks (every raw socket is closed, every wait is bounded).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import os
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import pytest
import trio
import trustme

from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    HandshakeError,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)

HOST = "127.0.0.1"
#: max_message_size of the servers and clients under test.
LIMIT = 200
#: Bound on every test's real (or virtual) duration: a bug fails, never hangs.
TEST_BOUND = 10
#: Bound on the number of reads a raw peer makes in one wait.
MAX_READS = 1000
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

TEXT, BINARY, CONT, CLOSE, PING = 0x1, 0x2, 0x0, 0x8, 0x9

Outcome = str | bytes | CloseReason | None


@pytest.fixture(autouse=True)
def no_errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Bad input from a peer is never an internal error of ours."""
    yield
    errors = [
        record.getMessage()
        for record in caplog.get_records("call")
        if record.name.startswith("trio-websocket") and record.levelno >= logging.ERROR
    ]
    assert errors == []


# -- Hand-built frames -------------------------------------------------------


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
) -> bytes:
    """Encode one frame, valid or not, exactly as asked."""
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if masked else 0
    size = len(payload)
    if size < 126:
        head += bytes([mask_bit | size])
    elif size < 2**16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", size)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(byte ^ key[i % 4] for i, byte in enumerate(payload))


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def status_of(response: bytes) -> int:
    return int(response.split(b"\r\n", 1)[0].split()[1])


def upgrade_request(
    key: bytes = b"dGhlIHNhbXBsZSBub25jZQ==",
    *,
    path: str = "/raw",
    omit: str = "",
    version: str = "13",
    extra: str = "",
) -> bytes:
    """A handshake request, valid unless told to ``omit`` a header or so."""
    headers = {
        "Host": HOST,
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key.decode(),
        "Sec-WebSocket-Version": version,
    }
    headers.pop(omit, None)
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return f"GET {path} HTTP/1.1\r\n{extra}{lines}\r\n".encode()


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
        key = await self.read_exactly(4) if masked else b"\0\0\0\0"
        payload = await self.read_exactly(size)
        return first & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(payload))

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
        await peer.stream.send_all(upgrade_request(key))
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

    server = await nursery.start(
        partial(
            serve_websocket,
            handler,
            HOST,
            0,
            None,
            max_message_size=LIMIT,
            connect_timeout=connect_timeout,
        )
    )
    return Recorder(server.port, receive, paths)


@pytest.fixture
async def recorder(nursery: trio.Nursery) -> Recorder:
    return await start_server(nursery)


# -- Server side: bad HTTP ---------------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "half_close", "status"),
    [
        pytest.param(b"\x16\x03\x01\x02\x00 garbage\r\n\r\n", False, 400, id="garbage"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n", True, 400, id="incomplete"),
        pytest.param(
            b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\n\r\n", False, 414, id="long-line"
        ),
        pytest.param(
            upgrade_request(extra=f"X-Big: {'b' * 10_000}\r\n"),
            False,
            431,
            id="long-header",
        ),
        pytest.param(
            upgrade_request(extra="X-Many: m\r\n" * 200), False, 431, id="many-headers"
        ),
        # RFC 6455 section 4.2.2 and 0.12: a malformed upgrade gets 400, an
        # unsupported version 426 (with the supported one, checked below).
        pytest.param(
            f"GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode(), False, 400, id="plain"
        ),
        pytest.param(upgrade_request(omit="Upgrade"), False, 400, id="no-upgrade"),
        pytest.param(
            upgrade_request(omit="Connection"), False, 400, id="no-connection"
        ),
        pytest.param(
            upgrade_request(omit="Sec-WebSocket-Key"), False, 400, id="no-key"
        ),
        pytest.param(upgrade_request(version="8"), False, 426, id="bad-version"),
        pytest.param(
            upgrade_request(omit="Sec-WebSocket-Version"), False, 426, id="no-version"
        ),
    ],
)
async def test_server_answers_bad_http_with_an_error(
    recorder: Recorder, request_bytes: bytes, half_close: bool, status: int
) -> None:
    with trio.fail_after(TEST_BOUND):
        async with raw_client(recorder.port) as peer:
            await peer.stream.send_all(request_bytes)
            if half_close:
                await peer.stream.send_eof()
            response = await peer.read_to_eof()
        assert status_of(response) == status
        await recorder.serves_a_normal_client()
    assert recorder.paths == ["/ok"]  # the handler never saw the bad request


async def test_non_ascii_header_value_is_accepted_with_its_bytes(
    nursery: trio.Nursery,
) -> None:
    # RFC 9110 allows bytes 0x80-0xFF in a field value (obs-text).
    seen: list[bytes] = []

    async def handler(request: WebSocketRequest) -> None:
        seen.extend(value for name, value in request.headers if name == b"x-name")
        await request.accept()

    server = await nursery.start(serve_websocket, handler, HOST, 0, None)
    with trio.fail_after(TEST_BOUND):
        async with raw_client(server.port) as peer:
            await peer.stream.send_all(upgrade_request(extra="X-Name: café\r\n"))
            assert status_of(await peer.read_head()) == 101
    assert seen == ["café".encode()]


async def test_unsupported_version_is_told_the_supported_one(
    recorder: Recorder,
) -> None:
    with trio.fail_after(TEST_BOUND):
        async with raw_client(recorder.port) as peer:
            await peer.stream.send_all(upgrade_request(version="8"))
            response = await peer.read_to_eof()
    assert status_of(response) == 426
    assert b"\r\nSec-WebSocket-Version: 13\r\n" in response


async def test_server_drops_a_client_that_never_finishes_its_request(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    timeout = 5
    recorder = await start_server(nursery, connect_timeout=timeout)
    with trio.fail_after(timeout * 4):
        async with raw_client(recorder.port) as peer:
            await peer.stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            with trio.move_on_after(timeout - 1) as waiting:
                await peer.stream.receive_some()
            assert waiting.cancelled_caught, "dropped before connect_timeout"
            assert await peer.read_to_eof() == b""  # dropped without an answer
        await recorder.serves_a_normal_client()
    assert recorder.paths == ["/ok"]


# -- Server side: bad frames after the handshake -----------------------------

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


@pytest.mark.parametrize(("bad_bytes", "code"), SERVER_BAD_FRAMES)
async def test_server_fails_the_connection_on_bad_frames(
    recorder: Recorder, bad_bytes: bytes, code: int
) -> None:
    with trio.fail_after(TEST_BOUND):
        async with upgraded_raw_client(recorder.port) as peer:
            # Nothing completes a fragmented message: the server must not
            # wait for the rest before failing the connection.
            await peer.stream.send_all(bad_bytes)
            assert await peer.read_close_code(masked=False) == code
            assert await peer.read_to_eof() == b""
        outcome = await recorder.next_outcome()
        assert isinstance(outcome, CloseReason)
        assert outcome.code == code
        await recorder.serves_a_normal_client()
    assert recorder.paths == ["/raw", "/ok"]


async def test_server_accepts_a_message_of_exactly_the_limit(
    recorder: Recorder,
) -> None:
    # The counterpart of the 1009 cases: the limit is inclusive, in bytes.
    text = "é" * (LIMIT // 2)
    with trio.fail_after(TEST_BOUND):
        async with upgraded_raw_client(recorder.port) as peer:
            await peer.stream.send_all(frame(TEXT, text.encode()))
            assert await peer.read_frame(masked=False) == (TEXT, text.encode())
            assert await recorder.next_outcome() == text


# -- Client side: bad handshake responses ------------------------------------


async def answer_and_wait(answer: bytes, keep_open: bool, peer: RawPeer) -> None:
    """Read the request, send ``answer``, then wait for the client to leave."""
    await peer.read_head()
    await peer.stream.send_all(answer)
    if keep_open:
        await peer.read_to_eof()


@pytest.mark.parametrize(
    ("answer", "keep_open"),
    [
        pytest.param(b"this is not HTTP\r\n\r\n", True, id="garbage"),
        pytest.param(b"HTTP/1.1 101 Switching\r\nUpgrade: web", False, id="cut-short"),
        pytest.param(b"", False, id="closed"),
        pytest.param(
            b"HTTP/1.1 101 Switching Protocols\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(b"wrong") + b"\r\n\r\n",
            True,
            id="wrong-accept",
        ),
        pytest.param(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n",
            True,
            id="no-upgrade-header",
        ),
    ],
)
async def test_client_raises_handshake_error_at_once(
    nursery: trio.Nursery, answer: bytes, keep_open: bool
) -> None:
    port = await start_raw_server(nursery, partial(answer_and_wait, answer, keep_open))
    # A bound far below connect_timeout: raising only after the timeout fails.
    with trio.fail_after(TEST_BOUND), pytest.raises(HandshakeError) as info:
        async with open_websocket_url(f"ws://{HOST}:{port}/", connect_timeout=3600):
            pytest.fail("the handshake should have failed")
    assert not isinstance(info.value, ConnectionRejected | ConnectionTimeout)


async def test_client_raises_connection_rejected_with_the_response(
    nursery: trio.Nursery,
) -> None:
    body = b"go away, please"
    answer = (
        b"HTTP/1.1 403 Forbidden\r\nX-Reason: nope\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    port = await start_raw_server(nursery, partial(answer_and_wait, answer, True))
    with trio.fail_after(TEST_BOUND), pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(f"ws://{HOST}:{port}/", connect_timeout=3600):
            pytest.fail("the handshake should have failed")
    assert info.value.status_code == 403
    assert (b"x-reason", b"nope") in info.value.headers
    assert info.value.body == body


async def test_client_raises_handshake_error_caused_by_tls_failure(
    nursery: trio.Nursery,
) -> None:
    server_ca, other_ca = trustme.CA(), trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ca.issue_cert(HOST).configure_cert(server_context)
    client_context = ssl.create_default_context()
    other_ca.configure_trust(client_context)
    send, receive = trio.open_memory_channel[str](math.inf)

    async def handler(request: WebSocketRequest) -> None:  # pragma: no cover
        send.send_nowait("called")

    server = await nursery.start(
        partial(serve_websocket, handler, HOST, 0, server_context)
    )
    url = f"wss://{HOST}:{server.port}/"
    with trio.fail_after(TEST_BOUND), pytest.raises(HandshakeError) as info:
        async with open_websocket_url(url, client_context, connect_timeout=3600):
            pytest.fail("the TLS handshake should have failed")
    assert isinstance(info.value.__cause__, ssl.SSLError)
    with pytest.raises(trio.WouldBlock):
        receive.receive_nowait()


# -- Client side: bad frames after the handshake -----------------------------


async def send_then_expect_close(
    bad_bytes: bytes, received: list[int], peer: RawPeer
) -> None:
    """Upgrade, send ``bad_bytes``, record the client's close code, hang up."""
    await raw_upgrade(peer)
    await peer.stream.send_all(bad_bytes)
    received.append(await peer.read_close_code(masked=True))


CLIENT_BAD_FRAMES = [
    pytest.param(frame(BINARY, b"hi", masked=True), 1002, id="masked"),
    pytest.param(frame(BINARY, b"hi", rsv=0b010, masked=False), 1002, id="rsv2"),
    pytest.param(frame(0x3, b"hi", masked=False), 1002, id="opcode-3"),
    pytest.param(frame(CONT, b"hi", masked=False), 1002, id="continuation-first"),
    pytest.param(frame(PING, b"p" * 126, masked=False), 1002, id="long-ping"),
    pytest.param(frame(CLOSE, close_payload(999), masked=False), 1002, id="close-999"),
    pytest.param(
        frame(CLOSE, close_payload(1005), masked=False), 1002, id="close-1005"
    ),
    pytest.param(frame(TEXT, b"bad \xff", masked=False), 1007, id="invalid-utf8"),
    pytest.param(
        frame(TEXT, b"\xff", fin=False, masked=False), 1007, id="first-fragment-invalid"
    ),
    pytest.param(frame(BINARY, b"x" * (LIMIT + 1), masked=False), 1009, id="too-big"),
    pytest.param(
        frame(TEXT, ("é" * (LIMIT * 3 // 4)).encode(), masked=False),
        1009,
        id="too-big-utf8",
    ),
]


@pytest.mark.parametrize(("bad_bytes", "code"), CLIENT_BAD_FRAMES)
async def test_client_fails_the_connection_on_bad_frames(
    nursery: trio.Nursery, bad_bytes: bytes, code: int
) -> None:
    received: list[int] = []
    port = await start_raw_server(
        nursery, partial(send_then_expect_close, bad_bytes, received)
    )
    with trio.fail_after(TEST_BOUND):
        async with open_websocket_url(
            f"ws://{HOST}:{port}/", max_message_size=LIMIT
        ) as ws:
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
    assert info.value.reason is not None
    assert info.value.reason.code == code
    assert received == [code]


async def drop_mid_message(peer: RawPeer) -> None:
    await raw_upgrade(peer)
    await peer.stream.send_all(frame(TEXT, b"half of a ", fin=False, masked=False))


async def test_client_reports_1006_when_tcp_drops_mid_message(
    nursery: trio.Nursery,
) -> None:
    port = await start_raw_server(nursery, drop_mid_message)
    with trio.fail_after(TEST_BOUND):
        async with open_websocket_url(f"ws://{HOST}:{port}/") as ws:
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
            assert ws.closed is not None
            assert ws.closed.code == 1006
    assert info.value.reason is not None
    assert info.value.reason.code == 1006
