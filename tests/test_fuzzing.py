"""Property-based fuzzing of both sides with hypothesis ("hostile peers").

A raw peer written here sends our server or our client arbitrary bytes:
after a valid handshake, as the handshake itself, and as valid messages cut
into arbitrary fragments with pings between them. Every example must end in
delivered messages, or ``ConnectionClosed`` / ``HandshakeError`` /
``ConnectionRejected`` with the right close code or status; never another
exception, never a hang (each example runs under ``trio.fail_after``), never
a log record at ERROR or above from the ``trio-websocket`` loggers.

The oracle is the websockets engine itself: the bytes our connection read,
in the very chunks it read them, are fed to a plain ``ServerProtocol`` or
``ClientProtocol``, and a few lines here play the part of the message layer
(size limit, UTF-8 checked fragment by fragment, nothing processed after
the connection is failed). Where our codec parses the frames, the text of
a frame still arriving is checked at the end of each read, as our
connection does (see ``early_text``). Our connection must deliver the same
messages and end with the same close code.

Most examples run over ``trio.testing.memory_stream_pair`` (fast); a few go
over real loopback sockets. The budget is the hypothesis profile: ``ci``
(small, derandomized, the default) or ``deep``, chosen with the
``HYPOTHESIS_PROFILE`` environment variable::

    HYPOTHESIS_PROFILE=deep .venv/bin/python -m pytest tests/test_fuzzing.py
"""

from __future__ import annotations

import codecs
import logging
import os
import re
import struct
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import trio
import trio.testing
from early_text import ArrivingFrame, InProgress, refused_early
from frame_strategies import deflate, frames
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from raw_http import HOST, upgrade_request
from raw_peer import (
    BINARY,
    CLOSE,
    CONT,
    LIMIT,
    PING,
    PONG,
    TEXT,
    accept_key,
    close_payload,
    serve_limited,
    wire_frame,
)
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import Protocol, State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketRequest,
    open_websocket_url,
    wrap_client_stream,
    wrap_server_stream,
)
from trio_websocket._engine import between_frames
from trio_websocket._settings import Compression, Settings

# -- Budget ------------------------------------------------------------------

settings.register_profile(
    "ci",
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "deep",
    max_examples=2000,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

#: Examples for the (slower) loopback tests: a quarter of the profile's.
LOOPBACK_EXAMPLES = max(5, settings().max_examples // 4)

#: Bound on one example's duration: a bug fails, never hangs.
BOUND = 5
DEFLATE_OFFER = (
    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
)

T = TypeVar("T")
Message = str | bytes


# -- Running one example -----------------------------------------------------


class _ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def no_error_logs() -> Iterator[None]:
    """Nothing a peer sends is an internal error of ours."""
    handler = _ErrorRecords()
    logger = logging.getLogger("trio-websocket")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in handler.records] == []


def run(fn: Callable[[], Awaitable[T]]) -> T:
    """Run one example in a fresh Trio run, bounded, checking the logs."""

    async def bounded() -> T:
        with trio.fail_after(BOUND):
            return await fn()

    with no_error_logs():
        return trio.run(bounded)


# -- Hand-built frames -------------------------------------------------------


def parse_frames(data: bytes) -> list[tuple[int, bytes]]:
    """The (opcode, payload) of every whole unmasked-or-masked frame in data."""
    frames, at = [], 0
    while at + 2 <= len(data):
        first, second = data[at], data[at + 1]
        size, at = second & 0x7F, at + 2
        if size == 126:
            (size,) = struct.unpack("!H", data[at : at + 2])
            at += 2
        elif size == 127:
            (size,) = struct.unpack("!Q", data[at : at + 8])
            at += 8
        key = data[at : at + 4] if second & 0x80 else b"\0\0\0\0"
        at += 4 if second & 0x80 else 0
        if at + size > len(data):
            break
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(data[at : at + size]))
        frames.append((first & 0x0F, payload))
        at += size
    return frames


# -- Strategies --------------------------------------------------------------

