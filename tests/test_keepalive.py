"""Keepalive: a silent peer is dropped with 1011, a slow consumer is not.

The silent peers are raw TCP endpoints that complete the opening handshake
with the ``websockets`` sans-I/O engine and then read everything without
ever answering, so no pong ever comes back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from conftest import echo_handler, server_url
from websockets.client import ClientProtocol
from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from trio_websocket import (
    ConnectionClosed,
    ConnectionOptions,
    DisconnectionTimeout,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    open_websocket_url,
    serve_websocket,
)

Handler = Callable[[WebSocketRequest], Awaitable[None]]
INTERVAL = 5.0
TIMEOUT = 2.0


async def serve(nursery: trio.Nursery, handler: Handler, **options: Any) -> str:
    """Serve ``handler`` on 127.0.0.1 and a free port; return the server URL."""
    server: WebSocketServer = await nursery.start(
        partial(serve_websocket, handler, "127.0.0.1", 0, None, **options)
    )
    return server_url(server)


async def drain(stream: trio.abc.Stream) -> None:
    """Read and discard until the peer closes: never answer anything."""
    try:
        while await stream.receive_some():
            pass
    except trio.BrokenResourceError:
        pass


async def silent_server_peer(stream: trio.SocketStream) -> None:
    """Accept the WebSocket handshake, then never send another byte."""
    protocol = ServerProtocol()
    events: list[object] = []
    while not events:
        protocol.receive_data(await stream.receive_some())
        events = list(protocol.events_received())
    request = events[0]
    assert isinstance(request, Request)
    protocol.send_response(protocol.accept(request))
    await stream.send_all(b"".join(protocol.data_to_send()))
    await drain(stream)


async def start_silent_server(nursery: trio.Nursery) -> str:
    listeners: list[trio.SocketListener] = await nursery.start(
        partial(trio.serve_tcp, silent_server_peer, 0, host="127.0.0.1")
    )
    port = listeners[0].socket.getsockname()[1]
    return f"ws://127.0.0.1:{port}/"


async def silent_client_peer(url: str) -> None:
    """Open a WebSocket as a client, then never send another byte."""
    protocol = ClientProtocol(parse_uri(url))
    protocol.send_request(protocol.connect())
    port = int(url.rsplit(":", 1)[1].rstrip("/"))
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(b"".join(protocol.data_to_send()))
        while not protocol.events_received():
            protocol.receive_data(await stream.receive_some())
        await drain(stream)


def close_code(connection: WebSocketConnection) -> int | None:
    return None if connection.closed is None else connection.closed.code


# -- A silent peer -----------------------------------------------------------


async def test_client_drops_a_server_that_never_answers_pings(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    url = await start_silent_server(nursery)
    async with open_websocket_url(
        url, ping_interval=INTERVAL, ping_timeout=TIMEOUT, disconnect_timeout=1
    ) as client:
        start = trio.current_time()
        with trio.fail_after(60), pytest.raises(ConnectionClosed) as closed:
            await client.get_message()  # a waiting consumer learns of it
        # Not before the first ping went unanswered for the whole timeout.
        assert trio.current_time() - start >= INTERVAL + TIMEOUT
        assert closed.value.reason is not None
        assert closed.value.reason.code == 1011
        assert close_code(client) == 1011
        with pytest.raises(ConnectionClosed):
            await client.send_message("too late")


async def test_server_drops_a_client_that_never_answers_pings(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    outcome: list[int | None] = []
    done = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        connection = await request.accept()
        try:
            await connection.get_message()
        except ConnectionClosed as exc:
            outcome.append(None if exc.reason is None else exc.reason.code)
        done.set()

    url = await serve(
        nursery,
        handler,
        ping_interval=INTERVAL,
        ping_timeout=TIMEOUT,
        disconnect_timeout=1,
    )
    nursery.start_soon(silent_client_peer, url)
    with trio.fail_after(60):
        await done.wait()
    assert outcome == [1011]


async def test_ping_timeout_defaults_to_the_interval(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    url = await start_silent_server(nursery)
    async with open_websocket_url(url, ping_interval=INTERVAL) as client:
        start = trio.current_time()
        with trio.fail_after(60), pytest.raises(ConnectionClosed):
            await client.get_message()
        assert trio.current_time() - start >= 2 * INTERVAL
        assert close_code(client) == 1011


async def test_no_keepalive_by_default(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Without ping_interval a silent peer is left alone, as before."""
    url = await start_silent_server(nursery)
    with pytest.raises(DisconnectionTimeout):  # nor is our close answered
        async with open_websocket_url(url, disconnect_timeout=1) as client:
            await trio.sleep(3600)
            assert client.closed is None


