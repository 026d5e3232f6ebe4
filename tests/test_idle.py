"""Resting readers (``_idle.py``), over real loopback TCP.

A connection whose socket stays quiet hands it to the run's watcher and its
reader task ends. These tests wait for that (no reader task left anywhere in
the run), then check that nothing a reader task guarantees is lost: messages
arrive, pings from the peer are answered although the application does not
read, our own pings complete, a close from the peer is noticed and answered,
closing works from either side, and a server that is cancelled still closes
the resting connections' sockets.
"""

from __future__ import annotations

import contextlib
import select
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio
from raw_http import HOST
from raw_peer import (
    CLOSE,
    PING,
    PONG,
    TEST_BOUND,
    RawPeer,
    close_payload,
    frame,
    upgraded_raw_client,
)

import trio_websocket._idle
from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    open_websocket,
    serve_websocket,
)

Pair = tuple[WebSocketConnection, WebSocketConnection]


def tasks_named(fragment: str) -> int:
    """How many tasks of this run have ``fragment`` in their name."""
    count = 0
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        assert task is not None
        count += fragment in task.name
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return count


async def until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` (the caller bounds the time)."""
    while not condition():  # noqa: ASYNC110 (what it waits for signals nothing)
        await trio.sleep(0.02)


async def until_every_reader_rests() -> None:
    await until(lambda: tasks_named(".WebSocketConnection._reader_task") == 0)


@asynccontextmanager
async def quiet_server() -> AsyncIterator[
    tuple[WebSocketServer, list[WebSocketConnection]]
]:
    """A server whose handlers accept, then never read; and their connections."""
    accepted: list[WebSocketConnection] = []

    async def handler(request: WebSocketRequest) -> None:
        accepted.append(await request.accept())
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, HOST, 0, None)
        yield server, accepted
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def resting_pair() -> AsyncIterator[Pair]:
    """A (server, client) pair over TCP whose readers both rest."""
    with trio.fail_after(TEST_BOUND):
        async with (
            quiet_server() as (server, accepted),
            open_websocket(HOST, server.port, "/", use_ssl=False) as client,
        ):
            await until(lambda: bool(accepted))
            await until_every_reader_rests()
            yield accepted[0], client


async def test_messages_wake_resting_connections_both_ways() -> None:
    async with resting_pair() as (server, client):
        await client.send_message("to the server")
        assert await server.get_message() == "to the server"
        await until_every_reader_rests()
        await server.send_message(b"to the client")
        assert await client.get_message() == b"to the client"


async def test_our_ping_completes_while_both_readers_rest() -> None:
    async with resting_pair() as (server, client):
        await server.ping(b"server")
        await until_every_reader_rests()
        await client.ping(b"client")
    assert server.stats.last_ping_rtt is not None
    assert client.stats.last_ping_rtt is not None


async def test_closing_a_resting_connection_completes_the_handshake() -> None:
    async with resting_pair() as (server, client):
        await client.aclose()
        await until(lambda: server.closed is not None)
    assert client.closed == CloseReason(1000, None)
    assert server.closed == CloseReason(1000, None)
    assert not client.close_timed_out


@asynccontextmanager
async def resting_server_and_raw_client() -> AsyncIterator[
    tuple[WebSocketConnection, RawPeer]
]:
    """A server connection whose reader rests, and a raw client at its end."""
    with trio.fail_after(TEST_BOUND):
        async with (
            quiet_server() as (server, accepted),
            upgraded_raw_client(server.port) as peer,
        ):
            await until(lambda: bool(accepted))
            await until_every_reader_rests()
            yield accepted[0], peer


async def test_a_resting_server_answers_a_ping_nobody_reads_for() -> None:
    async with resting_server_and_raw_client() as (connection, peer):
        await peer.stream.send_all(frame(PING, b"are you there"))
        assert await peer.read_frame(masked=False) == (PONG, b"are you there")
        assert connection.closed is None


async def test_a_resting_server_notices_and_answers_the_peers_close() -> None:
    async with resting_server_and_raw_client() as (connection, peer):
        await peer.stream.send_all(frame(CLOSE, close_payload(1001)))
        assert await peer.read_close_code(masked=False) == 1001
        await until(lambda: connection.closed is not None)
    assert connection.closed == CloseReason(1001, None)


async def test_a_cancelled_server_drops_its_resting_connections() -> None:
    with trio.fail_after(TEST_BOUND):
        async with trio.open_nursery() as outer:
            serving = trio.CancelScope()
            accepted: list[WebSocketConnection] = []

            async def handler(request: WebSocketRequest) -> None:
                accepted.append(await request.accept())
                await trio.sleep_forever()

            async def serve(task_status: trio.TaskStatus[WebSocketServer]) -> None:
                with serving:
                    await serve_websocket(
                        handler, HOST, 0, None, task_status=task_status
                    )

            server = await outer.start(serve)
            async with open_websocket(HOST, server.port, "/", use_ssl=False) as client:
                await until(lambda: bool(accepted))
                await until_every_reader_rests()
                serving.cancel()
                with pytest.raises(ConnectionClosed) as raised:
                    await client.get_message()
    assert raised.value.reason == CloseReason(1006, None)
    assert accepted[0].closed == CloseReason(1006, None)


async def test_the_watcher_ends_when_nothing_rests() -> None:
    async with resting_pair():
        assert tasks_named("trio-websocket watcher") == 1
    with trio.fail_after(TEST_BOUND):
        await until(lambda: tasks_named("trio-websocket watcher") == 0)


async def test_without_a_watcher_the_reader_stays_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def out_of_descriptors() -> None:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(select, "epoll", out_of_descriptors)
    with trio.fail_after(TEST_BOUND):
        async with (
            quiet_server() as (server, accepted),
            open_websocket(HOST, server.port, "/", use_ssl=False) as client,
        ):
            await until(lambda: bool(accepted))
            await trio.sleep(3 * trio_websocket._idle.REST_AFTER)
            assert tasks_named(".WebSocketConnection._reader_task") == 2
            await accepted[0].send_message("still here")
            assert await client.get_message() == "still here"


async def test_after_traffic_a_waiting_consumer_leaves_no_reader_task() -> None:
    received: list[str | bytes] = []
    with trio.fail_after(TEST_BOUND):
        async with resting_pair() as (server, client), trio.open_nursery() as nursery:

            async def consume() -> None:
                async for message in server:  # ends at the close
                    received.append(message)

            nursery.start_soon(consume)
            await client.send_message("first")  # from now on the consumer reads
            await until(lambda: len(received) == 1)
            await until_every_reader_rests()
            await client.ping(b"while the consumer reads")
            await until_every_reader_rests()
            await client.send_message("second")
            await until(lambda: len(received) == 2)
            await until_every_reader_rests()
            await client.aclose()
    assert received == ["first", "second"]
    assert server.closed == CloseReason(1000, None)


async def consumer_that_rests_the_reader(
    nursery: trio.Nursery, server: WebSocketConnection, client: WebSocketConnection
) -> trio.CancelScope:
    """Start a consumer on ``server`` that reads the socket itself (after one
    message) until every reader rests; its scope cancels it."""
    scope = trio.CancelScope()
    received: list[str | bytes] = []

    async def consume() -> None:
        with scope, contextlib.suppress(ConnectionClosed):
            while True:
                received.append(await server.get_message())

    nursery.start_soon(consume)
    await client.send_message("first")
    await until(lambda: received == ["first"])
    await until_every_reader_rests()
    return scope


async def test_closing_while_the_consumer_holds_the_socket() -> None:
    async with resting_pair() as (server, client), trio.open_nursery() as nursery:
        await consumer_that_rests_the_reader(nursery, server, client)
        await server.aclose(1001, "bye")
        assert server.closed == CloseReason(1001, "bye")
        with pytest.raises(ConnectionClosed):
            await client.get_message()


async def test_a_consumer_giving_up_hands_the_socket_back() -> None:
    async with resting_pair() as (server, client), trio.open_nursery() as nursery:
        scope = await consumer_that_rests_the_reader(nursery, server, client)
        scope.cancel()
        await client.ping(b"nobody reads now")  # the reader must answer
        await client.send_message("kept")
        assert await server.get_message() == "kept"
