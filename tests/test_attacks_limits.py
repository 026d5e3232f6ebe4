"""Hostile peers against a server's limits, over real loopback sockets.

Each test puts raw peers (hand-built HTTP and frames) against our server and
checks that a limit holds while honest clients are still served: messages
in many tiny fragments, control frames under small size limits, slow
handshakes, shutdown with requests still coming, running out of file
descriptors. Every wait is bounded; deadlines run on a virtual clock.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from raw_http import exchange, plain_request
from test_bad_input import (
    BINARY,
    CONT,
    PING,
    TEST_BOUND,
    TEXT,
    Outcome,
    frame,
    upgraded_raw_client,
)

from trio_websocket import (
    ConnectionClosed,
    Router,
    WebSocketRequest,
    serve_websocket,
    static_response,
)

HOST = "127.0.0.1"
PONG = 0xA


async def start_recording_server(
    nursery: trio.Nursery, **options: Any
) -> tuple[int, trio.MemoryReceiveChannel[Outcome]]:
    """A server whose handler reports one message, or the close reason."""
    send, receive = trio.open_memory_channel[Outcome](math.inf)

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            send.send_nowait(await ws.get_message())
        except ConnectionClosed as exc:
            send.send_nowait(exc.reason)

    server = await nursery.start(
        partial(serve_websocket, handler, HOST, 0, None, **options)
    )
    return server.port, receive


def fragmented(opcode: int, pieces: list[bytes]) -> bytes:
    """One message as one frame per piece."""
    frames = [frame(opcode, pieces[0], fin=False)]
    frames += [frame(CONT, piece, fin=False) for piece in pieces[1:-1]]
    frames.append(frame(CONT, pieces[-1]))
    return b"".join(frames)


# -- Messages in many tiny fragments -----------------------------------------


@pytest.mark.parametrize(
    ("opcode", "message"),
    [
        pytest.param(BINARY, bytes(range(256)) * 40, id="binary"),
        # Two-byte characters split between fragments.
        pytest.param(TEXT, "é€x" * 2000, id="text"),
    ],
)
async def test_a_message_in_one_byte_fragments_arrives_intact(
    nursery: trio.Nursery, opcode: int, message: str | bytes
) -> None:
    payload = message.encode() if isinstance(message, str) else message
    port, outcomes = await start_recording_server(nursery)
    pieces = [payload[i : i + 1] for i in range(len(payload))]
    with trio.fail_after(TEST_BOUND):
        async with upgraded_raw_client(port) as peer:
            await peer.stream.send_all(fragmented(opcode, pieces))
            assert await outcomes.receive() == message


async def test_a_message_in_too_many_fragments_gets_1009(
    nursery: trio.Nursery,
) -> None:
    port, outcomes = await start_recording_server(nursery, max_message_fragments=10)
    with trio.fail_after(TEST_BOUND):
        async with upgraded_raw_client(port) as peer:
            await peer.stream.send_all(fragmented(BINARY, [b"x"] * 10))
            assert await outcomes.receive() == b"x" * 10
        async with upgraded_raw_client(port) as peer:
            # Empty frames add nothing to the size, but they count.
            await peer.stream.send_all(
                frame(BINARY, b"", fin=False) + frame(CONT, b"", fin=False) * 10
            )
            assert await peer.read_close_code(masked=False) == 1009
        reason = await outcomes.receive()
    assert reason is not None and not isinstance(reason, (str, bytes))
    assert reason.code == 1009


# -- Control frames under small size limits ----------------------------------


@pytest.mark.parametrize(
    ("options", "started"),
    [
        pytest.param(
            {"max_message_size": 100, "compression": None}, b"", id="message-limit"
        ),
        pytest.param({"max_fragment_size": 50}, b"", id="fragment-limit"),
        # The engine counts a ping against what is left of the message.
        pytest.param({"max_message_size": 200}, b"m" * 190, id="mid-message"),
    ],
)
async def test_a_125_byte_ping_is_answered_under_small_limits(
    nursery: trio.Nursery, options: dict[str, Any], started: bytes
) -> None:
    """A ping in the middle of the message ``started``, if not empty."""
    port, outcomes = await start_recording_server(nursery, **options)
    before = frame(BINARY, started, fin=False) if started else b""
    with trio.fail_after(TEST_BOUND):
        async with upgraded_raw_client(port) as peer:
            await peer.stream.send_all(before + frame(PING, b"p" * 125))
            assert await peer.read_frame(masked=False) == (PONG, b"p" * 125)
            await peer.stream.send_all(frame(CONT if started else BINARY, b"ok"))
            assert await outcomes.receive() == started + b"ok"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"max_message_size": 100}, frame(BINARY, b"x" * 101), id="msg"),
        pytest.param({"max_fragment_size": 50}, frame(BINARY, b"x" * 51), id="frame"),
    ],
)
async def test_data_frames_are_still_held_to_small_limits(
    nursery: trio.Nursery, options: dict[str, Any], message: bytes
) -> None:
    port, _ = await start_recording_server(nursery, **options)
    with trio.fail_after(TEST_BOUND):
        async with upgraded_raw_client(port) as peer:
            await peer.stream.send_all(message)
            assert await peer.read_close_code(masked=False) == 1009


# -- HEAD requests -----------------------------------------------------------


async def test_head_gets_the_headers_of_get_without_the_body(
    nursery: trio.Nursery,
) -> None:
    router = Router()
    router.http("/page", static_response(b"<p>hello</p>\n", content_type="text/html"))
    server = await nursery.start(
        partial(serve_websocket, router, HOST, 0, None, http_handler=router)
    )
    with trio.fail_after(TEST_BOUND):
        get = await exchange(server.port, plain_request("/page"))
        head = await exchange(
            server.port, plain_request("/page").replace(b"GET", b"HEAD", 1)
        )
    assert (get.status, get.body) == (200, b"<p>hello</p>\n")
    assert head.status == 200
    assert head.headers["content-length"] == "13"
    assert head.headers["content-type"] == "text/html"
    assert head.body == b""