# -- A healthy peer ----------------------------------------------------------


@pytest.mark.parametrize("side", ["client", "server", "both"])
async def test_healthy_peer_stays_connected_over_many_intervals(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, side: str
) -> None:
    keepalive: ConnectionOptions = {"ping_interval": 1.0, "ping_timeout": 0.5}
    nothing: ConnectionOptions = {}
    server_options = keepalive if side in ("server", "both") else nothing
    client_options = keepalive if side in ("client", "both") else nothing
    url = await serve(nursery, echo_handler, **server_options)
    async with open_websocket_url(url, **client_options) as client:
        await trio.sleep(100)  # a hundred pings answered
        assert client.closed is None
        await client.send_message("still here")
        with trio.fail_after(1):
            assert await client.get_message() == "still here"
    assert close_code(client) == 1000


# -- A slow consumer is not a dead peer --------------------------------------

BUSY = 60.0  # virtual seconds the server's handler does not read
MESSAGES = [f"message {index}" for index in range(5)]


def slow_consumer(report: list[str], done: trio.Event | None = None) -> Handler:
    """Handler: accept, stay busy, then read and acknowledge the messages."""

    async def handler(request: WebSocketRequest) -> None:
        connection = await request.accept()
        await trio.sleep(BUSY)
        try:
            received = [await connection.get_message() for _ in MESSAGES]
            report.extend(str(message) for message in received)
            await connection.send_message(f"got {len(received)}")
            await connection.get_message()
        except ConnectionClosed as exc:
            report.append(f"closed {exc.reason.code if exc.reason else None}")
        if done is not None:
            done.set()

    return handler


@pytest.mark.parametrize(
    ("queue_bytes", "survives"),
    [(64 * 1024, True), (0, False)],
    ids=["byte-budget", "no-budget"],
)
async def test_slow_consumer_under_the_peers_keepalive(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    queue_bytes: int,
    survives: bool,
) -> None:
    """A server that does not read for a minute, under a client's keepalive.

    The client pings every second and sends a few small messages. The
    server's queue holds one message (the default), so it is full at once.

    * With ``message_queue_bytes`` (64 KiB), the server's reader reads on
      past the full queue within that budget, so it keeps answering pings:
      the connection survives the minute and then every message arrives.
    * Without it (``message_queue_bytes=0``, the established behaviour) the
      reader stops reading as soon as the queue is full, the pings wait
      unread in the socket, and the client gives up on the "dead" peer with
      1011 after ``ping_interval + ping_timeout`` seconds.
    """
    report: list[str] = []
    url = await serve(nursery, slow_consumer(report), message_queue_bytes=queue_bytes)
    async with open_websocket_url(url, ping_interval=1, ping_timeout=1) as client:
        for message in MESSAGES:
            await client.send_message(message)
        if survives:
            with trio.fail_after(2 * BUSY):
                assert await client.get_message() == f"got {len(MESSAGES)}"
            assert trio.current_time() >= BUSY  # many pings were answered
        else:
            with trio.fail_after(2 * BUSY), pytest.raises(ConnectionClosed) as closed:
                await client.get_message()
            assert closed.value.reason is not None
            assert closed.value.reason.code == 1011
            assert trio.current_time() < BUSY  # given up while the server slept
    if survives:
        assert report[: len(MESSAGES)] == MESSAGES


async def test_peer_close_is_honoured_while_the_queue_is_full(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """With a byte budget, a busy server still answers the client's close.

    The client's close handshake completes at once instead of waiting for
    its disconnect timeout, and the busy handler still gets the messages
    sent before the close, then the close itself.
    """
    report: list[str] = []
    done = trio.Event()
    url = await serve(
        nursery, slow_consumer(report, done), message_queue_bytes=64 * 1024
    )
    async with open_websocket_url(url, disconnect_timeout=BUSY / 2) as client:
        for message in MESSAGES:
            await client.send_message(message)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        await client.aclose()
        assert trio.current_time() - start < 1
        assert close_code(client) == 1000
    with trio.fail_after(2 * BUSY):
        await done.wait()
    assert report == [*MESSAGES, "closed 1000"]
