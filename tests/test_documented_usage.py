"""Code written the way the established trio_websocket documentation shows it.

Each test runs the documented patterns unchanged: only the address (a free
port on 127.0.0.1 instead of a fixed one), bounded loops and ``fail_after``
guards are added, as the test standards require.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial

import pytest
import trio
import trio.testing

from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    connect_websocket_url,
    open_websocket,
    open_websocket_url,
    serve_websocket,
)

#: Upper bound on any loop below, so a bug cannot spin forever.
MAX_ITERATIONS = 100


# -- The documented echo server --------------------------------------------------------


async def echo_server(request: WebSocketRequest) -> None:
    ws = await request.accept()
    for _ in range(MAX_ITERATIONS):  # the docs loop with ``while True``
        try:
            message = await ws.get_message()
            await ws.send_message(message)
        except ConnectionClosed:
            break


async def start(
    nursery: trio.Nursery, handler: Callable[[WebSocketRequest], Awaitable[None]]
) -> WebSocketServer:
    """Start a server exactly as the docs' ``serve_websocket`` call does."""
    server: WebSocketServer = await nursery.start(
        partial(serve_websocket, handler, "127.0.0.1", 0, ssl_context=None)
    )
    return server


async def test_echo_server_and_url_client(nursery: trio.Nursery) -> None:
    server = await start(nursery, echo_server)
    replies = []
    with trio.fail_after(5):
        try:
            async with open_websocket_url(f"ws://127.0.0.1:{server.port}") as ws:
                await ws.send_message("hello world!")
                message = await ws.get_message()
                logging.info("Received message: %s", message)
                replies.append(message)
        except OSError as ose:  # pragma: no cover - the docs catch this
            logging.error("Connection attempt failed: %s", ose)
            raise
    assert replies == ["hello world!"]


async def test_echo_server_with_nursery_start_positional(
    nursery: trio.Nursery,
) -> None:
    # The other form found in the docs and tests of the old library.
    server = await nursery.start(serve_websocket, echo_server, "127.0.0.1", 0, None)
    assert isinstance(server, WebSocketServer)
    with trio.fail_after(5):
        async with open_websocket("127.0.0.1", server.port, "/", use_ssl=False) as ws:
            await ws.send_message(b"binary")
            assert await ws.get_message() == b"binary"


async def test_server_listener_url(nursery: trio.Nursery) -> None:
    server = await start(nursery, echo_server)
    url = server.listeners[0].url  # type: ignore[union-attr]
    assert url == f"ws://127.0.0.1:{server.port}"
    with trio.fail_after(5):
        async with open_websocket_url(url) as ws:
            await ws.send_message("via listener url")
            assert await ws.get_message() == "via listener url"


# -- Rejecting a request ---------------------------------------------------------------


async def handler_that_rejects(request: WebSocketRequest) -> None:
    if request.path != "/allowed":
        await request.reject(400, body=b"Bad path")
        return
    await echo_server(request)


async def test_reject_with_body(nursery: trio.Nursery) -> None:
    server = await start(nursery, handler_that_rejects)
    with trio.fail_after(5):
        try:
            async with open_websocket_url(f"ws://127.0.0.1:{server.port}/nope"):
                pytest.fail("the server should have rejected the connection")
        except ConnectionRejected as e:
            rejection = e
    assert rejection.status_code == 400
    assert rejection.body == b"Bad path"
    with trio.fail_after(5):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/allowed") as ws:
            await ws.send_message("let in")
            assert await ws.get_message() == "let in"


# -- The documented heartbeat ----------------------------------------------------------


# The documented signature has a ``timeout`` parameter.
async def heartbeat(
    ws: WebSocketConnection,
    timeout: float,  # noqa: ASYNC109
    interval: float,
    beats: list[int],
) -> None:
    """Send periodic pings on WebSocket ``ws``.

    Wait up to ``timeout`` seconds to send a ping and receive a pong; if a
    pong is received, wait ``interval`` seconds before the next ping.
    """
    for beat in range(MAX_ITERATIONS):
        with trio.move_on_after(timeout) as cancel_scope:
            await ws.ping()
        if cancel_scope.cancelled_caught:
            break
        beats.append(beat)
        await trio.sleep(interval)


async def test_heartbeat(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start(nursery, echo_server)
    beats: list[int] = []
    async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:  # noqa: SIM117
        async with trio.open_nursery() as heartbeat_nursery:
            heartbeat_nursery.start_soon(heartbeat, ws, 5, 1, beats)
            # Your application code goes here:
            for i in range(3):
                await ws.send_message(f"message {i}")
                assert await ws.get_message() == f"message {i}"
                await trio.sleep(2)
            heartbeat_nursery.cancel_scope.cancel()
    # Each ping got its pong: none of them waited out the timeout.
    assert len(beats) >= 3
    assert beats == list(range(len(beats)))


# -- connect_websocket_url with a nursery ----------------------------------------------


async def test_connect_websocket_url_with_nursery(nursery: trio.Nursery) -> None:
    server = await start(nursery, echo_server)
    with trio.fail_after(5):
        async with trio.open_nursery() as client_nursery:
            ws = await connect_websocket_url(
                client_nursery, f"ws://127.0.0.1:{server.port}/chat"
            )
            await ws.send_message("hello")
            assert await ws.get_message() == "hello"
            assert ws.path == "/chat"
            await ws.aclose()
    assert ws.closed is not None
    assert ws.closed.code == 1000


# -- A get_message loop that ends in ConnectionClosed ----------------------------------


async def send_three_then_close(request: WebSocketRequest) -> None:
    ws = await request.accept()
    for i in range(3):
        await ws.send_message(f"item {i}")
    # Returning from the handler closes the connection (code 1000).


async def get_messages(ws: WebSocketConnection, received: list[str | bytes]) -> None:
    for _ in range(MAX_ITERATIONS):
        try:
            message = await ws.get_message()
            received.append(message)
        except ConnectionClosed:
            logging.info("Connection closed: %s", ws.closed)
            break


async def test_get_message_loop_ends_with_connection_closed(
    nursery: trio.Nursery,
) -> None:
    server = await start(nursery, send_three_then_close)
    received: list[str | bytes] = []
    with trio.fail_after(5):
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}") as ws:
            await get_messages(ws, received)
            assert ws.closed is not None
            assert ws.closed.code == 1000
    assert received == ["item 0", "item 1", "item 2"]
