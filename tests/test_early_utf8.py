"""Invalid UTF-8 fails the connection as it arrives, inside an unfinished frame.

A peer that sends the start of a text frame, invalid, and the rest much
later (or never) is failed with 1007 when the invalid bytes arrive. The
engine's own checks on the frame's header (reserved bits, size limits)
still come first, and valid text split anywhere, across reads and
fragments, still arrives intact.

The loopback tests let the peer stall for a minute after the invalid bytes
and wait for the close for a few seconds: a connection that waited for the
rest of the frame fails them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from unittest.mock import ANY

import pytest
import trio
from raw_http import HOST
from raw_peer import (
    CONT,
    TEXT,
    RawPeer,
    frame,
    no_errors_logged,  # noqa: F401  (an autouse fixture)
    raw_upgrade,
    start_raw_server,
    upgrade_response,
    upgraded_raw_client,
    wire_frame,
)

from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)
from trio_websocket._assembler import Assembler, InvalidMessage
from trio_websocket._frames import DATA, NEED_DATA, FrameReader
from trio_websocket._queue import Fragment, Item
from trio_websocket._settings import Settings

#: max_message_size of both sides here: room for frames over several reads.
BIG = 2**20
#: How long a peer stalls; the close must come long before.
STALL = 60
#: Bound on waiting for the close.
PROMPT = 5

VALID = "ascii, é, €, 😀; ".encode() * 3000  # over 60 kB, every UTF-8 length


KEY = b"\x01\x02\x03\x04"


def mask(payload: bytes, key: bytes = KEY) -> bytes:
    return bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def text_frame_in_writes(
    payload: bytes, cuts: Sequence[int], *, masked: bool, fin: bool = True
) -> list[bytes]:
    """A text frame of ``payload``, cut at ``cuts`` (offsets in the payload)."""
    data = frame(TEXT, payload, masked=masked, fin=fin)
    head = len(data) - len(payload)
    bounds = [0, *(head + cut for cut in cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


Seen = trio.MemoryReceiveChannel[str | bytes | CloseReason | None]


async def start_server(nursery: trio.Nursery) -> tuple[int, Seen]:
    """Our server; what its handler receives, up to the close, comes on the
    channel."""
    send, receive = trio.open_memory_channel[str | bytes | CloseReason | None](math.inf)

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            while True:
                send.send_nowait(await ws.get_message())
        except ConnectionClosed as exc:
            send.send_nowait(exc.reason)

    server = await nursery.start(
        partial(serve_websocket, handler, HOST, 0, None, max_message_size=BIG)
    )
    return server.port, receive


# -- Over loopback: the peer stalls after the invalid bytes --------------------

INVALID_PREFIXES = [
    pytest.param(b"\xff" + b"x" * 99, [1], id="first-byte"),
    pytest.param(b"ok \xc3\x28", [5], id="bad-continuation"),
    pytest.param(VALID[:40001] + b"\xed\xa0\x80", [20000, 40000], id="middle"),
]


async def stalling_writes(writes: Sequence[bytes], peer: RawPeer) -> None:
    """Send ``writes`` a moment apart (so they arrive as separate reads)
    but the frame's last one, then stall."""
    for data in writes[:-1]:
        await peer.stream.send_all(data)
        await trio.sleep(0.05)
    await trio.sleep(STALL)


@pytest.mark.parametrize(("prefix", "cuts"), INVALID_PREFIXES)
async def test_server_fails_invalid_text_before_the_frame_is_complete(
    nursery: trio.Nursery, prefix: bytes, cuts: list[int]
) -> None:
    port, seen = await start_server(nursery)
    writes = text_frame_in_writes(
        prefix + b"rest" * 1000, [*cuts, len(prefix)], masked=True
    )
    async with upgraded_raw_client(port) as peer:
        nursery.start_soon(stalling_writes, writes, peer)
        with trio.fail_after(PROMPT):
            assert await peer.read_close_code(masked=False) == 1007
            assert await peer.read_to_eof() == b""
            assert await seen.receive() == CloseReason(1007, ANY)


async def assert_client_fails_with_1007(
    nursery: trio.Nursery,
    opening: Callable[[RawPeer], Awaitable[None]],
    stalling: Callable[[RawPeer], Awaitable[None]],
) -> None:
    """Our client against a raw server that runs ``opening`` (the handshake,
    maybe more), then ``stalling`` (the rest, or nothing, then a stall):
    both ends see 1007 while the server still stalls."""
    received: list[int] = []

    async def behave(peer: RawPeer) -> None:
        await opening(peer)
        async with trio.open_nursery() as inner:
            inner.start_soon(stalling, peer)
            received.append(await peer.read_close_code(masked=True))
            inner.cancel_scope.cancel()

    port = await start_raw_server(nursery, behave)
    with trio.fail_after(PROMPT):
        async with open_websocket_url(
            f"ws://{HOST}:{port}/", max_message_size=BIG
        ) as ws:
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
    assert info.value.reason is not None
    assert info.value.reason.code == 1007
    assert received == [1007]


