"""Consumers that read the socket themselves (``_turns.py``), over real TCP.

After the first message, a consumer waiting in ``get_message`` reads the
socket in its own task while the reader task lends it the socket. These tests
check that nothing a reader task guarantees is lost on that path: pings are
answered whether or not anybody reads, closes and aborts reach the waiting
consumer, cancellation loses no data, several consumers share the messages,
and bad frames still get their close code.
"""

from __future__ import annotations

import random
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from raw_http import HOST
from raw_peer import (
    CLOSE,
    LIMIT,
    PING,
    SERVER_BAD_FRAMES,
    TEST_BOUND,
    TEXT,
    frame,
    upgraded_raw_client,
)

from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket,
    serve_websocket,
)

Pair = tuple[WebSocketConnection, WebSocketConnection]


@asynccontextmanager
async def tcp_pair() -> AsyncIterator[Pair]:
    """A (server, client) pair of connections over loopback TCP."""
    accepted: trio.MemorySendChannel[WebSocketConnection]
    accepted, receive = trio.open_memory_channel(1)

    async def handler(request: WebSocketRequest) -> None:
        await accepted.send(await request.accept())
        await trio.sleep_forever()

    with trio.fail_after(TEST_BOUND):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_websocket, handler, HOST, 0, None)
            async with open_websocket(HOST, server.port, "/", use_ssl=False) as client:
                yield await receive.receive(), client
            nursery.cancel_scope.cancel()


async def hand_over(server: WebSocketConnection, client: WebSocketConnection) -> None:
    """Pass one message, so the server's consumer reads the socket from now on."""
    await client.send_message("first")
    assert await server.get_message() == "first"


def reads_itself(connection: WebSocketConnection) -> bool:
    turns = connection._turns
    return turns is not None and turns.consumer_reading


async def waiting_consumer(
    nursery: trio.Nursery, connection: WebSocketConnection
) -> list[str | bytes]:
    """Start a task waiting for one message; return the list it will fill."""
    received: list[str | bytes] = []

    async def consume() -> None:
        received.append(await connection.get_message())

    nursery.start_soon(consume)
    await trio.testing.wait_all_tasks_blocked()
    return received


async def test_after_the_first_message_the_consumer_reads_the_socket() -> None:
    async with tcp_pair() as (server, client), trio.open_nursery() as nursery:
        await hand_over(server, client)
        received = await waiting_consumer(nursery, server)
        assert reads_itself(server)
        await client.send_message(b"second")
    assert received == [b"second"]
    assert not reads_itself(server)


async def test_a_ping_is_answered_while_the_consumer_waits() -> None:
    async with tcp_pair() as (server, client), trio.open_nursery() as nursery:
        await hand_over(server, client)
        received = await waiting_consumer(nursery, server)
        await client.ping(b"waiting")
        await client.send_message("after the ping")
    assert received == ["after the ping"]


async def test_a_ping_is_answered_while_the_application_does_not_read() -> None:
    async with tcp_pair() as (server, client):
        await hand_over(server, client)
        # Nobody calls get_message now: the reader task must take over.
        await client.ping(b"busy")
        await client.send_message("later")
        assert await server.get_message() == "later"


async def test_our_ping_completes_while_the_consumer_reads() -> None:
    async with tcp_pair() as (server, client), trio.open_nursery() as nursery:
        await hand_over(server, client)
        await waiting_consumer(nursery, server)
        await server.ping(b"from the server")
        assert server.stats.last_ping_rtt is not None
        await client.send_message("done")


async def test_cancelled_reads_lose_no_message() -> None:
    count = 300
    rng = random.Random(6455)
    async with tcp_pair() as (server, client), trio.open_nursery() as nursery:
        await hand_over(server, client)

        async def produce() -> None:
            for index in range(count):
                await client.send_message(str(index))
                if index % 7 == 0:
                    await trio.sleep(0.001)

        nursery.start_soon(produce)
        received: list[str | bytes] = []
        while len(received) < count:
            # Deadlines short enough that many reads are cancelled midway.
            with trio.move_on_after(rng.choice([0, 0.0002, 0.001, 0.01])):
                received.append(await server.get_message())
    assert received == [str(index) for index in range(count)]


async def test_two_consumers_share_the_messages() -> None:
    count = 100
    async with tcp_pair() as (server, client):
        await hand_over(server, client)
        received: list[list[str | bytes]] = [[], []]

        async def consume(mine: list[str | bytes]) -> None:
            with pytest.raises(ConnectionClosed):
                while True:
                    mine.append(await server.get_message())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume, received[0])
            nursery.start_soon(consume, received[1])
            await trio.testing.wait_all_tasks_blocked()
            for index in range(count):
                await client.send_message(str(index))
                if index % 10 == 0:
                    await trio.sleep(0.001)
            await client.aclose(4000, "that is all")
    both = received[0] + received[1]
    assert sorted(both, key=int) == [str(index) for index in range(count)]
    # Each consumer saw its own share in order.
    for mine in received:
        assert mine == sorted(mine, key=int)


