"""Our frame codec (``trio_websocket/_frames.py``) against the engine.

The unit tests pin the wire format: every length form, masking, headers
split anywhere, empty frames. The differential tests feed the same byte
streams, cut into arbitrary reads, to the bare engine and to our codec
(which hands control frames to an engine, as the connection does) and
require the same data frames, the same close frames either way and the
same final state, on both sides; the payload our codec hands over while a
frame arrives must be the start of that frame, which then passes every
check. ``tests/test_fuzzing.py`` compares whole
connections with the engine; here whole connections running the codec are
also compared with connections that leave every frame to the engine, with
and without permessage-deflate; there, our connection refuses invalid text
while its frame arrives (see ``early_text``), where the engine waits for
the whole frame.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing
from early_text import ArrivingFrame, InProgress, refused_early
from frame_strategies import LIMIT, pieces, splits, streams
from hypothesis import event, given, settings
from hypothesis import strategies as st
from raw_http import upgrade_request
from raw_peer import (
    BINARY,
    CLOSE,
    CONT,
    PING,
    TEXT,
    close_payload,
    upgrade_response,
    wire_frame,
)
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN, Protocol
from websockets.uri import parse_uri

from trio_websocket import (
    ConnectionClosed,
    _frames,
    wrap_client_stream,
    wrap_server_stream,
)
from trio_websocket._connection import WebSocketConnection
from trio_websocket._engine import ClientEngine, ServerEngine
from trio_websocket._frames import (
    CONTROL,
    DATA,
    FAILED,
    NEED_DATA,
    FrameReader,
    encode_frame,
)
from trio_websocket._settings import Compression, Settings

KEY = b"\x01\x02\x03\x04"
_utf8 = codecs.getincrementaldecoder("utf-8")
LIMITS = Settings(max_message_size=LIMIT, compression=None)

# -- Units ---------------------------------------------------------------------


def reader(*, masked: bool = True, max_message: int = -1) -> FrameReader:
    return FrameReader(masked=masked, max_message=max_message, max_fragment=-1)


def parse_all(frames: FrameReader, chunks: Sequence[bytes]) -> list[object]:
    """Everything the reader finds in ``chunks``, as comparable tuples."""
    found: list[object] = []
    for chunk in chunks:
        frames.feed(chunk)
        while (kind := frames.next_frame()) != NEED_DATA:
            if kind == DATA:
                found.append((frames.opcode, frames.payload, frames.fin))
            elif kind == CONTROL:
                found.append(frames.frame)
            else:
                found.append((frames.error_code, frames.error_reason))
                return found
    return found


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
@pytest.mark.parametrize("masked", [True, False])
def test_every_length_form_is_parsed(size: int, masked: bool) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    data = wire_frame(BINARY, payload, key=KEY if masked else None)
    assert parse_all(reader(masked=masked), [data]) == [(BINARY, payload, True)]


@pytest.mark.parametrize("size", [3, 200, 70000])
def test_a_frame_split_at_every_byte_of_its_header(size: int) -> None:
    payload = b"abcdefgh" * (size // 8) + b"x" * (size % 8)
    data = wire_frame(TEXT, payload, key=KEY) + wire_frame(BINARY, b"next", key=KEY)
    for at in range(1, 16):
        found = parse_all(reader(), [data[:at], data[at:]])
        assert found == [(TEXT, payload, True), (BINARY, b"next", True)], at


def test_a_frame_arriving_byte_by_byte() -> None:
    data = wire_frame(TEXT, b"hello", key=KEY, fin=False) + wire_frame(
        CONT, b"", key=KEY
    )
    chunks = [data[i : i + 1] for i in range(len(data))]
    assert parse_all(reader(), chunks) == [(TEXT, b"hello", False), (CONT, b"", True)]


def test_what_is_missing_of_a_large_frame() -> None:
    frames = reader()
    data = wire_frame(BINARY, b"x" * 1000, key=KEY)
    frames.feed(data[:100])
    assert frames.next_frame() == NEED_DATA
    assert frames.missing == len(data) - 100
    frames.feed(data[100:])
    assert frames.next_frame() == DATA and frames.missing == 0


def test_control_frames_are_returned_whole_and_masked() -> None:
    ping = wire_frame(PING, b"are you there", key=KEY)
    assert parse_all(reader(), [ping[:3], ping[3:]]) == [ping]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (wire_frame(3, b"", key=KEY), "invalid opcode"),
        (wire_frame(BINARY, b"", key=None), "incorrect masking"),
        (wire_frame(BINARY, b"", rsv=4, key=KEY), "reserved bits must be 0"),
        (wire_frame(CONT, b"", key=KEY), "unexpected continuation frame"),
        (
            wire_frame(TEXT, b"", fin=False, key=KEY) + wire_frame(TEXT, b"", key=KEY),
            "expected a continuation frame",
        ),
    ],
)
def test_protocol_errors(data: bytes, reason: str) -> None:
    assert parse_all(reader(), [data])[-1] == (1002, reason)


def test_a_frame_over_the_limit_fails_at_its_header() -> None:
    first = wire_frame(BINARY, b"x" * 60, fin=False, key=KEY)
    header_only = wire_frame(CONT, b"y" * 41, key=KEY)[:2]
    found = parse_all(reader(max_message=100), [first + header_only])
    reason = "frame with 41 bytes after reading 60 bytes exceeds limit of 100 bytes"
    assert found[-1] == (1009, reason)


def test_the_rest_goes_back_to_the_engine() -> None:
    frames = reader()
    ping = wire_frame(PING, b"", key=KEY)
    frames.feed(ping + b"\x82")
    assert frames.next_frame() == CONTROL
    assert frames.next_frame() == NEED_DATA
    assert frames.take_rest() == b"\x82"
    assert frames.next_frame() == NEED_DATA


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536, 100000])
@pytest.mark.parametrize("mask", [True, False])
def test_encoded_frames_parse_as_the_engine_parses_them(size: int, mask: bool) -> None:
    payload = os.urandom(size)
    head, body = encode_frame(Opcode.BINARY, payload, mask)
    engine = Protocol(_SERVER if mask else _CLIENT, max_size=None)
    engine.receive_data(head + bytes(body))
    [frame] = engine.events_received()
    assert isinstance(frame, Frame)
    assert (frame.opcode, frame.data, frame.fin) == (Opcode.BINARY, payload, True)
    assert (body == b"") == (size < _frames.JOIN_BELOW)
    if not mask and body:
        assert body is payload  # a large payload is written as it is


_SERVER = ServerEngine(state=OPEN).side
_CLIENT = ClientEngine(parse_uri("ws://x/"), state=OPEN).side


# -- Differential: the codec against the bare engine ---------------------------


@dataclass
class Run:
    """Everything observable: frames delivered, then how the engine ended."""

    frames: list[tuple[int, bytes, bool]] = field(default_factory=list)
    ending: tuple[object, ...] = ()


def make_engine(server: bool) -> Protocol:
    max_size = LIMITS.engine_max_size
    if server:
        return ServerEngine(state=OPEN, max_size=max_size)
    return ClientEngine(parse_uri("ws://x/"), state=OPEN, max_size=max_size)


def collect(engine: Protocol, run: Run) -> list[Frame]:
    events = [e for e in engine.events_received() if isinstance(e, Frame)]
    run.frames += [(int(e.opcode), bytes(e.data), e.fin) for e in events]
    return events


def finish(engine: Protocol, run: Run) -> Run:
    engine.receive_eof()
    collect(engine, run)
    sent, received = engine.close_sent, engine.close_rcvd
    run.ending = (
        engine.state,
        sent and sent.code,
        received and received.code,
        [unmasked(chunk) for chunk in engine.data_to_send()],
    )
    return run


def unmasked(chunk: bytes) -> bytes:
    """A frame the engine wrote (b"" for the end), with its random mask undone."""
    if not chunk or not chunk[1] & 0x80:
        return chunk
    key, payload = chunk[2:6], chunk[6:]  # control frames: short lengths only
    return chunk[:2] + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def by_engine(server: bool, chunks: Sequence[bytes]) -> Run:
    engine, run = make_engine(server), Run()
    for chunk in chunks:
        engine.receive_data(chunk)
        collect(engine, run)
    return finish(engine, run)


def by_codec(server: bool, chunks: Sequence[bytes]) -> Run:
    """What the connection does: data frames ours, the rest the engine's."""
    engine, run = make_engine(server), Run()
    max_message, max_fragment = LIMITS.engine_max_size
    frames: FrameReader | None = FrameReader(
        masked=server,
        max_message=-1 if max_message is None else max_message,
        max_fragment=-1 if max_fragment is None else max_fragment,
    )
    early = bytearray()  # handed over of the frame being read
    for chunk in chunks:
        if frames is None:
            engine.receive_data(chunk)
            collect(engine, run)
            continue
        frames.feed(chunk)
        if not parse_on(engine, frames, run, early):
            engine.receive_data(frames.take_rest())  # the engine discards it
            frames = None
    if frames is not None and (rest := frames.take_rest()):
        engine.receive_data(rest)
        collect(engine, run)
    return finish(engine, run)