close_codes = st.sampled_from(
    [
        *(1000, 1001, 1002, 1003, 1007, 1008, 1011, 3000, 4999),
        *(0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535),
    ]
)
payloads = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=40).map(str.encode),
    st.sampled_from([b"\xff", b"\xed\xa0\x80", b"\xc3", b"\xf4\x90\x80\x80"]),
    st.integers(LIMIT - 2, LIMIT + 2).map(lambda n: b"x" * n),
)
close_payloads = st.one_of(
    st.builds(close_payload, close_codes, st.text(max_size=10).map(str.encode)),
    st.builds(close_payload, close_codes, st.binary(max_size=4)),
    st.binary(max_size=3),
)


def fuzz_frames(*, masked: bool, deflate_on: bool) -> st.SearchStrategy[bytes]:
    """One frame, mostly well-formed, with every field open to mischief."""
    return frames(
        masked=masked,
        deflate_on=deflate_on,
        data_payloads=payloads,
        close_payloads=close_payloads,
    )


def pieces(*, masked: bool, deflate_on: bool) -> st.SearchStrategy[list[bytes]]:
    """What a hostile peer sends after the handshake, a list of writes."""
    piece = st.one_of(
        *[fuzz_frames(masked=masked, deflate_on=deflate_on)] * 6,
        st.binary(min_size=1, max_size=16),
        st.sampled_from(
            [b"\x82\xff" + b"\x7f" + b"\xff" * 7, b"\x81\xfe\xff\xff", b"\x88\x80"]
        ),
    )
    return st.lists(piece, max_size=6)


# -- The oracle: the websockets engine plus a minimal message layer ----------


class _CloseBetweenFragments(Protocol):
    """RFC 6455 5.4: a close between fragments is a close (documented)."""

    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.CLOSE:
            self.current_size = None
        super().recv_frame(frame)


class OracleServer(_CloseBetweenFragments, ServerProtocol):
    pass


class OracleClient(_CloseBetweenFragments, ClientProtocol):
    pass


@dataclass
class Outcome:
    """What the application saw: its messages, then the close code."""

    messages: list[Message] = field(default_factory=list)
    code: int | None = None


