"""Streaming large messages fragment by fragment, and the byte-stream adapter."""

from __future__ import annotations

import contextlib
import math
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from conftest import echo_handler, server_url

from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    WebSocketStream,
    open_websocket_pair,
    open_websocket_url,
    serve_websocket,
    wrap_client_stream,
    wrap_server_stream,
)

Handler = Callable[[WebSocketRequest], Awaitable[None]]
Chunk = str | bytes
KiB = 1024
MiB = 1024 * KiB


async def serve(nursery: trio.Nursery, handler: Handler, **options: Any) -> str:
    """Serve ``handler`` on 127.0.0.1 and a free port; return the server URL."""
    server: WebSocketServer = await nursery.start(
        partial(serve_websocket, handler, "127.0.0.1", 0, None, **options)
    )
    return server_url(server)


def accepting(body: Callable[[WebSocketConnection], Awaitable[None]]) -> Handler:
    """A handler that accepts, runs ``body`` and ignores the connection closing."""

    async def handler(request: WebSocketRequest) -> None:
        connection = await request.accept()
        with contextlib.suppress(ConnectionClosed):
            await body(connection)

    return handler


async def fragments_of(connection: WebSocketConnection) -> list[Chunk]:
    with trio.fail_after(5):
        return [piece async for piece in connection.get_fragments()]


async def report_fragments(connection: WebSocketConnection) -> None:
    """Server body: for each message, send back its fragment count, then it."""
    while True:
        pieces = await fragments_of(connection)
        await connection.send_message(str(len(pieces)))
        await connection.send_message(join(pieces))


def join(pieces: list[Chunk]) -> Chunk:
    """The message made of ``pieces``, all str or all bytes."""
    if isinstance(pieces[0], str):
        return "".join(piece for piece in pieces if isinstance(piece, str))
    return b"".join(piece for piece in pieces if isinstance(piece, bytes))


async def closed_code(connection: WebSocketConnection) -> int:
    """Wait for the next message, which must not come: return the close code."""
    with trio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
        await connection.get_message()
    assert closed.value.reason is not None
    return closed.value.reason.code


# -- Receiving fragment by fragment ------------------------------------------


async def test_fragments_are_yielded_as_they_arrive(nursery: trio.Nursery) -> None:
    """The second fragment is only produced once the first was received."""
    first_received = trio.Event()

    async def chunks() -> AsyncIterator[bytes]:
        yield b"first"
        await first_received.wait()
        yield b"second"

    async def send(connection: WebSocketConnection) -> None:
        await connection.send_fragments(chunks())
        await connection.get_message()

    url = await serve(nursery, accepting(send))
    received: list[Chunk] = []
    async with open_websocket_url(url) as client:
        with trio.fail_after(5):
            async for piece in client.get_fragments():
                received.append(piece)
                first_received.set()
    assert received == [b"first", b"second"]


async def test_a_single_frame_message_is_one_fragment() -> None:
    async with open_websocket_pair() as (client, server):
        await client.send_message("whole")
        assert await fragments_of(server) == ["whole"]


@pytest.mark.parametrize("wait_for_rest", [False, True], ids=["arrived", "pending"])
async def test_breaking_out_early_skips_the_rest_of_the_message(
    nursery: trio.Nursery, wait_for_rest: bool
) -> None:
    """The next get_message() returns the next message, not the leftovers.

    ``pending``: the rest of the message is only sent after the consumer
    broke out, so skipping it has to wait for it.
    """
    broke_out = trio.Event()

    async def chunks() -> AsyncIterator[str]:
        yield "head"
        if wait_for_rest:
            await broke_out.wait()
        for piece in ("body", "tail"):
            yield piece

    async def send(connection: WebSocketConnection) -> None:
        await connection.send_fragments(chunks())
        await connection.send_message("next message")
        await connection.get_message()

    url = await serve(nursery, accepting(send))
    async with open_websocket_url(url) as client:
        with trio.fail_after(5):
            async for piece in client.get_fragments():
                assert piece == "head"
                break
            broke_out.set()
            assert await client.get_message() == "next message"


# -- Sending fragment by fragment --------------------------------------------


