"""Hostile peers at the protocol level, over real loopback sockets.

A raw peer (hand-built HTTP and frames, from ``raw_peer``) sends what a
well-behaved peer would not: frames in the same packet as its handshake, a
close frame in the middle of a fragmented message, a frame we must refuse
while it never answers our close, a compression answer outside RFC 7692.
Every wait is bounded far below the 60 s default timeouts, so a test fails
rather than waits when our side waits for the peer.
"""

from __future__ import annotations

import os
import struct
import zlib
from functools import partial
from typing import Any

import pytest
import trio
from raw_http import HOST, upgrade_request
from raw_peer import (
    BINARY,
    CLOSE,
    CONT,
    LIMIT,
    PING,
    PONG,
    TEST_BOUND,
    TEXT,
    RawPeer,
    Recorder,
    close_payload,
    frame,
    no_errors_logged,  # noqa: F401  (an autouse fixture)
    raw_client,
    start_raw_server,
    start_server,
    status_of,
    upgrade_response,
    upgraded_raw_client,
)

from trio_websocket import CloseReason, ConnectionClosed, open_websocket_url


@pytest.fixture
async def recorder(nursery: trio.Nursery) -> Recorder:
    return await start_server(nursery)


async def upgrade_with(extra: bytes, peer: RawPeer) -> None:
    """A raw server's 101 answer with ``extra`` bytes in the same write."""
    await peer.stream.send_all(upgrade_response(await peer.read_head()) + extra)


def deflate(data: bytes) -> bytes:
    """A permessage-deflate payload, compressed with the largest window."""
    compressor = zlib.compressobj(wbits=-15)
    return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


# -- Frames in the same packet as the handshake ------------------------------


async def test_server_answers_a_ping_sent_with_the_request_after_its_101(
    recorder: Recorder,
) -> None:
    with trio.fail_after(TEST_BOUND):
        async with raw_client(recorder.port) as peer:
            await peer.stream.send_all(upgrade_request() + frame(PING, b"early"))
            head = await peer.read_head()
            assert head.startswith(b"HTTP/1.1 101 "), head
            assert await peer.read_frame(masked=False) == (PONG, b"early")


@pytest.mark.parametrize(
    "bad_frame",
    [
        pytest.param(frame(BINARY, b"hi", masked=False), id="unmasked"),
        pytest.param(frame(0x3, b"hi"), id="opcode-3"),
    ],
)
async def test_server_fails_on_a_bad_frame_sent_with_the_request(
    recorder: Recorder, bad_frame: bytes
) -> None:
    with trio.fail_after(TEST_BOUND):
        async with raw_client(recorder.port) as peer:
            await peer.stream.send_all(upgrade_request() + bad_frame)
            assert status_of(await peer.read_head()) == 101
            assert await peer.read_close_code(masked=False) == 1002
            assert await peer.read_to_eof() == b""
        outcome = await recorder.next_outcome()
    assert isinstance(outcome, CloseReason)
    assert outcome.code == 1002


async def test_server_decompresses_a_message_sent_with_the_request(
    recorder: Recorder,
) -> None:
    # The frame needs the extension that only the 101 response negotiates.
    offer = "Sec-WebSocket-Extensions: permessage-deflate\r\n"
    compressed = frame(TEXT, deflate(b"squeezed"), rsv=0b100)
    with trio.fail_after(TEST_BOUND):
        async with raw_client(recorder.port) as peer:
            await peer.stream.send_all(upgrade_request(extra=offer) + compressed)
            assert b"permessage-deflate" in await peer.read_head()
            assert await recorder.next_outcome() == "squeezed"


async def test_client_answers_a_ping_sent_with_the_response(
    nursery: trio.Nursery,
) -> None:
    answered = trio.Event()

    async def ping_at_once(peer: RawPeer) -> None:
        await upgrade_with(frame(PING, b"early", masked=False), peer)
        assert await peer.read_frame(masked=True) == (PONG, b"early")
        answered.set()

    port = await start_raw_server(nursery, ping_at_once)
    with trio.fail_after(TEST_BOUND):
        async with open_websocket_url(f"ws://{HOST}:{port}/"):
            await answered.wait()


async def client_closes_on(
    extra: bytes, nursery: trio.Nursery
) -> tuple[int, list[int]]:
    """Our client against a raw server that sends ``extra`` with its 101.

    The close code our client raises with, and the codes the server read.
    """
    codes: list[int] = []

    async def send_at_once(peer: RawPeer) -> None:
        await upgrade_with(extra, peer)
        codes.append(await peer.read_close_code(masked=True))

    port = await start_raw_server(nursery, send_at_once)
    with trio.fail_after(TEST_BOUND):
        async with open_websocket_url(f"ws://{HOST}:{port}/") as ws:
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
    assert info.value.reason is not None
    return info.value.reason.code, codes


async def test_client_fails_on_a_bad_frame_sent_with_the_response(
    nursery: trio.Nursery,
) -> None:
    bad_frame = frame(BINARY, b"hi", masked=True)
    assert await client_closes_on(bad_frame, nursery) == (1002, [1002])


# -- A peer that never answers our close frame -------------------------------


def refused_frames(*, masked: bool) -> list[Any]:
    """Frames the receiving side must refuse, with its close code.

    ``masked`` is how the sending side masks its frames.
    """
    mask_bit = 0x80 if masked else 0
    huge = bytes([0x82, mask_bit | 127]) + struct.pack("!Q", 2**31)
    return [
        pytest.param(frame(TEXT, b"bad \xff", masked=masked), 1007, id="invalid-utf8"),
        pytest.param(huge, 1009, id="claims-2-GiB"),
        pytest.param(frame(BINARY, b"hi", masked=not masked), 1002, id="wrong-mask"),
    ]


