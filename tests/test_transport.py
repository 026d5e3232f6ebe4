"""The plain-TCP fast path: system calls on the socket, fairness, errors."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from trio_websocket._engine import SizingReader
from trio_websocket._transport import (
    SocketTransport,
    StreamTransport,
    transport_for,
)

TIMEOUT = 10


async def socket_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    left, right = trio.socket.socketpair()
    return trio.SocketStream(left), trio.SocketStream(right)


async def test_plain_sockets_get_the_fast_path() -> None:
    left, right = await socket_pair()
    memory, _ = trio.testing.memory_stream_pair()
    async with left, right:
        assert isinstance(transport_for(left), SocketTransport)
        assert type(transport_for(memory)) is StreamTransport


async def test_bytes_cross_in_both_directions() -> None:
    left, right = await socket_pair()
    async with left, right:
        sender, receiver = SocketTransport(left), SocketTransport(right)
        with trio.fail_after(TIMEOUT):
            await sender.send_all(memoryview(b"x" * 100_000))
            received = bytearray()
            while len(received) < 100_000:
                received += await receiver.receive(65536)
    assert received == b"x" * 100_000


async def test_receive_within_gives_up_on_a_silent_socket(
    autojump_clock: trio.testing.MockClock,
) -> None:
    left, right = await socket_pair()
    async with left, right:
        sender, receiver = SocketTransport(left), SocketTransport(right)
        with trio.fail_after(TIMEOUT):
            assert await receiver.receive_within(100, 5.0) is None
            await sender.send_all(b"late")
            assert await receiver.receive_within(100, 5.0) == b"late"
            await sender.send_all(b"then early")
            assert await receiver.receive_within(100, 0) == b"then early"


async def test_a_stream_transport_never_gives_up() -> None:
    sending, receiving = trio.testing.memory_stream_pair()
    receiver = StreamTransport(receiving)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sending.send_all, b"in its time")
        with trio.fail_after(TIMEOUT):
            assert await receiver.receive_within(100, 0) == b"in its time"


async def ticks_during(work: Callable[[], Awaitable[None]]) -> int:
    """How often another task got to run while ``work`` ran."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        with trio.fail_after(TIMEOUT):
            await work()
        nursery.cancel_scope.cancel()
    return ticks


async def test_a_reader_that_always_finds_data_still_yields() -> None:
    # A flood must not starve other tasks: each read that did not have to
    # wait is followed by a trip through the scheduler.
    left, right = await socket_pair()
    reader = SocketTransport(right)

    async def read_ten_times() -> None:
        for _ in range(10):
            await reader.receive(100)

    async with left, right:
        await left.send_all(b"y" * 50_000)
        assert await ticks_during(read_ten_times) >= 5


async def test_a_writer_that_never_blocks_still_yields() -> None:
    left, right = await socket_pair()
    writer = SocketTransport(left)

    async def write_200_times() -> None:
        for _ in range(200):
            await writer.send_all(b"z")

    async with left, right:
        assert await ticks_during(write_200_times) >= 3


async def test_end_of_stream_reads_empty() -> None:
    left, right = await socket_pair()
    async with right:
        await left.aclose()
        with trio.fail_after(TIMEOUT):
            assert await SocketTransport(right).receive(10) == b""


async def test_a_reset_peer_is_a_broken_resource() -> None:
    left, right = await socket_pair()
    async with right:
        # Unread data at close makes the kernel reset the connection.
        await right.send_all(b"unread")
        left.socket.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
        )
        await left.aclose()
        writer = SocketTransport(right)
        with pytest.raises(trio.BrokenResourceError), trio.fail_after(TIMEOUT):
            for _ in range(100):
                await writer.send_all(b"more")


async def test_a_closed_socket_is_a_closed_resource() -> None:
    left, right = await socket_pair()
    transport = SocketTransport(left)
    await left.aclose()
    await right.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await transport.send_all(b"late")
    with pytest.raises(trio.ClosedResourceError):
        await transport.receive(10)


def test_sizing_reader_reports_what_the_parser_still_needs() -> None:
    reader = SizingReader()
    parse = reader.read_exact(10)
    reader.feed_data(b"abc")
    next(parse)  # the parser waits: 10 bytes wanted, 3 buffered
    assert reader.missing == 7


@pytest.mark.parametrize("yield_first", [True, False])
async def test_a_cancelled_read_loses_no_bytes(yield_first: bool) -> None:
    # Yielding first, the read is cancelled before it looks and leaves the
    # bytes in the socket. Looking first, it yields after it took them: a
    # cancel then must not raise, or the bytes would be lost.
    left, right = await socket_pair()
    reader = SocketTransport(right)
    async with left, right:
        await left.send_all(b"keep me")
        received: bytes | bytearray = b""
        with trio.CancelScope() as scope:
            scope.cancel()
            received = await reader.receive(100, yield_first=yield_first)
        assert scope.cancelled_caught == yield_first
        if yield_first:
            with trio.fail_after(TIMEOUT):
                received = await reader.receive(100)
        assert received == b"keep me"