def as_list(chunks: list[Chunk]) -> Iterable[Chunk]:
    return list(chunks)


def as_generator(chunks: list[Chunk]) -> Iterator[Chunk]:
    yield from chunks


async def as_async_generator(chunks: list[Chunk]) -> AsyncIterator[Chunk]:
    for chunk in chunks:
        await trio.lowlevel.checkpoint()
        yield chunk


sources = pytest.mark.parametrize("source", [as_list, as_generator, as_async_generator])


@sources
@pytest.mark.parametrize(
    "chunks",
    [["Hel", "lo, ", "wörld"], [b"\x00\x01", b"", b"\x02"]],
    ids=["text", "binary"],
)
async def test_send_fragments_from_any_iterable(
    nursery: trio.Nursery,
    source: Callable[[list[Chunk]], Any],
    chunks: list[Chunk],
) -> None:
    url = await serve(nursery, accepting(report_fragments))
    async with open_websocket_url(url) as client:
        await client.send_fragments(source(chunks))
        nonempty = [chunk for chunk in chunks if chunk]
        assert await client.get_message() == str(len(nonempty))
        assert await client.get_message() == join(chunks)
        # The connection carries on with ordinary messages.
        await client.send_message("after")
        assert await client.get_message() == "1"
        assert await client.get_message() == "after"


@pytest.mark.parametrize(
    "chunks", [["text", b"bytes"], [b"bytes", "text"]], ids=["str-bytes", "bytes-str"]
)
async def test_mixing_str_and_bytes_chunks_is_refused(
    nursery: trio.Nursery, chunks: list[Chunk]
) -> None:
    """A ValueError; half a message is on the wire, so the connection is aborted.

    The peer must never see the first chunk as a complete message.
    """
    seen: list[int] = []
    done = trio.Event()

    async def receive(connection: WebSocketConnection) -> None:
        seen.append(await closed_code(connection))
        done.set()

    url = await serve(nursery, accepting(receive))
    async with open_websocket_url(url) as client:
        with pytest.raises(ValueError, match="all fragments"):
            await client.send_fragments(chunks)
        assert client.closed is not None
        assert client.closed.code == 1006
    with trio.fail_after(5):
        await done.wait()
    assert seen == [1006]


@sources
async def test_an_empty_iterable_is_refused(
    nursery: trio.Nursery, source: Callable[[list[Chunk]], Any]
) -> None:
    url = await serve(nursery, echo_handler)
    async with open_websocket_url(url) as client:
        with pytest.raises(ValueError, match="at least one fragment"):
            await client.send_fragments(source([]))
        # Nothing was sent, so the connection is still usable.
        await client.send_message("still open")
        assert await client.get_message() == "still open"


async def test_a_chunk_of_another_type_is_refused() -> None:
    async with open_websocket_pair() as (client, server):
        with pytest.raises(ValueError, match="type"):
            await client.send_fragments([42])  # type: ignore[list-item]
        await client.send_message("still open")
        assert await server.get_message() == "still open"


async def test_cancelled_streaming_send_aborts_the_connection(
    nursery: trio.Nursery,
) -> None:
    """A message cut short is never delivered as if complete: 1006 instead."""
    first_sent = trio.Event()
    seen: list[int] = []
    done = trio.Event()

    async def chunks() -> AsyncIterator[bytes]:
        yield b"the beginning"
        first_sent.set()
        await trio.sleep_forever()
        yield b"the end"  # pragma: no cover

    async def receive(connection: WebSocketConnection) -> None:
        seen.append(await closed_code(connection))
        done.set()

    url = await serve(nursery, accepting(receive))
    async with open_websocket_url(url) as client:
        async with trio.open_nursery() as sending:
            sending.start_soon(client.send_fragments, chunks())
            await first_sent.wait()
            sending.cancel_scope.cancel()
        assert client.closed is not None
        assert client.closed.code == 1006
        with pytest.raises(ConnectionClosed):
            await client.send_message("too late")
    with trio.fail_after(5):
        await done.wait()
    assert seen == [1006]


# -- Large messages in bounded memory ----------------------------------------