def parse_on(engine: Protocol, frames: FrameReader, run: Run, early: bytearray) -> bool:
    """Parse what ``frames`` holds; False once the engine stopped parsing.

    ``early`` collects the payload of an unfinished data frame as it comes.
    """
    while True:
        kind = frames.next_frame()
        if kind == NEED_DATA:
            if frames.unfinished_data_frame():
                early += frames.new_payload()
            return True
        if kind == DATA:
            assert frames.payload[: len(early)] == early
            early.clear()
            run.frames.append((frames.opcode, frames.payload, frames.fin))
            continue
        assert not early  # what came early was a data frame that passes
        if kind == CONTROL:
            engine.receive_data(frames.frame)
            handed = collect(engine, run)
            # No frame back: the engine failed on it.
            if not handed or handed[0].opcode is Opcode.CLOSE:
                return False
        else:
            assert kind == FAILED
            engine.fail(frames.error_code, frames.error_reason)
            return False


@settings(max_examples=max(100, settings().max_examples * 3), deadline=None)
@given(data=st.data(), server=st.booleans())
def test_the_codec_frames_as_the_engine_does(data: st.DataObject, server: bool) -> None:
    stream = data.draw(streams(masked=server))
    chunks = data.draw(splits(stream))
    assert by_codec(server, chunks) == by_engine(server, chunks)