@pytest.mark.parametrize(("bad_bytes", "code"), refused_frames(masked=False))
async def test_client_raises_once_its_close_is_sent_to_a_server_that_stays(
    nursery: trio.Nursery, bad_bytes: bytes, code: int
) -> None:
    # disconnect_timeout stays at 60 s: waiting for the server's answer
    # would outlast the bound.
    codes: list[int] = []
    hang_up = trio.Event()

    async def refuse_to_answer(peer: RawPeer) -> None:
        await upgrade_with(bad_bytes, peer)
        codes.append(await peer.read_close_code(masked=True))
        await hang_up.wait()

    port = await start_raw_server(nursery, refuse_to_answer)
    with trio.fail_after(TEST_BOUND):
        async with open_websocket_url(
            f"ws://{HOST}:{port}/", max_message_size=LIMIT
        ) as ws:
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
            hang_up.set()
    assert info.value.reason is not None
    assert info.value.reason.code == code
    assert codes == [code]


@pytest.mark.parametrize(("bad_bytes", "code"), refused_frames(masked=True))
async def test_server_handler_sees_the_failure_while_the_client_stays(
    recorder: Recorder, bad_bytes: bytes, code: int
) -> None:
    with trio.fail_after(TEST_BOUND):
        async with upgraded_raw_client(recorder.port) as peer:
            await peer.stream.send_all(bad_bytes)
            assert await peer.read_close_code(masked=False) == code
            outcome = await recorder.next_outcome()  # the client is still there
    assert isinstance(outcome, CloseReason)
    assert outcome.code == code


# -- A close frame between two fragments -------------------------------------


def close_mid_message(*, masked: bool) -> bytes:
    """A first fragment, a close frame, then the next fragment (7.1.5)."""
    return (
        frame(TEXT, b"frag", fin=False, masked=masked)
        + frame(CLOSE, close_payload(1000), masked=masked)
        + frame(CONT, b"ment", masked=masked)
    )


async def test_server_answers_a_close_between_fragments_normally(
    recorder: Recorder,
) -> None:
    with trio.fail_after(TEST_BOUND):
        async with upgraded_raw_client(recorder.port) as peer:
            await peer.stream.send_all(close_mid_message(masked=True))
            assert await peer.read_close_code(masked=False) == 1000
            assert await peer.read_to_eof() == b""
        outcome = await recorder.next_outcome()
    assert isinstance(outcome, CloseReason)
    assert outcome.code == 1000


async def test_client_answers_a_close_between_fragments_normally(
    nursery: trio.Nursery,
) -> None:
    mid_message = close_mid_message(masked=False)
    assert await client_closes_on(mid_message, nursery) == (1000, [1000])


# -- A compression answer outside RFC 7692 -----------------------------------

#: Incompressible data repeated past a 4 KiB window but within 32 KiB: only
#: a compressor with a window over 12 bits can refer back to the repeat.
REPEATED = os.urandom(3000)
FAR_REPEAT = REPEATED + os.urandom(5000) + REPEATED


def inflate(payload: bytes, window_bits: int) -> bytes:
    """Decompress with a window of ``window_bits``, strictly.

    Output comes in small pieces: zlib resolves a reference from its output
    buffer when it can, and only its own window has the size asked for.
    """
    decompressor = zlib.decompressobj(wbits=-window_bits)
    pieces, data = [], payload + b"\0\0\xff\xff"
    while data:
        pieces.append(decompressor.decompress(data, 256))
        data = decompressor.unconsumed_tail
    return b"".join(pieces) + decompressor.flush()


async def answer_a_large_client_window(offers: list[bytes], peer: RawPeer) -> None:
    """Answer client_max_window_bits=15 whatever the offer; echo one message.

    Autobahn's reference server answers so. The message is read with a
    decompressor of 12 bits, which fails if the client compressed with more.
    """
    head = await peer.read_head()
    offers.extend(
        line.split(b":", 1)[1].strip()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-extensions:")
    )
    answer = b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=15"
    await peer.stream.send_all(upgrade_response(head)[:-2] + answer + b"\r\n\r\n")
    opcode, payload = await peer.read_frame(masked=True)
    message = inflate(payload, 12)
    await peer.stream.send_all(frame(opcode, deflate(message), rsv=0b100, masked=False))
    assert await peer.read_close_code(masked=True) == 1000


async def test_client_compresses_with_its_own_window_when_offered_more(
    nursery: trio.Nursery,
) -> None:
    offers: list[bytes] = []
    port = await start_raw_server(
        nursery, partial(answer_a_large_client_window, offers)
    )
    with trio.fail_after(TEST_BOUND):
        async with open_websocket_url(f"ws://{HOST}:{port}/") as ws:
            assert ws.extensions == ["permessage-deflate"]
            await ws.send_message(FAR_REPEAT)
            assert await ws.get_message() == FAR_REPEAT
    # What browsers and the websockets package offer.
    assert offers == [b"permessage-deflate; client_max_window_bits"]


def test_a_compressor_window_over_12_bits_refers_back_to_the_repeat() -> None:
    # What the test above relies on: inflate(..., 12) refuses such data.
    with pytest.raises(zlib.error):
        inflate(deflate(FAR_REPEAT), 12)