async def test_message_far_over_max_message_size_streams_in_flat_memory(
    nursery: trio.Nursery,
) -> None:
    """64 MiB in 64 KiB fragments; traced memory stays within a few MiB."""
    fragment = bytes(range(256)) * (64 * KiB // 256)
    count = 64 * MiB // len(fragment)
    totals: list[int] = []

    async def consume(connection: WebSocketConnection) -> None:
        size = 0
        async for piece in connection.get_fragments():
            assert piece == fragment
            size += len(piece)
        totals.append(size)
        await connection.send_message("done")
        await connection.get_message()

    limits = {
        "max_message_size": math.inf,
        "max_fragment_size": len(fragment),
        "compression": None,
        "receive_buffer_size": len(fragment),  # fewer reads: a faster test
    }
    url = await serve(nursery, accepting(consume), **limits)
    tracemalloc.start()
    try:
        async with open_websocket_url(url, compression=None) as client:
            with trio.fail_after(60):
                await client.send_fragments(fragment for _ in range(count))
                assert await client.get_message() == "done"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert totals == [count * len(fragment)]
    assert peak < 4 * MiB


async def test_max_fragment_size_bounds_a_decompressed_fragment() -> None:
    """With no message limit, a compressed fragment is still bounded."""
    async with open_websocket_pair(max_fragment_size=64 * KiB) as (client, server):
        await client.send_fragments([bytes(64 * KiB), bytes(64 * KiB)])
        assert [len(piece) for piece in await fragments_of(server)] == [64 * KiB] * 2
        await client.send_fragments([bytes(10 * MiB)])  # compresses to ~10 KiB
        assert await closed_code(server) == 1009


# -- WebSocketStream ---------------------------------------------------------


async def memory_connections(
    nursery: trio.Nursery, **options: Any
) -> tuple[WebSocketConnection, WebSocketConnection]:
    """A client and server connection over in-memory streams."""
    client_transport, server_transport = trio.testing.memory_stream_pair()
    accepted: list[WebSocketConnection] = []

    async def accept() -> None:
        request = await wrap_server_stream(nursery, server_transport, **options)
        accepted.append(await request.accept())

    async with trio.open_nursery() as handshake:
        handshake.start_soon(accept)
        client = await wrap_client_stream(
            nursery, client_transport, "localhost", "/", **options
        )
    return client, accepted[0]


async def test_stream_satisfies_trios_two_way_stream_contract(
    nursery: trio.Nursery,
) -> None:
    """trio's generic checks, without a clogged stream.

    ``check_half_closeable_stream`` does not apply: RFC 6455 has no
    half-close (after send_eof the peer cannot answer; see below). The
    clogged-stream checks need ``wait_send_all_might_not_block`` to block,
    and the adapter returns from it at once, which Trio allows.
    """

    async def make() -> tuple[WebSocketStream, WebSocketStream]:
        client, server = await memory_connections(nursery)
        return WebSocketStream(client), WebSocketStream(server)

    with trio.fail_after(30):
        await trio.testing.check_two_way_stream(make, None)


@pytest.fixture
async def stream_pair(
    nursery: trio.Nursery,
) -> AsyncIterator[tuple[WebSocketStream, WebSocketConnection]]:
    """A WebSocketStream on a loopback client, and the server's connection."""
    accepted: trio.MemorySendChannel[WebSocketConnection]
    accepted, connections = trio.open_memory_channel[WebSocketConnection](1)
    finished = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        await accepted.send(await request.accept())
        await finished.wait()

    url = await serve(nursery, handler)
    async with open_websocket_url(url) as client:
        server = await connections.receive()
        yield WebSocketStream(client), server
        finished.set()


async def test_stream_sends_binary_messages_and_splits_reads(
    stream_pair: tuple[WebSocketStream, WebSocketConnection],
) -> None:
    stream, server = stream_pair
    await stream.send_all(b"hello world")
    await stream.send_all(bytearray(b"!"))
    assert await server.get_message() == b"hello world"
    assert await server.get_message() == b"!"
    await server.send_message(b"abcdefgh")
    await server.send_message("ünï")  # text arrives as its UTF-8 bytes
    with trio.fail_after(5):
        assert await stream.receive_some(3) == b"abc"
        assert await stream.receive_some(3) == b"def"
        assert await stream.receive_some() == b"gh"  # never crosses messages
        assert await stream.receive_some(100) == "ünï".encode()


@pytest.mark.parametrize("code", [1000, 1001])
async def test_stream_reads_end_of_stream_on_a_normal_close(
    nursery: trio.Nursery,
    stream_pair: tuple[WebSocketStream, WebSocketConnection],
    code: int,
) -> None:
    stream, server = stream_pair
    await server.send_message(b"last")
    # The close completes once the client has read "last" from its queue.
    nursery.start_soon(server.aclose, code)
    with trio.fail_after(5):
        assert await stream.receive_some() == b"last"
        assert await stream.receive_some() == b""
        assert await stream.receive_some() == b""


@pytest.mark.parametrize("code", [1011, 4000])
async def test_stream_is_broken_by_an_abnormal_close(
    stream_pair: tuple[WebSocketStream, WebSocketConnection], code: int
) -> None:
    stream, server = stream_pair
    await server.aclose(code)
    with trio.fail_after(5), pytest.raises(trio.BrokenResourceError):
        await stream.receive_some()
    with pytest.raises(trio.BrokenResourceError):
        await stream.send_all(b"nobody listens")


async def test_stream_refuses_concurrent_use(
    stream_pair: tuple[WebSocketStream, WebSocketConnection],
) -> None:
    stream, server = stream_pair
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream.receive_some)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await stream.receive_some()
        nursery.cancel_scope.cancel()
    # The first reader was cancelled; the stream still works.
    await server.send_message(b"fine")
    with trio.fail_after(5):
        assert await stream.receive_some() == b"fine"