# -- Differential: whole connections, with our codec and without -------------

DEFLATE = "permessage-deflate; client_max_window_bits"


@dataclass
class Seen:
    """What the application got, then the close code, then what we answered."""

    messages: list[str | bytes] = field(default_factory=list)
    code: int | None = None
    answers: list[tuple[int, bytes]] = field(default_factory=list)


async def collect_messages(ws: object, seen: Seen) -> None:
    assert isinstance(ws, WebSocketConnection)
    try:
        while True:
            seen.messages.append(await ws.get_message())
    except ConnectionClosed as exc:
        seen.code = exc.reason.code if exc.reason else None


async def head_of(stream: trio.abc.ReceiveStream) -> tuple[bytes, bytes]:
    """The HTTP head the peer sent, and what came after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive_some()
    head, _, rest = data.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest


async def send_and_read(
    raw: trio.abc.HalfCloseableStream,
    writes: Sequence[bytes],
    rest: bytes,
    one_read_each: bool,
) -> bytes:
    """Send ``writes`` then EOF; return everything our side sent."""
    try:
        for data in writes:
            await raw.send_all(data)
            if one_read_each:  # our side has read it before the next
                await trio.testing.wait_all_tasks_blocked()
        await raw.send_eof()
    except trio.BrokenResourceError:
        pass  # failed and closed by our side
    while received := await raw.receive_some():
        rest += received
    return rest


async def drive(
    server: bool,
    writes: Sequence[bytes],
    compression: Compression,
    one_read_each: bool,
) -> Seen:
    """Our server (or client) on one side, a raw peer sending ``writes``."""
    raw, ours = trio.testing.memory_stream_pair()
    seen = Seen()
    offer = f"Sec-WebSocket-Extensions: {DEFLATE}\r\n" if compression else ""
    async with trio.open_nursery() as nursery:

        async def run_ours() -> None:
            if server:
                request = await wrap_server_stream(
                    nursery, ours, max_message_size=LIMIT, compression=compression
                )
                ws = await request.accept()
            else:
                ws = await wrap_client_stream(
                    nursery,
                    ours,
                    "localhost",
                    "/",
                    max_message_size=LIMIT,
                    compression=compression,
                )
            await collect_messages(ws, seen)

        nursery.start_soon(run_ours)
        if server:
            await raw.send_all(upgrade_request(extra=offer))
            _, rest = await head_of(raw)
        else:
            request, rest = await head_of(raw)
            response = upgrade_response(request)
            if compression:
                extension = b"Sec-WebSocket-Extensions: permessage-deflate\r\n"
                response = response[:-2] + extension + b"\r\n"
            await raw.send_all(response)
        wire = await send_and_read(raw, writes, rest, one_read_each)
    seen.answers = [
        (opcode, payload) for opcode, payload, _ in parse_answers(wire, server)
    ]
    return seen


def parse_answers(wire: bytes, server: bool) -> list[tuple[int, bytes, bool]]:
    """The frames our side wrote (masked by a client), parsed by the engine."""
    engine = Protocol(_CLIENT if server else _SERVER, max_size=None)
    engine.receive_data(wire)
    return [
        (int(e.opcode), bytes(e.data), e.fin)
        for e in engine.events_received()
        if isinstance(e, Frame)
    ]


def run(
    server: bool,
    writes: list[bytes],
    compression: Compression,
    *,
    engine_frames: bool,
    one_read_each: bool = False,
) -> Seen:
    _frames.ENGINE_FRAMES = engine_frames
    try:
        return trio.run(drive, server, writes, compression, one_read_each)
    finally:
        _frames.ENGINE_FRAMES = False


@settings(max_examples=max(40, settings().max_examples), deadline=None)
@given(
    data=st.data(),
    server=st.booleans(),
    compression=st.sampled_from(["deflate", None]),
)
def test_connections_behave_the_same_with_our_codec(
    data: st.DataObject, server: bool, compression: Compression
) -> None:
    """Our codec, whatever the reads, against the engine alone.

    The engine parses a whole read before the connection sees any of its
    frames, so when a read holds a message we refuse (bad UTF-8, too big)
    followed by a frame the engine fails on, the engine's close code wins
    over ours, although its frame came second. Our codec handles frames in
    order; so it is compared with the engine reading one frame at a time.
    With permessage-deflate the engine frames everything either way.
    """
    sent = data.draw(pieces(masked=server, deflate_on=compression is not None))
    writes = data.draw(splits(b"".join(sent)))
    if assert_behave_the_same(server, sent, writes, compression).code == 1007:
        event("refused with 1007")


def test_with_deflate_the_reads_are_the_same_on_both_sides() -> None:
    # Found by the test above: a read ending on a text fragment with invalid
    # UTF-8 (1007), then one with an unmasked frame (1002). Which code wins
    # depends on whether the two arrive in one read, so both sides must get
    # the same reads.
    sent = [
        b"\x02\x80\x00\x00\x00\x00",
        b"\x89\x87\x00\x00\x00\x00between",
        b"\x00\x80\x00\x00\x00\x00",
        b"\x80\x80\x00\x00\x00\x00",
        b"\x01\x84\x00\x82\x81\x00\x00\x00\x00\x00",
        b"\x81\x00\x81\x00",
    ]
    wire = b"".join(sent)
    writes = [wire[:1], wire[1:41], wire[41:]]
    assert assert_behave_the_same(True, sent, writes, "deflate").code == 1007


def assert_behave_the_same(
    server: bool, sent: list[bytes], writes: list[bytes], compression: Compression
) -> Seen:
    """Our codec reading ``writes`` against the engine (one frame a read).

    With permessage-deflate both sides run the engine, whose close code can
    depend on which frames share a read (see above): each write is then made
    one read on both sides, or the scheduler would decide.
    """
    deflate = compression is not None
    ours = run(server, writes, compression, engine_frames=False, one_read_each=deflate)
    if compression is None:
        reads, reason = engine_view(server, b"".join(sent))
        engine = run(server, reads, None, engine_frames=True, one_read_each=True)
        if engine.code == 1006 and reason is not None:
            engine.code = 1007
            engine.answers.append((CLOSE, close_payload(1007, reason.encode())))
    else:
        engine = run(
            server, writes, compression, engine_frames=True, one_read_each=True
        )
    assert ours == engine
    return ours


@pytest.mark.parametrize("server", [True, False])
@pytest.mark.parametrize(
    ("sent", "code"),
    [
        ([(TEXT, b"ok \xff and more", True)], 1007),
        ([(TEXT, b"\xe2\x82", False), (CONT, b"\xacok\xc3( more", True)], 1007),
        ([(TEXT, b"ok \xe2\x82\xac and more", True)], 1006),
        ([(BINARY, b"ok \xff and more", True)], 1006),
        ([(TEXT, b"\xff" * (LIMIT + 1), True)], 1006),  # over our limit
    ],
)
def test_a_stream_that_ends_inside_a_text_frame(
    server: bool, sent: list[tuple[int, bytes, bool]], code: int
) -> None:
    """Cut after 6 bytes of its payload: invalid UTF-8 there is refused."""
    key = KEY if server else None
    frames = [wire_frame(op, data, fin=fin, key=key) for op, data, fin in sent]
    frames[-1] = frames[-1][: len(frames[-1]) - len(sent[-1][1]) + 6]
    for at in range(1, len(frames[-1])):  # every read of the last frame
        writes = [*frames[:-1], frames[-1][:at], frames[-1][at:]]
        assert assert_behave_the_same(server, frames, writes, None).code == code


def engine_view(server: bool, stream: bytes) -> tuple[list[bytes], str | None]:
    """``stream`` cut after each frame the engine parses; and why our codec
    refuses the unfinished text frame it ends in, if it does: what arrived
    of it is invalid UTF-8 (see ``early_text``)."""
    engine, run = make_engine(server), Run()
    arriving = ArrivingFrame()
    message: InProgress | None = None
    reads, start, refused = [], 0, False
    for i in range(len(stream)):
        byte = stream[i : i + 1]
        engine.receive_data(byte)
        for opcode, payload, fin in collect_data(engine, run):
            if opcode != CONT:
                message = InProgress(_utf8() if opcode == TEXT else None)
            assert message is not None
            message.size += len(payload)
            if message.decoder is not None:
                try:
                    message.decoder.decode(payload, fin)
                except UnicodeDecodeError:
                    refused = True  # once complete
            message = None if fin else message
        arriving.track(engine, byte)
        if not arriving.data:
            reads.append(stream[start : i + 1])
            start = i + 1
    reads += [stream[start:]] if start < len(stream) else []
    if refused or engine.state is not OPEN:
        return reads, None
    return reads, refused_early(arriving.data, message, LIMIT)


def collect_data(engine: Protocol, run: Run) -> list[tuple[int, bytes, bool]]:
    """The data frames among the engine's new events."""
    before = len(run.frames)
    collect(engine, run)
    return [f for f in run.frames[before:] if f[0] in (TEXT, BINARY, CONT)]


