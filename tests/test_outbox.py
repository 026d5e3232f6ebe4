"""Small frames queued behind a blocked write go out together (``_outbox.py``).

A server connection sends to a raw client that does not read at first, so a
large message blocks in its write while other tasks send small ones. When the
client reads, the small frames must reach it whole and in order, in fewer
system calls than messages; a sender cancelled while waiting sends nothing;
and a frame the kernel takes only in part is finished before anything else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from raw_http import HOST
from raw_peer import BINARY, TEST_BOUND, TEXT, RawPeer, upgraded_raw_client

from trio_websocket import WebSocketConnection, WebSocketRequest, serve_websocket
from trio_websocket._transport import SocketTransport

#: Large enough to fill the loopback socket's buffers, so its write waits.
BLOCKING_SIZE = 32 * 2**20
SMALL_SENDERS = 20


@asynccontextmanager
async def server_and_silent_client() -> AsyncIterator[
    tuple[WebSocketConnection, RawPeer]
]:
    """A server connection, and the raw client at its other end (not reading yet)."""
    accepted: list[WebSocketConnection] = []

    async def handler(request: WebSocketRequest) -> None:
        accepted.append(await request.accept())
        await trio.sleep_forever()

    with trio.fail_after(TEST_BOUND):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_websocket, handler, HOST, 0, None)
            async with upgraded_raw_client(server.port) as peer:
                while not accepted:  # noqa: ASYNC110 (nothing signals it)
                    await trio.sleep(0.01)
                yield accepted[0], peer
            nursery.cancel_scope.cancel()


def count_calls(monkeypatch: pytest.MonkeyPatch, name: str, calls: list[bytes]) -> None:
    """Record the data of every call to ``SocketTransport.<name>``."""
    original: Callable[..., object] = getattr(SocketTransport, name)

    def recorded(transport: SocketTransport, data: bytes, *args: object) -> object:
        calls.append(bytes(data))
        return original(transport, data, *args)

    monkeypatch.setattr(SocketTransport, name, recorded)


async def start_blocked_sender(
    nursery: trio.Nursery, connection: WebSocketConnection
) -> None:
    """Start a task whose large message waits for the client to read."""
    nursery.start_soon(connection.send_message, b"\0" * BLOCKING_SIZE)
    await trio.testing.wait_all_tasks_blocked()


async def start_small_senders(
    nursery: trio.Nursery, connection: WebSocketConnection, sent: list[str]
) -> list[trio.CancelScope]:
    """Start the small senders, one after the other; each gets a cancel scope."""
    scopes = []
    for index in range(SMALL_SENDERS):
        scope = trio.CancelScope()

        async def send(
            message: str = f"small {index}", scope: trio.CancelScope = scope
        ) -> None:
            with scope:
                await connection.send_message(message)
                sent.append(message)

        scopes.append(scope)
        nursery.start_soon(send)
        await trio.testing.wait_all_tasks_blocked()
    return scopes


async def read_messages(peer: RawPeer, count: int) -> list[str]:
    """Skip the large message, then read ``count`` text messages."""
    assert await peer.read_frame(masked=False) == (BINARY, b"\0" * BLOCKING_SIZE)
    received = []
    for _ in range(count):
        opcode, payload = await peer.read_frame(masked=False)
        assert opcode == TEXT
        received.append(payload.decode())
    return received


async def test_waiting_small_frames_go_out_in_one_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writes: list[bytes] = []
    sent: list[str] = []
    async with (
        server_and_silent_client() as (connection, peer),
        trio.open_nursery() as nursery,
    ):
        await start_blocked_sender(nursery, connection)
        count_calls(monkeypatch, "send_all", writes)
        count_calls(monkeypatch, "write_nowait", writes)
        await start_small_senders(nursery, connection, sent)
        received = await read_messages(peer, SMALL_SENDERS)
    expected = [f"small {index}" for index in range(SMALL_SENDERS)]
    assert received == expected
    assert sorted(sent) == sorted(expected)
    assert len(writes) < SMALL_SENDERS / 2, [len(data) for data in writes]


async def test_a_sender_cancelled_while_waiting_sends_nothing() -> None:
    sent: list[str] = []
    async with (
        server_and_silent_client() as (connection, peer),
        trio.open_nursery() as nursery,
    ):
        await start_blocked_sender(nursery, connection)
        scopes = await start_small_senders(nursery, connection, sent)
        for scope in scopes[::2]:
            scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        received = await read_messages(peer, SMALL_SENDERS // 2)
        await connection.send_message("after")
        assert await peer.read_frame(masked=False) == (TEXT, b"after")
    expected = [f"small {index}" for index in range(1, SMALL_SENDERS, 2)]
    assert received == expected
    assert sorted(sent) == sorted(expected)
    assert all(scope.cancelled_caught for scope in scopes[::2])


async def test_a_frame_written_in_part_is_finished_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The kernel takes the first waiting frame and three bytes of the next.
    original = SocketTransport.write_nowait

    def takes_a_frame_and_a_bit(transport: SocketTransport, data: bytes) -> int:
        first = 2 + len("small 0")
        return original(transport, data[: first + 3])

    sent: list[str] = []
    async with (
        server_and_silent_client() as (connection, peer),
        trio.open_nursery() as nursery,
    ):
        await start_blocked_sender(nursery, connection)
        monkeypatch.setattr(SocketTransport, "write_nowait", takes_a_frame_and_a_bit)
        await start_small_senders(nursery, connection, sent)
        received = await read_messages(peer, SMALL_SENDERS)
    assert received == [f"small {index}" for index in range(SMALL_SENDERS)]
    assert len(sent) == SMALL_SENDERS