async def test_stream_refuses_concurrent_sends(nursery: trio.Nursery) -> None:
    # A clogged transport: the receiving side reads one byte at a time only
    # when asked to, so the first send_all blocks.
    client_transport, server_transport = trio.testing.lockstep_stream_pair()
    accepted: list[WebSocketConnection] = []

    async def accept() -> None:
        request = await wrap_server_stream(
            nursery, server_transport, message_queue_size=0
        )
        accepted.append(await request.accept())

    async with trio.open_nursery() as handshake:
        handshake.start_soon(accept)
        client = await wrap_client_stream(nursery, client_transport, "x", "/")
    stream = WebSocketStream(client)
    async with trio.open_nursery() as senders:
        senders.start_soon(stream.send_all, b"x" * 100)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await stream.send_all(b"y")
        senders.cancel_scope.cancel()


async def test_send_eof_closes_our_direction_only_for_what_was_in_flight(
    stream_pair: tuple[WebSocketStream, WebSocketConnection],
) -> None:
    """send_eof sends a close; data the peer had sent is still read.

    The peer reads our data then end of stream; after that it cannot send
    (RFC 6455 has no half-close), and we cannot send either.
    """
    stream, server = stream_pair
    peer = WebSocketStream(server)
    await peer.send_all(b"sent before the close")
    await stream.send_all(b"ours")
    await stream.send_eof()
    with pytest.raises(trio.ClosedResourceError):
        await stream.send_all(b"more")
    await stream.send_eof()  # again: fine
    with trio.fail_after(5):
        assert await peer.receive_some() == b"ours"
        assert await peer.receive_some() == b""
        assert await stream.receive_some() == b"sent before the close"
        assert await stream.receive_some() == b""
    with pytest.raises(trio.BrokenResourceError):
        await peer.send_all(b"too late")


async def test_stream_aclose_closes_the_connection(
    stream_pair: tuple[WebSocketStream, WebSocketConnection],
) -> None:
    stream, server = stream_pair
    await stream.aclose()
    assert stream.connection.closed is not None
    assert stream.connection.closed.code == 1000
    with pytest.raises(trio.ClosedResourceError):
        await stream.receive_some()
    with pytest.raises(trio.ClosedResourceError):
        await stream.send_all(b"")
    assert await closed_code(server) == 1000