# -- Sending ---------------------------------------------------------------------

SENT: list[str | bytes] = ["", "é" * 70, b"\0" * 126, b"x" * 65536, "y" * 70000]


async def send_then_close(server: bool) -> list[tuple[int, bytes, bool]]:
    """Our side sends :data:`SENT` then closes; the wire, parsed by the engine."""
    raw, ours = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:

        async def run_ours() -> None:
            if server:
                request = await wrap_server_stream(nursery, ours, compression=None)
                ws = await request.accept()
            else:
                ws = await wrap_client_stream(
                    nursery, ours, "localhost", "/", compression=None
                )
            for message in SENT:
                await ws.send_message(message)
            await ws.aclose()

        nursery.start_soon(run_ours)
        if server:
            await raw.send_all(upgrade_request())
            _, rest = await head_of(raw)
        else:
            request, rest = await head_of(raw)
            await raw.send_all(upgrade_response(request))
        wire = rest
        while (
            not parse_answers(wire, server)
            or parse_answers(wire, server)[-1][0] != CLOSE
        ):
            wire += await raw.receive_some()
        nursery.cancel_scope.cancel()
    return parse_answers(wire, server)


@pytest.mark.parametrize("server", [True, False])
def test_messages_framed_by_our_codec_parse_in_the_engine(server: bool) -> None:
    frames = trio.run(send_then_close, server)
    expected = [
        (
            TEXT if isinstance(m, str) else BINARY,
            m.encode() if isinstance(m, str) else m,
            True,
        )
        for m in SENT
    ]
    assert frames[:-1] == expected
    assert frames[-1][0] == CLOSE  # then the close frame, from the engine
