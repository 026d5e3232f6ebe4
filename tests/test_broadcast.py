"""Broadcast: one message to many connections, never held up by a slow one."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio
import trio.testing
from conftest import server_url
from raw_http import HOST, upgraded
from websockets.frames import Frame, Opcode

from trio_websocket import (
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    broadcast,
    open_websocket_url,
)
from trio_websocket._broadcast import frame_message
from trio_websocket._settings import Compression

#: Upper bound for any wait that should end promptly; only reached on a bug.
TIMEOUT = 10
#: Far more than the slow reader's socket buffers can hold.
BIG = 256 * 2**10
FAST_CLIENTS = 3


class Registry:
    """A handler that accepts, files the connection under its path, and waits."""

    def __init__(self) -> None:
        self.by_path: dict[str, WebSocketConnection] = {}

    async def __call__(self, request: WebSocketRequest) -> None:
        self.by_path[request.path] = await request.accept()
        await trio.sleep_forever()


async def start_server(
    nursery: trio.Nursery, registry: Registry, compression: Compression
) -> WebSocketServer:
    """A server whose sockets have small send buffers, so a stalled peer blocks."""
    sock = trio.socket.socket()
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_SNDBUF, 8192)
    await sock.bind((HOST, 0))
    sock.listen()
    server = WebSocketServer(
        registry, [trio.SocketListener(sock)], compression=compression
    )
    started: WebSocketServer = await nursery.start(server.run)
    return started


@asynccontextmanager
async def fast_clients(
    server: WebSocketServer,
) -> AsyncIterator[list[WebSocketConnection]]:
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                open_websocket_url(
                    server_url(server, f"/fast{n}"), max_message_size=math.inf
                )
            )
            for n in range(FAST_CLIENTS)
        ]


async def receive_all(clients: list[WebSocketConnection], expected: bytes) -> None:
    with trio.fail_after(TIMEOUT):
        for client in clients:
            assert await client.get_message() == expected


@pytest.mark.parametrize(
    "compression", [None, "deflate"], ids=["framed-once", "deflate"]
)
async def test_a_slow_reader_is_skipped_and_holds_up_no_one(
    nursery: trio.Nursery, compression: Compression
) -> None:
    registry = Registry()
    server = await start_server(nursery, registry, compression)
    async with (
        fast_clients(server) as clients,
        upgraded(server.port, "/slow", receive_buffer=4096),
    ):
        await trio.testing.wait_all_tasks_blocked()
        slow = registry.by_path.pop("/slow")
        fast = list(registry.by_path.values())
        everyone = [*fast, slow]
        with trio.fail_after(TIMEOUT):  # a broadcast that waits on `slow` hangs
            await broadcast_twice(everyone, clients, compression)
    assert slow.closed is not None and slow.closed.code == 1006


async def broadcast_twice(
    everyone: list[WebSocketConnection],
    clients: list[WebSocketConnection],
    compression: Compression,
) -> None:
    """The slow reader (last) gets the first message only; the others get both."""
    *fast, slow = everyone
    first, second = b"1" * BIG, b"2" * BIG
    async with trio.open_nursery() as writes:
        result = await broadcast(writes, everyone, first)
        assert (result.started, result.skipped) == (everyone, [])
        await receive_all(clients, first)
        await trio.testing.wait_all_tasks_blocked()  # the slow write is stuck
        result = await broadcast(writes, everyone, second)
        assert (result.started, result.skipped) == (fast, [slow])
        await receive_all(clients, second)
        check_fast_stats(fast, compression)
        writes.cancel_scope.cancel()  # gives up on the slow reader


def check_fast_stats(fast: list[WebSocketConnection], compression: Compression) -> None:
    """Two messages of BIG bytes each were counted on every fast connection."""
    assert [c.stats.messages_sent for c in fast] == [2] * FAST_CLIENTS
    assert [c.stats.bytes_sent for c in fast] == [2 * BIG] * FAST_CLIENTS
    if compression is None:  # the same frame: a 10-byte header, then the payload
        assert [c.stats.wire_bytes_sent for c in fast] == [2 * (BIG + 10)] * 3
    else:  # each connection compressed the message for itself
        assert all(c.stats.wire_bytes_sent < BIG for c in fast)


@pytest.mark.parametrize("message", ["h\u00e9llo", b"\x00\xff", bytearray(b"ba")])
async def test_text_and_binary_arrive_as_sent(
    nursery: trio.Nursery, message: str | bytes
) -> None:
    registry = Registry()
    server = await start_server(nursery, registry, None)
    async with fast_clients(server) as clients:
        await trio.testing.wait_all_tasks_blocked()
        result = await broadcast(nursery, registry.by_path.values(), message)
        assert len(result.started) == FAST_CLIENTS
        with trio.fail_after(TIMEOUT):
            for client in clients:
                received = await client.get_message()
                assert type(received) is (str if isinstance(message, str) else bytes)
                assert received == message


async def test_closed_connections_are_left_out(nursery: trio.Nursery) -> None:
    registry = Registry()
    server = await start_server(nursery, registry, None)
    async with fast_clients(server) as clients:
        await trio.testing.wait_all_tasks_blocked()
        gone = registry.by_path["/fast0"]
        await gone.aclose()
        result = await broadcast(nursery, registry.by_path.values(), "still here")
        assert result.closed == [gone]
        assert gone not in result.started
        with trio.fail_after(TIMEOUT):
            for client in clients[1:]:
                assert await client.get_message() == "still here"


async def test_client_side_connections_frame_for_themselves(
    nursery: trio.Nursery, echo_server: WebSocketServer
) -> None:
    url = server_url(echo_server)
    async with open_websocket_url(url) as one, open_websocket_url(url) as two:
        result = await broadcast(nursery, [one, two], "echo me")
        assert result.started == [one, two]
        with trio.fail_after(TIMEOUT):
            assert await one.get_message() == "echo me"
            assert await two.get_message() == "echo me"


async def test_anything_but_text_or_bytes_is_refused(nursery: trio.Nursery) -> None:
    with pytest.raises(ValueError):
        await broadcast(nursery, [], 42)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
@pytest.mark.parametrize("text", [True, False], ids=["text", "binary"])
def test_a_message_is_framed_once_as_the_engine_frames_it(
    size: int, text: bool
) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    message: str | bytes = payload.decode("latin-1") if text else payload
    encoded = message.encode() if isinstance(message, str) else message
    opcode = Opcode.TEXT if text else Opcode.BINARY
    framed = frame_message(message)
    assert framed.frame == Frame(opcode, encoded).serialize(mask=False)
    assert framed.payload_size == len(encoded)