@pytest.mark.parametrize(("prefix", "cuts"), INVALID_PREFIXES)
async def test_client_fails_invalid_text_before_the_frame_is_complete(
    nursery: trio.Nursery, prefix: bytes, cuts: list[int]
) -> None:
    writes = text_frame_in_writes(
        prefix + b"rest" * 1000, [*cuts, len(prefix)], masked=False
    )
    await assert_client_fails_with_1007(
        nursery, raw_upgrade, partial(stalling_writes, writes)
    )


# -- The engine's checks come first --------------------------------------------


@pytest.mark.parametrize(
    ("announced", "rsv", "code"),
    [
        pytest.param(BIG + 1, 0, 1009, id="over-our-limit"),
        pytest.param(2**40, 0, 1009, id="over-the-engine-limit"),
        pytest.param(1000, 0b100, 1002, id="reserved-bit"),
    ],
)
async def test_a_frame_that_fails_anyway_fails_with_its_own_code(
    nursery: trio.Nursery, announced: int, rsv: int, code: int
) -> None:
    port, seen = await start_server(nursery)
    # The header announces the payload; its start is invalid UTF-8.
    first = 0x80 | rsv << 4 | TEXT
    head = bytes((first, 0xFF)) + announced.to_bytes(8, "big") + KEY
    async with upgraded_raw_client(port) as peer:
        await peer.stream.send_all(head + mask(b"\xff" * 10))
        await trio.sleep(0.05)
        if announced <= BIG + 1:  # the rest comes, completing the frame
            rest = mask(b"\xff" * (announced - 10), KEY[2:] + KEY[:2])
            await peer.stream.send_all(rest)
        with trio.fail_after(PROMPT):
            assert await peer.read_close_code(masked=False) == code
            assert await seen.receive() == CloseReason(code, ANY)


# -- Valid text split anywhere --------------------------------------------------


async def test_valid_text_split_across_reads_and_fragments_arrives(
    nursery: trio.Nursery,
) -> None:
    port, seen = await start_server(nursery)
    # Cuts inside 2-, 3- and 4-byte characters, in one frame and in fragments.
    whole = text_frame_in_writes(VALID, [8, 20014, 40020], masked=True)
    first, second = VALID[:30001], VALID[30001:]
    text = VALID.decode()
    fragments = [
        *text_frame_in_writes(first, [9, 20017], masked=True, fin=False),
        frame(CONT, second, masked=True),
    ]
    async with upgraded_raw_client(port) as peer:
        for data in [*whole, *fragments]:
            await peer.stream.send_all(data)
            await trio.sleep(0.05)
        with trio.fail_after(PROMPT):
            assert [await seen.receive(), await seen.receive()] == [text, text]


# -- The reader and the assembler, byte by byte ---------------------------------


def assemble(frames: Sequence[bytes]) -> list[Item]:
    """Frames fed one byte at a time, decoded early as the connection does."""
    reader = FrameReader(masked=True, max_message=-1, max_fragment=-1)
    assembler = Assembler(Settings(max_message_size=math.inf, compression=None))
    items: list[Item] = []
    for byte in [data[i : i + 1] for data in frames for i in range(len(data))]:
        reader.feed(byte)
        kind = reader.next_frame()
        if kind == DATA:
            items.append(assembler.feed(reader.opcode, reader.payload, reader.fin))
        else:
            assert kind == NEED_DATA
            if reader.unfinished_data_frame() and assembler.start_early(
                reader.opcode, reader.length
            ):
                assembler.feed_early(reader.new_payload())
    return items


def test_text_decoded_early_is_decoded_once() -> None:
    text = "é€😀 and ascii"
    data = text.encode()
    assert assemble([wire_frame(TEXT, data)]) == [text]
    fragments = [
        wire_frame(TEXT, data[:3], fin=False),
        wire_frame(CONT, data[3:9], fin=False),
        wire_frame(CONT, data[9:]),
    ]
    pieces = assemble(fragments)
    assert [piece.last for piece in pieces if isinstance(piece, Fragment)] == [
        False,
        False,
        True,
    ]
    assert (
        "".join(str(piece.data) for piece in pieces if isinstance(piece, Fragment))
        == text
    )


@pytest.mark.parametrize(
    "frames",
    [
        [wire_frame(TEXT, b"ok \xe2\x82")],
        [wire_frame(TEXT, b"ok \xe2", fin=False), wire_frame(CONT, b"\x82")],
    ],
)
def test_a_truncated_character_still_fails_at_the_end(frames: list[bytes]) -> None:
    with pytest.raises(InvalidMessage) as info:
        assemble(frames)
    assert info.value.code == 1007


async def test_client_fails_invalid_text_sent_with_the_response(
    nursery: trio.Nursery,
) -> None:
    """The 101 and the start of an invalid text frame in one read (as
    Autobahn's cases 6.4.3 and 6.4.4 send them): the bytes behind the
    response reach our codec, which fails the frame as it arrives."""
    writes = text_frame_in_writes(b"\xff" + b"rest" * 1000, [1], masked=False)

    async def answer_with_the_frame_start(peer: RawPeer) -> None:
        response = upgrade_response(await peer.read_head())
        await peer.stream.send_all(response + writes[0])

    async def stall(peer: RawPeer) -> None:
        await trio.sleep(STALL)  # the rest never comes

    await assert_client_fails_with_1007(nursery, answer_with_the_frame_start, stall)