async def test_a_local_close_reaches_the_consumer_reading() -> None:
    async with tcp_pair() as (server, client), trio.open_nursery() as nursery:
        await hand_over(server, client)
        outcome: list[CloseReason | None] = []

        async def consume() -> None:
            with pytest.raises(ConnectionClosed) as caught:
                await server.get_message()
            outcome.append(caught.value.reason)

        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        await server.aclose(4001, "server leaves")
        with pytest.raises(ConnectionClosed):
            await client.get_message()
    assert [reason.code if reason else None for reason in outcome] == [4001]
    assert client.closed is not None and client.closed.code == 4001


async def test_a_peer_close_reaches_the_consumer_reading() -> None:
    async with tcp_pair() as (server, client), trio.open_nursery() as nursery:
        await hand_over(server, client)

        async def consume() -> None:
            with pytest.raises(ConnectionClosed) as caught:
                await server.get_message()
            assert caught.value.reason is not None
            assert caught.value.reason.code == 4002

        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        await client.aclose(4002, "client leaves")
    assert server.closed == CloseReason(4002, "client leaves")


async def test_a_vanishing_peer_reaches_the_consumer_reading() -> None:
    async with tcp_pair() as (server, client), trio.open_nursery() as nursery:
        await hand_over(server, client)

        async def consume() -> None:
            with pytest.raises(ConnectionClosed):
                await server.get_message()

        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        await client._transport.aclose_forcefully()  # no close frame
    assert server.closed is not None and server.closed.code == 1006


async def test_the_reader_takes_back_a_socket_nobody_reads() -> None:
    async with tcp_pair() as (server, client):
        await hand_over(server, client)
        # The peer closes while the application does something else; the
        # reader task notices, answers, and the connection closes cleanly.
        await client.aclose(1000, "bye")
        assert client.closed == CloseReason(1000, "bye")
        with pytest.raises(ConnectionClosed):
            await server.get_message()
        assert server.closed == CloseReason(1000, "bye")


@dataclass
class Recording:
    """What a recording server's handler received, and when it finished."""

    outcomes: list[str | bytes | CloseReason | None] = field(default_factory=list)
    done: trio.Event = field(default_factory=trio.Event)


async def recording_server(
    nursery: trio.Nursery, **options: Any
) -> tuple[int, Recording]:
    """A server whose handler records every message, then the close reason."""
    recording = Recording()

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            while True:
                recording.outcomes.append(await ws.get_message())
        except ConnectionClosed as exc:
            recording.outcomes.append(exc.reason)
        recording.done.set()

    server = await nursery.start(
        partial(serve_websocket, handler, HOST, 0, None, **options)
    )
    return server.port, recording


def ended_with(recording: Recording, code: int) -> bool:
    """Whether the handler got "fine", then a close with ``code``."""
    first, last = recording.outcomes
    return first == "fine" and isinstance(last, CloseReason) and last.code == code


@pytest.mark.parametrize(("bad_bytes", "code"), SERVER_BAD_FRAMES)
async def test_bad_frames_read_by_the_consumer_get_their_close_code(
    nursery: trio.Nursery, bad_bytes: bytes, code: int
) -> None:
    port, recording = await recording_server(nursery, max_message_size=LIMIT)
    with trio.fail_after(TEST_BOUND):
        async with upgraded_raw_client(port) as peer:
            await peer.stream.send_all(frame(TEXT, b"fine"))
            await trio.testing.wait_all_tasks_blocked()
            await peer.stream.send_all(bad_bytes)
            assert await peer.read_close_code(masked=False) == code
            assert await peer.read_to_eof() == b""
        await recording.done.wait()
    assert ended_with(recording, code)


async def test_keepalive_drops_a_silent_peer_while_the_consumer_reads(
    nursery: trio.Nursery,
) -> None:
    port, recording = await recording_server(
        nursery, ping_interval=0.05, ping_timeout=0.05
    )
    pings = 0
    with trio.fail_after(TEST_BOUND):
        async with upgraded_raw_client(port) as peer:
            await peer.stream.send_all(frame(TEXT, b"fine"))
            # Read what the server sends without ever answering its pings.
            for _ in range(100):
                opcode, payload = await peer.read_frame(masked=False)
                if opcode != PING:
                    break
                pings += 1
            assert opcode == CLOSE
            assert struct.unpack("!H", payload[:2])[0] == 1011
        await recording.done.wait()
    assert pings >= 1
    assert ended_with(recording, 1011)


async def test_large_messages_arrive_whole_when_the_consumer_reads() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    async with tcp_pair() as (server, client), trio.open_nursery() as nursery:
        await hand_over(server, client)
        nursery.start_soon(client.send_message, payload)
        assert await server.get_message() == payload
        text = "é" * 100_000
        nursery.start_soon(client.send_message, text)
        assert await server.get_message() == text
