"""Frames that arrive in the same read as the handshake, over real TCP.

A peer may send its first frames right behind its handshake, so one read
can hold the end of the HTTP message, whole frames and part of a frame.
Those frames must be delivered, and the partial one completed, on both
sides. The engine parses only the HTTP message: what follows it goes to the
connection's own input path, as its first read, so the engine's parser is
replaced once the handshake is over (the parsed HTTP message is not kept
alive for the whole connection) and our frame codec takes every frame.
"""

from __future__ import annotations

from collections.abc import Generator
from functools import partial
from typing import Any

import pytest
import trio
from raw_http import HOST, upgrade_request
from raw_peer import (
    BINARY,
    CLOSE,
    TEST_BOUND,
    TEXT,
    RawPeer,
    frame,
    raw_client,
    start_raw_server,
    upgrade_response,
)
from websockets.protocol import Protocol

from trio_websocket import (
    WebSocketConnection,
    WebSocketRequest,
    open_websocket,
    serve_websocket,
)
from trio_websocket._engine import ParserOnDemand

WHOLE = frame(TEXT, b"one", masked=False)
PARTIAL = frame(BINARY, b"two" * 100, masked=False)


def parses_frames_only(connection: WebSocketConnection) -> bool:
    """Whether the engine's parser is a fresh frame parser (or one made on
    demand, when the engine gets input)."""
    parser: Any = connection._protocol.parser
    return isinstance(parser, ParserOnDemand) or (
        parser.gi_code is Protocol.parse.__code__
    )


async def serve_then_send(split: int, client_open: trio.Event, peer: RawPeer) -> None:
    """Answer the handshake and, in the same write, the first frames.

    The rest of the second frame follows once the client says its handshake
    is over, so the client cannot have read it with the handshake.
    """
    head = await peer.read_head()
    await peer.stream.send_all(upgrade_response(head) + WHOLE + PARTIAL[:split])
    await client_open.wait()
    await peer.stream.send_all(PARTIAL[split:])
    await answer_close(peer, masked=True)


async def answer_close(peer: RawPeer, *, masked: bool) -> None:
    """Wait for the close frame and send it back, as a polite peer would."""
    opcode, payload = await peer.read_frame(masked=masked)
    assert opcode == CLOSE
    await peer.stream.send_all(frame(CLOSE, payload, masked=not masked))


@pytest.mark.parametrize("split", [4, 10], ids=["after-header", "in-payload"])
async def test_client_receives_frames_sent_with_the_response(
    nursery: trio.Nursery, split: int
) -> None:
    # The read ends inside the second frame (after its header, or inside its
    # payload): the connection completes it from the next read.
    client_open = trio.Event()
    port = await start_raw_server(nursery, partial(serve_then_send, split, client_open))
    with trio.fail_after(TEST_BOUND):
        async with open_websocket(HOST, port, "/", use_ssl=False) as ws:
            client_open.set()
            assert parses_frames_only(ws)
            assert await ws.get_message() == "one"
            assert await ws.get_message() == b"two" * 100


async def test_client_replaces_the_parser_between_frames(
    nursery: trio.Nursery,
) -> None:
    client_open = trio.Event()
    port = await start_raw_server(nursery, partial(serve_then_send, 0, client_open))
    with trio.fail_after(TEST_BOUND):
        async with open_websocket(HOST, port, "/", use_ssl=False) as ws:
            client_open.set()
            assert parses_frames_only(ws)
            assert await ws.get_message() == "one"
            assert await ws.get_message() == b"two" * 100


async def test_server_receives_frames_sent_with_the_request(
    nursery: trio.Nursery,
) -> None:
    received: list[str | bytes] = []
    fresh_parser: list[bool] = []

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        fresh_parser.append(parses_frames_only(ws))
        received.append(await ws.get_message())
        received.append(await ws.get_message())
        await ws.aclose()

    server = await nursery.start(serve_websocket, handler, HOST, 0, None)
    whole, partial_frame = frame(TEXT, b"one"), frame(BINARY, b"two" * 100)
    with trio.fail_after(TEST_BOUND):
        async with raw_client(server.port) as peer:
            await peer.stream.send_all(upgrade_request() + whole + partial_frame[:9])
            # The server answers once it has read the request, and with it
            # what came behind: the rest cannot reach that same read.
            assert b" 101 " in await peer.read_head()
            await peer.stream.send_all(partial_frame[9:])
            await answer_close(peer, masked=False)
            assert await peer.read_to_eof() == b""
    assert received == ["one", b"two" * 100]
    assert fresh_parser == [True]


async def test_server_replaces_the_parser_after_a_plain_request(
    nursery: trio.Nursery,
) -> None:
    fresh_parser: list[bool] = []

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        fresh_parser.append(parses_frames_only(ws))
        await ws.send_message(await ws.get_message())

    server = await nursery.start(serve_websocket, handler, HOST, 0, None)
    with trio.fail_after(TEST_BOUND):
        async with open_websocket(HOST, server.port, "/", use_ssl=False) as ws:
            await ws.send_message("echo")
            assert await ws.get_message() == "echo"
    assert fresh_parser == [True]


async def test_the_engine_parses_nothing_until_it_is_given_a_frame(
    nursery: trio.Nursery,
) -> None:
    # Our codec takes the data frames, so the engine's parser generator is
    # made only when a control frame reaches the engine (see ParserOnDemand).
    server_parsers: list[type] = []

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        message = await ws.get_message()
        server_parsers.append(type(ws._protocol.parser))
        await ws.send_message(message)
        await ws.get_message()  # ended by the client's close

    server = await nursery.start(serve_websocket, handler, HOST, 0, None)
    with trio.fail_after(TEST_BOUND):
        async with open_websocket(
            HOST, server.port, "/", use_ssl=False, compression=None
        ) as ws:
            await ws.send_message("echo")
            assert await ws.get_message() == "echo"
            assert isinstance(ws._protocol.parser, ParserOnDemand)
            await ws.ping(b"made")  # the server's engine parses the ping
            assert server_parsers == [ParserOnDemand]
    assert isinstance(ws._protocol.parser, Generator)  # parsed the close