class _Messages:
    """Messages from frames: size limit first, then UTF-8, fragment by fragment."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._size = 0
        self._parts: list[Message] = []
        self._decoder: codecs.IncrementalDecoder | None = None
        self._unfinished = False

    def in_progress(self) -> InProgress | None:
        """The fragmented message in progress, if any."""
        return InProgress(self._decoder, self._size) if self._unfinished else None

    def feed(self, frame: Frame) -> int | None:
        """Take a data frame; return a close code if it fails the connection."""
        if frame.opcode is not Opcode.CONT:
            self._size, self._parts = 0, []
            text = frame.opcode is Opcode.TEXT
            self._decoder = codecs.getincrementaldecoder("utf-8")() if text else None
        self._size += len(frame.data)
        self._unfinished = not frame.fin
        if self._size > LIMIT:
            return 1009
        part: Message = bytes(frame.data)
        if self._decoder is not None:
            try:
                part = self._decoder.decode(frame.data, frame.fin)
            except UnicodeDecodeError:
                return 1007
        self._parts.append(part)
        if frame.fin:
            first = self._parts[0]
            joined: Message = (
                "".join(p for p in self._parts if isinstance(p, str))
                if isinstance(first, str)
                else b"".join(p for p in self._parts if isinstance(p, bytes))
            )
            self.messages.append(joined)
        return None


def oracle_outcome(protocol: Protocol, chunks: Sequence[bytes]) -> Outcome:
    """Feed ``chunks`` (b"" for the end of the stream) to the engine.

    The engine parses a whole chunk before the message layer sees its
    frames, so a frame the engine fails on can overtake a message refused
    before it. Where our connection parses frames itself (no extension, and
    the handshake's chunk ended between frames, outside a message), it
    handles them in order: the oracle then feeds the engine byte by byte.
    """
    layer = _Messages()
    in_order = False
    arriving = ArrivingFrame()
    for chunk in chunks:
        opening = protocol.state is State.CONNECTING
        if in_order and chunk:
            if _feed_in_order(protocol, layer, chunk, arriving):
                break
        elif _feed(protocol, layer, chunk):
            break
        if opening and protocol.state is State.OPEN:
            in_order = not protocol.extensions and _between_messages(protocol)
    received, sent = protocol.close_rcvd, protocol.close_sent
    code = received.code if received else sent.code if sent else 1006
    return Outcome(layer.messages, code)


def _feed_in_order(
    protocol: Protocol, layer: _Messages, chunk: bytes, arriving: ArrivingFrame
) -> bool:
    """Feed one read byte by byte, then check the text of a frame still
    arriving, as our codec does; True if the connection failed."""
    for i in range(len(chunk)):
        byte = chunk[i : i + 1]
        if _feed(protocol, layer, byte):
            return True
        arriving.track(protocol, byte)
    if protocol.state is not State.OPEN:
        return False
    reason = refused_early(arriving.data, layer.in_progress(), LIMIT)
    if reason is None:
        return False
    protocol.fail(1007, reason)
    protocol.data_to_send()
    return True


def _between_messages(protocol: Protocol) -> bool:
    """Whether the engine waits for a frame, with no message in progress."""
    return (
        not protocol.reader.buffer
        and between_frames(protocol.parser)
        and protocol.current_size is None
    )


def _feed(protocol: Protocol, layer: _Messages, data: bytes) -> bool:
    """Feed ``data`` (b"" for the end); True if the layer failed the engine."""
    if data:
        protocol.receive_data(data)
    else:
        protocol.receive_eof()
    failed = False
    for item in protocol.events_received():
        if isinstance(item, Request):
            assert isinstance(protocol, ServerProtocol)
            protocol.send_response(protocol.accept(item))
        elif isinstance(item, Frame) and item.opcode in (
            Opcode.TEXT,
            Opcode.BINARY,
            Opcode.CONT,
        ):
            code = layer.feed(item)
            if code is not None:
                protocol.fail(code)
                failed = True
                break
    protocol.data_to_send()
    return failed


def oracle_server(compression: Compression) -> OracleServer:
    config = Settings(max_message_size=LIMIT, compression=compression)
    return OracleServer(
        extensions=config.server_extensions(), max_size=config.engine_max_size
    )


def oracle_client(compression: Compression, key: str | None) -> OracleClient:
    """A client engine expecting the answer to ``key``; already open if None."""
    config = Settings(max_message_size=LIMIT, compression=compression)
    client = OracleClient(
        parse_uri("ws://localhost/"),
        extensions=config.client_extensions(),
        max_size=config.engine_max_size,
        state=State.CONNECTING if key else State.OPEN,
    )
    if key:
        client.connect()
        client.key = key
    return client


# -- Streams -----------------------------------------------------------------


class RecordingStream(trio.abc.HalfCloseableStream):
    """A stream that records every chunk it receives (b"" for the end)."""

    def __init__(self, stream: trio.abc.HalfCloseableStream) -> None:
        self.stream = stream
        self.chunks: list[bytes] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = bytes(await self.stream.receive_some(max_bytes))
        self.chunks.append(data)
        return data

    async def aclose(self) -> None:
        await self.stream.aclose()


class Reader:
    """A receive stream with a buffer, for reading HTTP heads by hand."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def head(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            data = await self.stream.receive_some()
            if not data:
                break
            self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        end = len(self.buffer) if end < 0 else end + 4
        head = bytes(self.buffer[:end])
        del self.buffer[:end]
        return head

    async def rest(self) -> bytes:
        """Everything up to the end of the stream (which must come)."""
        while data := await self.stream.receive_some():
            self.buffer += data
        rest = bytes(self.buffer)
        self.buffer.clear()
        return rest


async def send_then_eof(
    stream: trio.abc.HalfCloseableStream, writes: Sequence[bytes]
) -> None:
    """Send ``writes`` then EOF, unless the other side hangs up first."""
    try:
        for data in writes:
            await stream.send_all(data)
        await stream.send_eof()
    except trio.BrokenResourceError:
        pass  # our connection failed the peer and closed: its right


async def collect(ws_messages: Callable[[], Awaitable[Message]]) -> Outcome:
    """Read messages until ConnectionClosed; any other exception escapes."""
    outcome = Outcome()
    try:
        while True:
            outcome.messages.append(await ws_messages())
    except ConnectionClosed as exc:
        assert isinstance(exc.reason, CloseReason)
        outcome.code = exc.reason.code
    return outcome


def response_101(request_head: bytes, extensions: str = "") -> bytes:
    match = re.search(rb"\r\nsec-websocket-key: *([^\r]*)\r\n", request_head, re.I)
    assert match is not None
    return (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        + extensions.encode()
        + b"Sec-WebSocket-Accept: "
        + accept_key(match.group(1))
        + b"\r\n\r\n"
    )


def client_key(request_head: bytes) -> str:
    match = re.search(rb"\r\nsec-websocket-key: *([^\r]*)\r\n", request_head, re.I)
    assert match is not None
    return match.group(1).decode()


# -- Our server over memory streams ------------------------------------------


@dataclass
class ServerRun:
    outcome: Outcome
    chunks: list[bytes]
    wire: bytes  # what the server sent after its 101


async def drive_server(
    writes: Sequence[bytes], compression: Compression, request: bytes
) -> ServerRun:
    """A valid handshake with our server, then ``writes``, then EOF."""
    raw, server_end = trio.testing.memory_stream_pair()
    recording = RecordingStream(server_end)
    result: list[Outcome] = []
    async with trio.open_nursery() as nursery:

        async def serve() -> None:
            req = await wrap_server_stream(
                nursery, recording, max_message_size=LIMIT, compression=compression
            )
            ws = await req.accept()
            result.append(await collect(ws.get_message))

        nursery.start_soon(serve)
        reader = Reader(raw)
        await raw.send_all(request)
        assert (await reader.head()).startswith(b"HTTP/1.1 101 ")
        await send_then_eof(raw, writes)
        wire = await reader.rest()
    return ServerRun(result[0], recording.chunks, wire)


@given(
    writes=pieces(masked=True, deflate_on=False),
    compression=st.sampled_from(["deflate", None]),
)
@example(writes=[wire_frame(BINARY, b"ok")], compression=None)
def test_server_on_arbitrary_bytes_after_the_handshake(
    writes: list[bytes], compression: Compression
) -> None:
    offer = DEFLATE_OFFER if compression else ""
    got = run(partial(drive_server, writes, compression, upgrade_request(extra=offer)))
    expected = oracle_outcome(oracle_server(compression), got.chunks)
    event(f"close code {expected.code}")
    assert got.outcome == expected
    if got.outcome.code in (1002, 1007, 1009):
        # We failed the connection: our close frame says why.
        closes = [p for op, p in parse_frames(got.wire) if op == CLOSE]
        assert [struct.unpack("!H", p[:2])[0] for p in closes] == [got.outcome.code]


@given(writes=pieces(masked=True, deflate_on=True))
def test_server_with_deflate_on_arbitrary_bytes(writes: list[bytes]) -> None:
    request = upgrade_request(extra=DEFLATE_OFFER)
    got = run(partial(drive_server, writes, "deflate", request))
    expected = oracle_outcome(oracle_server("deflate"), got.chunks)
    event(f"close code {expected.code}")
    assert got.outcome == expected


# -- Our client over memory streams ------------------------------------------


@dataclass
class ClientRun:
    outcome: Outcome | BaseException
    chunks: list[bytes]
    key: str


async def drive_client(
    answer: Callable[[bytes], bytes],
    writes: Sequence[bytes],
    compression: Compression,
    together: bool,
) -> ClientRun:
    """Our client against a raw server that answers ``answer(request)``."""
    raw, client_end = trio.testing.memory_stream_pair()
    recording = RecordingStream(client_end)
    result: list[Outcome | BaseException] = []
    keys: list[str] = []
    async with trio.open_nursery() as nursery:

        async def connect() -> None:
            try:
                ws = await wrap_client_stream(
                    nursery,
                    recording,
                    "localhost",
                    "/",
                    max_message_size=LIMIT,
                    compression=compression,
                )
            except HandshakeError as exc:
                result.append(exc)
                await recording.aclose()
                return
            result.append(await collect(ws.get_message))

        nursery.start_soon(connect)
        reader = Reader(raw)
        head = await reader.head()
        keys.append(client_key(head))
        response = answer(head)
        if together:
            await send_then_eof(raw, [response + b"".join(writes)])
        else:
            await send_then_eof(raw, [response, *writes])
        await reader.rest()
    return ClientRun(result[0], recording.chunks, keys[0])


@given(
    writes=pieces(masked=False, deflate_on=True),
    compression=st.sampled_from(["deflate", None]),
    together=st.booleans(),
)
def test_client_on_arbitrary_bytes_after_the_handshake(
    writes: list[bytes], compression: Compression, together: bool
) -> None:
    extensions = (
        "Sec-WebSocket-Extensions: permessage-deflate\r\n" if compression else ""
    )
    got = run(
        partial(
            drive_client,
            partial(response_101, extensions=extensions),
            writes,
            compression,
            together,
        )
    )
    expected = oracle_outcome(oracle_client(compression, got.key), got.chunks)
    event(f"close code {expected.code}")
    assert got.outcome == expected


# -- Handshakes --------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, valid: bytes) -> bytes:
    """A valid HTTP head, mutated: lines added, dropped, garbled, cut, huge."""
    first, *lines = valid.split(b"\r\n")[:-2]  # without the blank line
    header_line = st.builds(
        lambda name, value: name + b": " + value,
        st.sampled_from(
            [
                *(b"Upgrade", b"Connection", b"Sec-WebSocket-Key", b"Host"),
                *(b"Sec-WebSocket-Version", b"Sec-WebSocket-Extensions"),
                *(b"Sec-WebSocket-Accept", b"Content-Length", b"Transfer-Encoding"),
                *(b"X-Thing", b"Bad Name"),
            ]
        ),
        st.one_of(
            st.binary(max_size=30),
            st.sampled_from(
                [
                    *(b"websocket", b"Upgrade", b"13", b"permessage-deflate", b"0"),
                    *(b"permessage-deflate; server_max_window_bits=7", b"foo"),
                    *(b"x" * 9000, b"chunked", b"100"),
                ]
            ),
        ),
    )
    if draw(st.integers(0, 9)) == 0:
        first = draw(st.binary(max_size=30) | st.just(first[:-1]))
    for _ in range(draw(st.sampled_from([0, 1, 1, 2, 3]))):
        action = draw(st.sampled_from(["add", "add", "drop", "garble", "many"]))
        at = draw(st.integers(0, len(lines)))
        if action == "add":
            lines.insert(at, draw(header_line))
        elif action == "drop" and lines:
            del lines[min(at, len(lines) - 1)]
        elif action == "garble" and lines:
            lines[min(at, len(lines) - 1)] = draw(st.binary(max_size=40))
        elif action == "many":
            lines[at:at] = [b"X-Many: m"] * draw(st.sampled_from([10, 150]))
    data = b"\r\n".join([first, *lines, b"", b""])
    if draw(st.integers(0, 9)) == 0:
        data = data[: draw(st.integers(0, len(data)))]
    if draw(st.integers(0, 9)) == 0:
        data += draw(st.binary(max_size=20))
    return data


VALID_REQUEST = upgrade_request(extra=DEFLATE_OFFER)


async def server_handshake(request: bytes) -> int | None:
    """Send ``request`` then EOF; return our server's status, if it answered."""
    raw, server_end = trio.testing.memory_stream_pair()
    recording = RecordingStream(server_end)
    accepted: list[WebSocketRequest] = []
    async with trio.open_nursery() as nursery:

        async def serve() -> None:
            try:
                req = await wrap_server_stream(nursery, recording)
            except HandshakeError:
                return
            accepted.append(req)
            ws = await req.accept()
            await collect(ws.get_message)

        nursery.start_soon(serve)
        await send_then_eof(raw, [request])
        response = await Reader(raw).rest()
    status = int(response.split(b" ", 2)[1]) if response else None
    assert bool(accepted) == (status == 101)
    return status


@given(request=mutated(VALID_REQUEST))
@example(request=VALID_REQUEST)
def test_server_on_arbitrary_handshake_requests(request: bytes) -> None:
    status = run(partial(server_handshake, request))
    event(f"status {status}")
    oracle = oracle_server("deflate")
    oracle.receive_data(request)
    oracle.receive_eof()
    events = oracle.events_received()
    oracle_accepts = (
        bool(events)
        and isinstance(events[0], Request)
        and oracle.accept(events[0]).status_code == 101
    )
    if oracle_accepts:
        assert status == 101
    else:
        # Refused with an HTTP error, or dropped when it never ended.
        assert status is None or 400 <= status <= 599
        assert status != 101


VALID_RESPONSE_TEMPLATE = (
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate\r\n"
    b"Sec-WebSocket-Accept: KEY\r\n\r\n"
)


@given(
    response=mutated(VALID_RESPONSE_TEMPLATE),
    status_line=st.sampled_from(
        [
            *(b"", b"", b"HTTP/1.1 403 Forbidden", b"HTTP/1.1 200 OK"),
            *(b"HTTP/1.0 101 X", b"HTTP/1.1 999 Weird", b"HTTP/1.1 101"),
            *(b"HTTP/1.1 1O1 X", b"ICY 200 OK"),
        ]
    ),
    body=st.binary(max_size=10),
)
@example(response=VALID_RESPONSE_TEMPLATE, status_line=b"", body=b"")
def test_client_on_arbitrary_handshake_responses(
    response: bytes, status_line: bytes, body: bytes
) -> None:
    if status_line and response.startswith(b"HTTP/1.1 101 Switching Protocols"):
        response = status_line + response[len(b"HTTP/1.1 101 Switching Protocols") :]
    response += body

    def answer_to(key: str) -> bytes:
        return response.replace(b"KEY", accept_key(key.encode()))

    def answer(request_head: bytes) -> bytes:
        return answer_to(client_key(request_head))

    got = run(partial(drive_client, answer, [], "deflate", True))
    oracle = oracle_client("deflate", got.key)
    oracle.receive_data(answer_to(got.key))
    oracle.receive_eof()
    oracle.events_received()
    failure = oracle.handshake_exc
    event(f"oracle: {type(failure).__name__}")
    if failure is None:
        # Accepted: what follows the 101 (``body``) is frames.
        expected = oracle_outcome(oracle_client("deflate", got.key), got.chunks)
        assert got.outcome == expected
    elif isinstance(failure, InvalidStatus):
        assert isinstance(got.outcome, ConnectionRejected), got.outcome
        assert got.outcome.status_code == failure.response.status_code
    else:
        assert isinstance(got.outcome, HandshakeError), got.outcome


# -- Valid messages, arbitrarily fragmented ----------------------------------


@dataclass
class Plan:
    """Messages, the frames that carry them, and the pings among those."""

    messages: list[Message]
    frames: list[bytes]
    pings: list[bytes]
    code: int = 1000


@st.composite
def fragmented(draw: st.DrawFn, *, masked: bool, deflate_on: bool) -> Plan:
    plan = Plan([], [], [])
    for _ in range(draw(st.integers(1, 4))):
        message: Message = draw(
            st.text(max_size=60) | st.binary(max_size=LIMIT) | st.just("é€😀" * 10)
        )
        data = message.encode() if isinstance(message, str) else message
        compressed = deflate_on and draw(st.booleans())
        wire = deflate(data) if compressed else data
        cuts = sorted(draw(st.lists(st.integers(0, len(wire)), max_size=5)))
        parts = cut(wire, cuts)
        for i, part in enumerate(parts):
            if i and draw(st.integers(0, 2)) == 0:
                ping = draw(st.binary(max_size=125))
                plan.pings.append(ping)
                plan.frames.append(wire_frame(PING, ping, key=mask_key(draw, masked)))
            opcode = CONT if i else TEXT if isinstance(message, str) else BINARY
            plan.frames.append(
                wire_frame(
                    opcode,
                    part,
                    fin=i == len(parts) - 1,
                    rsv=4 if compressed and not i else 0,
                    key=mask_key(draw, masked),
                )
            )
        plan.messages.append(message)
    plan.code = draw(st.sampled_from([1000, 1001, 4000]))
    close = close_payload(plan.code)
    plan.frames.append(wire_frame(CLOSE, close, key=mask_key(draw, masked)))
    return plan


def mask_key(draw: st.DrawFn, masked: bool) -> bytes | None:
    return draw(st.binary(min_size=4, max_size=4)) if masked else None


def cut(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the (sorted) offsets ``cuts``: parts may be empty."""
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def writes_of(data: bytes) -> st.SearchStrategy[list[bytes]]:
    """``data`` split into arbitrary non-empty writes."""
    offsets = st.lists(st.integers(0, len(data)), max_size=8)
    return offsets.map(lambda cuts: [p for p in cut(data, sorted(cuts)) if p])


@given(data=st.data(), compression=st.sampled_from(["deflate", None]))
def test_server_reassembles_arbitrary_fragments(
    data: st.DataObject, compression: Compression
) -> None:
    plan = data.draw(fragmented(masked=True, deflate_on=bool(compression)))
    writes = data.draw(writes_of(b"".join(plan.frames)))
    offer = DEFLATE_OFFER if compression else ""
    got = run(partial(drive_server, writes, compression, upgrade_request(extra=offer)))
    assert got.outcome == Outcome(plan.messages, plan.code)
    answers = parse_frames(got.wire)
    assert [p for op, p in answers if op == PONG] == plan.pings
    assert answers[-1] == (CLOSE, close_payload(plan.code))


@given(data=st.data(), compression=st.sampled_from(["deflate", None]))
def test_client_reassembles_arbitrary_fragments(
    data: st.DataObject, compression: Compression
) -> None:
    plan = data.draw(fragmented(masked=False, deflate_on=bool(compression)))
    writes = data.draw(writes_of(b"".join(plan.frames)))
    extensions = (
        "Sec-WebSocket-Extensions: permessage-deflate\r\n" if compression else ""
    )
    answer = partial(response_101, extensions=extensions)
    got = run(partial(drive_client, answer, writes, compression, False))
    assert got.outcome == Outcome(plan.messages, plan.code)


# -- Over real loopback sockets ----------------------------------------------


async def loopback_server(writes: Sequence[bytes]) -> Outcome:
    """serve_websocket on 127.0.0.1; a raw client sends ``writes`` then EOF."""
    outcomes: list[Outcome] = []
    done = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        outcomes.append(await collect(ws.get_message))
        done.set()

    async with trio.open_nursery() as nursery:
        server = await serve_limited(nursery, handler, compression=None)
        stream = await trio.open_tcp_stream(HOST, server.port)
        async with stream:
            reader = Reader(stream)
            await stream.send_all(upgrade_request())
            assert (await reader.head()).startswith(b"HTTP/1.1 101 ")
            await send_then_eof(stream, writes)
            await reader.rest()
        await done.wait()
        nursery.cancel_scope.cancel()
    return outcomes[0]


# Valid frames, then one arbitrary last write: whatever the chunks the
# socket delivers, the outcome is then the oracle's for the whole input.
valid_frames = st.lists(
    st.one_of(
        st.builds(lambda p: wire_frame(BINARY, p), st.binary(max_size=50)),
        st.builds(lambda p: wire_frame(TEXT, p.encode()), st.text(max_size=20)),
        st.builds(lambda p: wire_frame(PING, p), st.binary(max_size=20)),
    ),
    max_size=3,
)
last_write = st.one_of(
    fuzz_frames(masked=True, deflate_on=False), st.binary(min_size=1, max_size=16)
)


@settings(max_examples=LOOPBACK_EXAMPLES)
@given(first=valid_frames, last=last_write)
def test_loopback_server_on_arbitrary_bytes(first: list[bytes], last: bytes) -> None:
    got = run(partial(loopback_server, [*first, last]))
    oracle = oracle_server(None)
    expected = oracle_outcome(
        oracle, [VALID_REQUEST.replace(DEFLATE_OFFER.encode(), b""), *first, last, b""]
    )
    assert got == expected


async def loopback_client(writes: Sequence[bytes]) -> Outcome:
    """open_websocket_url against a raw server that sends ``writes``."""

    async def behave(stream: trio.SocketStream) -> None:
        async with stream:
            reader = Reader(stream)
            await send_then_eof(stream, [response_101(await reader.head()), *writes])
            await reader.rest()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, behave, 0, host=HOST))
        port = listeners[0].socket.getsockname()[1]
        url = f"ws://{HOST}:{port}/"
        async with open_websocket_url(
            url, max_message_size=LIMIT, compression=None
        ) as ws:
            outcome = await collect(ws.get_message)
        nursery.cancel_scope.cancel()
    return outcome


unmasked_valid_frames = st.lists(
    st.one_of(
        st.builds(lambda p: wire_frame(BINARY, p, key=None), st.binary(max_size=50)),
        st.builds(lambda p: wire_frame(PING, p, key=None), st.binary(max_size=20)),
    ),
    max_size=3,
)


@settings(max_examples=LOOPBACK_EXAMPLES)
@given(
    first=unmasked_valid_frames,
    last=st.one_of(
        fuzz_frames(masked=False, deflate_on=False),
        st.binary(min_size=1, max_size=16),
    ),
)
def test_loopback_client_on_arbitrary_bytes(first: list[bytes], last: bytes) -> None:
    got = run(partial(loopback_client, [*first, last]))
    oracle = oracle_client(None, None)
    expected = oracle_outcome(oracle, [*first, last, b""])
    assert got == expected


# -- A bug fuzzing found, kept as an example ------------------------------------


@given(side=st.sampled_from(["client", "server"]))
@example(side="client")
@example(side="server")
def test_nothing_is_delivered_after_a_refused_message(side: str) -> None:
    masked = side == "server"
    key = b"\x01\x02\x03\x04" if masked else None
    # Invalid UTF-8, then an empty text message, in a single write.
    writes = [wire_frame(TEXT, b"\xff", key=key) + wire_frame(TEXT, b"", key=key)]
    got: ServerRun | ClientRun
    if masked:
        got = run(partial(drive_server, writes, None, upgrade_request()))
    else:
        got = run(partial(drive_client, response_101, writes, None, False))
    assert got.outcome == Outcome([], 1007)


#: Frames, the last of which stops after a few bytes of its payload, and the
#: close code.
UNFINISHED = [
    ([(TEXT, b"ok\xff" + b"x" * 20, 0)], 3, 1007),
    ([(TEXT, b"ok\xc3\xa9" + b"x" * 20, 0)], 3, 1006),  # valid so far
    ([(TEXT, b"\xc3", 0), (CONT, b"(x", 0)], 1, 1007),
    ([(TEXT, b"\xff" * (LIMIT + 1), 0)], 4, 1006),  # 1009 once complete
    ([(TEXT, b"\xff" * 10, 4)], 4, 1006),  # 1002 once complete
    ([(BINARY, b"\xff" * 10, 0)], 4, 1006),
]


def unfinished(frames: list[tuple[int, bytes, int]], keep: int, masked: bool) -> bytes:
    """``frames`` (opcode, payload, rsv; all but the last not final), the
    last one cut after ``keep`` bytes of its payload."""
    key = b"\x01\x02\x03\x04" if masked else None
    data = [
        wire_frame(op, payload, rsv=rsv, fin=i == len(frames) - 1, key=key)
        for i, (op, payload, rsv) in enumerate(frames)
    ]
    cut = len(data[-1]) - len(frames[-1][1]) + keep
    return b"".join(data[:-1]) + data[-1][:cut]


@given(
    case=st.sampled_from(UNFINISHED),
    side=st.sampled_from(["client", "server"]),
    cut=st.integers(0, 20),
)
def test_text_refused_as_it_arrives(
    case: tuple[list[tuple[int, bytes, int]], int, int], side: str, cut: int
) -> None:
    """The oracle's model of early UTF-8 checks, pinned on known cases."""
    frames, keep, code = case
    data = unfinished(frames, keep, masked=side == "server")
    writes = [data[:cut], data[cut:]] if 0 < cut < len(data) else [data]
    got: ServerRun | ClientRun
    if side == "server":
        got = run(partial(drive_server, writes, None, upgrade_request()))
        expected = oracle_outcome(oracle_server(None), got.chunks)
    else:
        got = run(partial(drive_client, response_101, writes, None, False))
        expected = oracle_outcome(oracle_client(None, got.key), got.chunks)
    assert expected == got.outcome == Outcome([], code)
