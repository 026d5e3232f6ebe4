"""Protocol features: compression, iteration, zero-copy sends, in-memory pair.

Keepalive is tested in ``test_keepalive.py``, fragment streaming and the
byte-stream adapter in ``test_streaming.py``, interoperability with the
``websockets`` package in ``test_interop.py``.
"""

from __future__ import annotations

import array
import gc
import json
import os
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Literal

import pytest
import trio
import trio.testing
from conftest import echo_handler, server_url

from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    open_websocket_pair,
    open_websocket_url,
    serve_websocket,
    wrap_client_stream,
    wrap_server_stream,
)

Handler = Callable[[WebSocketRequest], Awaitable[None]]
Compression = Literal["deflate"] | None
DEFLATE = ["permessage-deflate"]
MiB = 2**20


async def serve(nursery: trio.Nursery, handler: Handler, **options: Any) -> str:
    """Serve ``handler`` on 127.0.0.1 and a free port; return the server URL."""
    server: WebSocketServer = await nursery.start(
        partial(serve_websocket, handler, "127.0.0.1", 0, None, **options)
    )
    return server_url(server)


def json_like(size: int) -> str:
    """Text shaped like a typical JSON API payload, ``size`` characters long."""
    record = {"id": 12345, "name": "sensor-7", "status": "ok", "values": [1, 2, 3]}
    text = json.dumps([record] * (size // 60 + 1))
    return text[:size]


class RecordingStream(trio.abc.HalfCloseableStream):
    """A transport that passes everything through and records what is sent."""

    def __init__(self, inner: trio.abc.HalfCloseableStream) -> None:
        self.inner = inner
        self.sent: list[bytes] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sent.append(bytes(data))
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def sent_since(self, mark: int) -> bytes:
        """Everything sent after ``mark`` calls of :meth:`send_all`."""
        return b"".join(self.sent[mark:])


@asynccontextmanager
async def recording_client(
    url: str, **options: Any
) -> AsyncIterator[tuple[WebSocketConnection, RecordingStream]]:
    """A client over real TCP whose outgoing bytes are recorded."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    async with trio.open_nursery() as nursery:
        stream = RecordingStream(await trio.open_tcp_stream("127.0.0.1", port))
        connection = await wrap_client_stream(
            nursery, stream, "127.0.0.1", "/", **options
        )
        try:
            yield connection, stream
        finally:
            await connection.aclose()


async def report_extensions(request: WebSocketRequest) -> None:
    """Handler: tell the client which extensions the server negotiated."""
    connection = await request.accept()
    await connection.send_message(json.dumps(connection.extensions))
    await connection.get_message()  # until the client closes


async def expect_closed(connection: WebSocketConnection, code: int) -> None:
    """The next message is not delivered: the connection closed with ``code``."""
    with trio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
        await connection.get_message()
    assert closed.value.reason is not None
    assert closed.value.reason.code == code


# -- permessage-deflate ------------------------------------------------------


@pytest.mark.parametrize("client_compression", ["deflate", None])
@pytest.mark.parametrize("server_compression", ["deflate", None])
async def test_compression_negotiated_only_when_both_sides_want_it(
    nursery: trio.Nursery,
    client_compression: Compression,
    server_compression: Compression,
) -> None:
    url = await serve(nursery, report_extensions, compression=server_compression)
    async with open_websocket_url(url, compression=client_compression) as client:
        server_view = json.loads(await client.get_message())
        expected = DEFLATE if client_compression and server_compression else []
        assert client.extensions == expected
        assert server_view == expected


async def test_compression_is_on_by_default(nursery: trio.Nursery) -> None:
    url = await serve(nursery, report_extensions)
    async with open_websocket_url(url) as client:
        assert client.extensions == DEFLATE
        assert json.loads(await client.get_message()) == DEFLATE


with_and_without_compression = pytest.mark.parametrize(
    "compression", ["deflate", None], ids=["deflate", "plain"]
)


@with_and_without_compression
async def test_compressible_data_is_compressed_on_the_wire(
    nursery: trio.Nursery, compression: Compression
) -> None:
    url = await serve(nursery, echo_handler)
    message = json_like(64 * 1024)
    async with recording_client(url, compression=compression) as (client, wire):
        mark = len(wire.sent)
        await client.send_message(message)
        assert await client.get_message() == message
        on_wire = len(wire.sent_since(mark))
    if compression:
        assert on_wire < len(message) // 4
    else:
        assert on_wire > len(message)


@pytest.mark.parametrize(
    ("compress", "first_byte"),
    [(True, 0xC2), (False, 0x82)],  # FIN + RSV1 + binary, or FIN + binary
    ids=["compressed", "opted-out"],
)
async def test_compress_false_sends_the_frame_with_rsv1_clear(
    nursery: trio.Nursery, compress: bool, first_byte: int
) -> None:
    url = await serve(nursery, echo_handler)
    payload = bytes(1000)  # very compressible, yet sent as is when opted out
    async with recording_client(url) as (client, wire):
        assert client.extensions == DEFLATE
        mark = len(wire.sent)
        await client.send_message(payload, compress=compress)
        frame = wire.sent_since(mark)
        assert await client.get_message() == payload
        # The next message is compressed again: the opt-out is per message.
        mark = len(wire.sent)
        await client.send_message(payload)
        assert wire.sent_since(mark)[0] == 0xC2
        assert await client.get_message() == payload
    assert frame[0] == first_byte
    assert (len(frame) > len(payload)) is not compress


def bomb_sender(payload: bytes) -> Handler:
    async def handler(request: WebSocketRequest) -> None:
        connection = await request.accept()
        try:
            await connection.send_message(payload)
            await connection.get_message()
        except ConnectionClosed:
            pass

    return handler


async def test_max_message_size_bounds_the_decompressed_size(
    nursery: trio.Nursery,
) -> None:
    """10 MiB of zeros compress to about 10 KiB: a bomb for a 1 MiB limit.

    The receiver must refuse it with 1009 without ever holding the
    decompressed message: traced memory stays far below its size.
    """
    bomb = bytes(10 * MiB)
    url = await serve(nursery, bomb_sender(bomb))
    tracemalloc.start()
    try:
        async with open_websocket_url(url, max_message_size=MiB) as client:
            await expect_closed(client, 1009)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MiB  # the decompressed message alone is 10 MiB


async def test_server_refuses_a_compressed_bomb_too(nursery: trio.Nursery) -> None:
    closed: list[int] = []
    handler_done = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        connection = await request.accept()
        try:
            await connection.get_message()
        except ConnectionClosed as exc:
            assert exc.reason is not None
            closed.append(exc.reason.code)
        handler_done.set()

    url = await serve(nursery, handler, max_message_size=MiB)
    async with open_websocket_url(url) as client:
        await client.send_message(bytes(10 * MiB))
        await expect_closed(client, 1009)
    with trio.fail_after(5):
        await handler_done.wait()
    assert closed == [1009]


@with_and_without_compression
@pytest.mark.parametrize(("extra", "accepted"), [(0, True), (1, False)])
async def test_incompressible_message_at_the_size_limit(
    nursery: trio.Nursery, compression: Compression, extra: int, accepted: bool
) -> None:
    """Random data grows a little when deflated; the limit is still exact."""
    limit = 64 * 1024
    url = await serve(nursery, echo_handler, max_message_size=limit)
    message = os.urandom(limit + extra)
    async with open_websocket_url(url, compression=compression) as client:
        await client.send_message(message)
        if accepted:
            assert await client.get_message() == message
        else:
            await expect_closed(client, 1009)


# -- Iteration ---------------------------------------------------------------


def closing_sender(messages: list[str], code: int) -> Handler:
    """Handler: send ``messages``, then close with ``code``."""

    async def handler(request: WebSocketRequest) -> None:
        connection = await request.accept()
        for message in messages:
            await connection.send_message(message)
        await connection.aclose(code)

    return handler


async def collect(connection: WebSocketConnection, into: list[str | bytes]) -> None:
    with trio.fail_after(5):
        async for message in connection:
            into.append(message)


@pytest.mark.parametrize("code", [1000, 1001])
async def test_iteration_ends_on_a_normal_close(
    nursery: trio.Nursery, code: int
) -> None:
    url = await serve(nursery, closing_sender(["a", "b", "c"], code))
    received: list[str | bytes] = []
    async with open_websocket_url(url) as client:
        await collect(client, received)
        assert client.closed is not None
        assert client.closed.code == code
    assert received == ["a", "b", "c"]


@pytest.mark.parametrize("code", [1011, 4000])
async def test_iteration_raises_on_an_abnormal_close(
    nursery: trio.Nursery, code: int
) -> None:
    url = await serve(nursery, closing_sender(["a"], code))
    received: list[str | bytes] = []
    async with open_websocket_url(url) as client:
        with pytest.raises(ConnectionClosed) as closed:
            await collect(client, received)
    assert received == ["a"]
    assert closed.value.reason is not None
    assert closed.value.reason.code == code


async def test_iteration_raises_when_the_transport_is_lost(
    nursery: trio.Nursery,
) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()

    async def server_side() -> None:
        request = await wrap_server_stream(nursery, server_stream)
        server = await request.accept()
        await server.send_message("last words")
        await trio.aclose_forcefully(server_stream)  # the peer vanishes

    nursery.start_soon(server_side)
    client = await wrap_client_stream(nursery, client_stream, "localhost", "/")
    received: list[str | bytes] = []
    with pytest.raises(ConnectionClosed) as closed:
        await collect(client, received)
    assert received == ["last words"]
    assert closed.value.reason is not None
    assert closed.value.reason.code == 1006


async def test_breaking_out_of_iteration_leaves_the_connection_usable() -> None:
    """No unfinished async generator is left behind (Trio would warn)."""
    async with open_websocket_pair() as (client, server):
        for text in ("first", "second"):
            await server.send_message(text)
        with trio.fail_after(5):
            async for message in client:
                assert message == "first"
                break
            gc.collect()  # a ResourceWarning here fails the test
            assert await client.get_message() == "second"


async def test_iteration_ends_after_a_local_close_in_the_loop() -> None:
    async with open_websocket_pair() as (client, server):
        for text in ("one", "two", "three"):
            await server.send_message(text)
        received: list[str | bytes] = []
        with trio.fail_after(5):
            async for message in client:
                received.append(message)
                if message == "two":
                    await client.aclose()
        assert received == ["one", "two"]


async def test_iteration_ends_after_a_local_close_from_another_task() -> None:
    async with open_websocket_pair() as (client, server):
        received: list[str | bytes] = []

        async def close_later() -> None:
            await server.send_message("before")
            await trio.testing.wait_all_tasks_blocked()
            await client.aclose(4001, "done")

        async with trio.open_nursery() as tasks:
            tasks.start_soon(collect, client, received)
            tasks.start_soon(close_later)
        # A local close ends the local iteration whatever the code...
        assert received == ["before"]
        # ...while the peer sees a 4001 close, which is not a normal one.
        with pytest.raises(ConnectionClosed) as closed:
            await collect(server, received)
        assert closed.value.reason is not None
        assert closed.value.reason.code == 4001


# -- Zero-copy sends ---------------------------------------------------------


_BUFFER = bytes(range(256)) * 8
binary_payloads = pytest.mark.parametrize(
    "payload",
    [
        bytearray(_BUFFER),
        memoryview(_BUFFER),
        memoryview(_BUFFER)[100:1100],
        memoryview(array.array("i", range(300))),  # 4-byte items
        memoryview(_BUFFER)[::3],  # not contiguous
    ],
    ids=["bytearray", "memoryview", "slice", "int-array", "strided"],
)


@with_and_without_compression
@binary_payloads
async def test_bytes_like_messages_are_sent_as_binary(
    nursery: trio.Nursery,
    compression: Compression,
    payload: bytearray | memoryview,
) -> None:
    url = await serve(nursery, echo_handler)
    async with open_websocket_url(url, compression=compression) as client:
        await client.send_message(payload)
        echoed = await client.get_message()
    assert isinstance(echoed, bytes)
    assert echoed == bytes(payload)


@pytest.mark.parametrize("message", [42, [1, 2], None, {"a": 1}, 1.5])
async def test_other_message_types_are_refused(
    nursery: trio.Nursery, message: Any
) -> None:
    url = await serve(nursery, echo_handler)
    async with open_websocket_url(url) as client:
        with pytest.raises(ValueError, match="type"):
            await client.send_message(message)
        # Nothing was sent: the connection is still usable.
        await client.send_message("still open")
        assert await client.get_message() == "still open"


# -- In-memory pair ----------------------------------------------------------


async def test_pair_ends_talk_both_ways() -> None:
    async with open_websocket_pair() as (client, server):
        assert client.is_client
        assert server.is_server
        await client.send_message("ping?")
        assert await server.get_message() == "ping?"
        await server.send_message(b"pong!")
        assert await client.get_message() == b"pong!"
    assert client.closed is not None
    assert server.closed is not None
    assert client.closed.code == 1000


async def test_pair_negotiates_path_and_subprotocol() -> None:
    async with open_websocket_pair(path="/room?id=1", subprotocols=["chat", "v2"]) as (
        client,
        server,
    ):
        assert server.path == "/room?id=1"
        assert client.subprotocol == server.subprotocol == "chat"


async def test_pair_without_subprotocols() -> None:
    async with open_websocket_pair() as (client, server):
        assert client.subprotocol is None
        assert server.subprotocol is None


@with_and_without_compression
async def test_pair_applies_compression_option(compression: Compression) -> None:
    async with open_websocket_pair(compression=compression) as (client, server):
        expected = DEFLATE if compression else []
        assert client.extensions == server.extensions == expected


async def test_pair_applies_fragment_size_option() -> None:
    async with open_websocket_pair(max_fragment_size=100, compression=None) as (
        client,
        server,
    ):
        await client.send_message(b"x" * 100)
        assert await server.get_message() == b"x" * 100
        await client.send_message(b"x" * 101)
        await expect_closed(server, 1009)


async def test_pair_lets_an_exception_from_the_body_through_unwrapped() -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom) as raised:
        async with open_websocket_pair() as (client, _):
            await client.send_message("about to fail")
            raise Boom("body failed")
    assert type(raised.value) is Boom
    assert str(raised.value) == "body failed"


async def test_pair_closes_promptly_with_unread_messages_on_both_sides(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Each side's full queue must not hold the other side's close."""
    async with open_websocket_pair() as (client, server):
        for index in range(3):
            await client.send_message(f"to server {index}")
            await server.send_message(f"to client {index}")
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
    assert trio.current_time() - start < 1  # not the 60 s disconnect timeout
    assert client.closed is not None
    assert server.closed is not None
    assert client.closed.code == server.closed.code == 1000
