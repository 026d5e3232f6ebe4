"""Clients and servers talking over real sockets (and in-memory streams)."""

from __future__ import annotations

import errno
import logging
import math
import os
import socket
import ssl
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from conftest import echo_handler, echo_messages, needs_ipv6, server_url

from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    DisconnectionTimeout,
    Endpoint,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    connect_websocket,
    connect_websocket_url,
    open_websocket,
    open_websocket_url,
    serve_websocket,
    wrap_client_stream,
    wrap_server_stream,
)
from trio_websocket._transport import SocketTransport

#: Upper bound for any wait that should end promptly; only reached on a bug.
TIMEOUT = 10

Handler = Callable[[WebSocketRequest], Awaitable[object]]
Pair = tuple[WebSocketConnection, WebSocketConnection]


async def start_server(
    nursery: trio.Nursery,
    handler: Handler,
    host: str | None = "127.0.0.1",
    ssl_context: ssl.SSLContext | None = None,
    **options: Any,
) -> WebSocketServer:
    """Start ``serve_websocket`` on a free port and return the server."""
    server: WebSocketServer = await nursery.start(
        partial(serve_websocket, handler, host, 0, ssl_context, **options)
    )
    return server


async def assert_echoes(connection: WebSocketConnection) -> None:
    """A text and a binary message come back unchanged (from an echo peer)."""
    for message in ("text: h\u00e9llo \U0001f600", b"\x00binary\xff"):
        await connection.send_message(message)
        with trio.fail_after(TIMEOUT):
            assert await connection.get_message() == message


class HoldingHandler:
    """A server handler that accepts and hands the connection to the test.

    The handler then keeps the connection open (it sleeps) so that the test
    drives the server side itself.
    """

    def __init__(self, **accept_options: Any) -> None:
        self._accept_options = accept_options
        self._send, self._receive = trio.open_memory_channel[
            tuple[WebSocketRequest, WebSocketConnection]
        ](math.inf)

    async def __call__(self, request: WebSocketRequest) -> None:
        connection = await request.accept(**self._accept_options)
        self._send.send_nowait((request, connection))
        await trio.sleep_forever()

    async def next(self) -> tuple[WebSocketRequest, WebSocketConnection]:
        """The next accepted request and its server-side connection."""
        with trio.fail_after(TIMEOUT):
            return await self._receive.receive()


@asynccontextmanager
async def connected(
    server: WebSocketServer, handler: HoldingHandler, **client_options: Any
) -> AsyncIterator[Pair]:
    """Open a client to ``server``; yield it with its server-side twin."""
    async with open_websocket_url(server_url(server), **client_options) as client:
        _, server_side = await handler.next()
        yield client, server_side


@pytest.fixture
def holder() -> HoldingHandler:
    return HoldingHandler()


@pytest.fixture
async def holding_server(
    nursery: trio.Nursery, holder: HoldingHandler
) -> WebSocketServer:
    return await start_server(nursery, holder)


@pytest.fixture
async def deaf_server(nursery: trio.Nursery, holder: HoldingHandler) -> WebSocketServer:
    """A holding server that reads nothing until its handler asks for a message."""
    return await start_server(nursery, holder, message_queue_size=0)


# -- Four ways to open a client connection ------------------------------------

Opener = Callable[
    [str, int, "ssl.SSLContext | None"],
    AbstractAsyncContextManager[WebSocketConnection],
]


def _url(host: str, port: int, ssl_context: ssl.SSLContext | None) -> str:
    scheme = "wss" if ssl_context else "ws"
    literal = f"[{host}]" if ":" in host else host
    return f"{scheme}://{literal}:{port}/"


def via_open_websocket(
    host: str, port: int, ssl_context: ssl.SSLContext | None
) -> AbstractAsyncContextManager[WebSocketConnection]:
    return open_websocket(host, port, "/", use_ssl=ssl_context or False)


def via_open_websocket_url(
    host: str, port: int, ssl_context: ssl.SSLContext | None
) -> AbstractAsyncContextManager[WebSocketConnection]:
    return open_websocket_url(_url(host, port, ssl_context), ssl_context)


@asynccontextmanager
async def _in_own_nursery(
    connect: Callable[[trio.Nursery], Awaitable[WebSocketConnection]],
) -> AsyncIterator[WebSocketConnection]:
    # The nursery can only exit once the connection's reader has ended.
    async with trio.open_nursery() as nursery:
        connection = await connect(nursery)
        try:
            yield connection
        finally:
            await connection.aclose()


def via_connect_websocket(
    host: str, port: int, ssl_context: ssl.SSLContext | None
) -> AbstractAsyncContextManager[WebSocketConnection]:
    return _in_own_nursery(
        lambda nursery: connect_websocket(
            nursery, host, port, "/", use_ssl=ssl_context or False
        )
    )


def via_connect_websocket_url(
    host: str, port: int, ssl_context: ssl.SSLContext | None
) -> AbstractAsyncContextManager[WebSocketConnection]:
    return _in_own_nursery(
        lambda nursery: connect_websocket_url(
            nursery, _url(host, port, ssl_context), ssl_context
        )
    )


OPENERS = [
    via_open_websocket,
    via_open_websocket_url,
    via_connect_websocket,
    via_connect_websocket_url,
]
CONTEXT_MANAGERS = [via_open_websocket, via_open_websocket_url]


def _opener_id(opener: Opener) -> str:
    return opener.__name__.removeprefix("via_")


# -- Echo over every transport ------------------------------------------------


@pytest.mark.parametrize("opener", OPENERS, ids=_opener_id)
@pytest.mark.parametrize(
    "transport", ["ipv4", pytest.param("ipv6", marks=needs_ipv6), "tls"]
)
async def test_echo(
    nursery: trio.Nursery,
    opener: Opener,
    transport: str,
    server_ssl_context: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
) -> None:
    host = "::1" if transport == "ipv6" else "127.0.0.1"
    tls = transport == "tls"
    server = await start_server(
        nursery, echo_handler, host, server_ssl_context if tls else None
    )
    with trio.fail_after(TIMEOUT):
        async with opener(
            host, server.port, client_ssl_context if tls else None
        ) as client:
            assert client.is_client
            assert not client.is_server
            assert client.remote == Endpoint(host, server.port, tls)
            await assert_echoes(client)
        assert client.closed == CloseReason(1000, None)


async def test_echo_over_wrapped_memory_streams(nursery: trio.Nursery) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    requests: list[WebSocketRequest] = []

    async def serve() -> None:
        request = await wrap_server_stream(nursery, server_stream)
        requests.append(request)
        await echo_handler(request)

    nursery.start_soon(serve)
    with trio.fail_after(TIMEOUT):
        client = await wrap_client_stream(
            nursery, client_stream, "example.com", "/chat?room=1"
        )
        await assert_echoes(client)
        await client.aclose()
    (request,) = requests
    assert request.path == "/chat?room=1"
    assert (b"host", b"example.com") in request.headers
    # Not a socket: a description instead of an Endpoint.
    assert isinstance(request.local, str)
    assert isinstance(client.remote, str)


# -- Handshake details --------------------------------------------------------


async def test_subprotocol_headers_path_and_endpoints(nursery: trio.Nursery) -> None:
    holder = HoldingHandler(subprotocol="b", extra_headers=[(b"X-Server", b"hi")])
    server = await start_server(nursery, holder)
    url = server_url(server, "/some/path?q=1&r=two")
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(
            url,
            subprotocols=["a", "b"],
            extra_headers=[
                (b"X-Client", b"hello"),
                (b"X-Time", b"12:30:05"),  # colons survive the packed form
                (b"X-Empty", b""),
            ],
        ) as client:
            request, server_side = await holder.next()

            assert request.proposed_subprotocols == ("a", "b")
            assert client.subprotocol == server_side.subprotocol == "b"

            assert (b"x-client", b"hello") in request.headers
            assert (b"x-time", b"12:30:05") in request.headers
            assert (b"x-empty", b"") in request.headers
            # handshake_headers: the peer's headers without the handshake's
            # own fields, in order, the application's before the engine's.
            handshake_fields = {b"upgrade", b"connection"}
            assert list(server_side.handshake_headers) == [
                (name, value)
                for name, value in request.headers
                if name not in handshake_fields
                and not name.startswith(b"sec-websocket-")
            ]
            assert (b"host", f"127.0.0.1:{server.port}".encode()) in request.headers
            assert client.handshake_headers[0] == (b"x-server", b"hi")
            assert [name for name, _ in client.handshake_headers] == [
                b"x-server",
                b"date",
            ]

            assert request.path == server_side.path == "/some/path?q=1&r=two"
            assert client.path == "/some/path?q=1&r=two"

            server_end = Endpoint("127.0.0.1", server.port, False)
            assert request.local == server_side.local == client.remote == server_end
            assert isinstance(client.local, Endpoint)
            assert client.local.address == server_end.address
            assert client.local.port not in (0, server.port)
            assert request.remote == server_side.remote == client.local
            assert server_side.is_server


async def test_no_subprotocol_when_none_accepted(
    holding_server: WebSocketServer, holder: HoldingHandler
) -> None:
    with trio.fail_after(TIMEOUT):
        async with connected(holding_server, holder, subprotocols=["a"]) as pair:
            assert [side.subprotocol for side in pair] == [None, None]


# -- Servers ------------------------------------------------------------------


async def test_server_reports_its_port_and_listeners(
    echo_server: WebSocketServer,
) -> None:
    assert echo_server.port != 0
    assert echo_server.listeners == [Endpoint("127.0.0.1", echo_server.port, False)]
    with trio.fail_after(TIMEOUT):
        async with open_websocket(
            "127.0.0.1", echo_server.port, "/", use_ssl=False
        ) as c:
            await assert_echoes(c)


async def test_tls_server(
    tls_echo_server: WebSocketServer, client_ssl_context: ssl.SSLContext
) -> None:
    (endpoint,) = tls_echo_server.listeners
    assert isinstance(endpoint, Endpoint)
    assert endpoint.is_ssl
    assert server_url(tls_echo_server).startswith("wss://127.0.0.1:")
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(
            server_url(tls_echo_server), client_ssl_context
        ) as client:
            assert isinstance(client.local, Endpoint)
            assert client.local.is_ssl
            await assert_echoes(client)


async def test_server_on_all_interfaces(nursery: trio.Nursery) -> None:
    server = await start_server(nursery, echo_handler, host=None)
    endpoints = server.listeners
    assert endpoints
    assert all(isinstance(e, Endpoint) and e.address.is_unspecified for e in endpoints)
    ipv4_port = next(
        e.port for e in endpoints if isinstance(e, Endpoint) and e.address.version == 4
    )
    with trio.fail_after(TIMEOUT):
        async with open_websocket("127.0.0.1", ipv4_port, "/", use_ssl=False) as client:
            await assert_echoes(client)


async def test_handler_nursery(nursery: trio.Nursery) -> None:
    parents: list[trio.Nursery | None] = []

    async def handler(request: WebSocketRequest) -> None:
        parents.append(trio.lowlevel.current_task().parent_nursery)
        await echo_handler(request)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as handler_nursery:
            server = await start_server(
                nursery, handler, handler_nursery=handler_nursery
            )
            async with open_websocket_url(server_url(server)) as client:
                await assert_echoes(client)
                # One task per client, as in 0.12 (its reader runs below it).
                assert len(handler_nursery.child_tasks) == 1
    assert parents == [handler_nursery]


async def test_an_error_in_one_readers_task_leaves_the_server_serving(
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Readers of a server's connections share the nursery of its clients: a
    # bug that breaks one reader must not reach that nursery.
    def broken_by_4321_masked_bytes(
        receive: Callable[..., Awaitable[bytes | bytearray | None]],
    ) -> Callable[..., Awaitable[bytes | bytearray | None]]:
        async def receive_or_fail(
            *args: Any, **kwargs: Any
        ) -> bytes | bytearray | None:
            data = await receive(*args, **kwargs)
            if data and b"\xfe\x10\xe1" in data:  # a client's 4321-byte frame
                raise OSError(errno.EIO, "a bug of ours, say")
            return data

        return receive_or_fail

    server = await start_server(nursery, echo_handler)
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(server_url(server)) as survivor:
            for name in ("receive", "receive_within"):  # the reader uses both
                broken = broken_by_4321_masked_bytes(getattr(SocketTransport, name))
                monkeypatch.setattr(SocketTransport, name, broken)
            url = server_url(server)
            async with open_websocket_url(url, compression=None) as victim:
                await victim.send_message(b"x" * 4321)
                with pytest.raises(ConnectionClosed):
                    await victim.get_message()
            await assert_echoes(survivor)
    assert "unexpected error in the reader task" in caplog.text


async def test_server_with_explicit_listeners(nursery: trio.Nursery) -> None:
    listeners = [
        *await trio.open_tcp_listeners(0, host="127.0.0.1"),
        *await trio.open_tcp_listeners(0, host="127.0.0.1"),
    ]
    server = WebSocketServer(echo_handler, listeners)
    assert await nursery.start(server.run) is server
    endpoints = server.listeners
    assert len(endpoints) == 2
    with pytest.raises(RuntimeError):
        _ = server.port  # two listeners on two ports
    with trio.fail_after(TIMEOUT):
        for endpoint in endpoints:
            assert isinstance(endpoint, Endpoint)
            async with open_websocket_url(endpoint.url) as client:
                await assert_echoes(client)


async def test_server_needs_a_listener() -> None:
    with pytest.raises(ValueError):
        WebSocketServer(echo_handler, [])


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")
async def test_unix_socket_listener(
    nursery: trio.Nursery, unix_listener: tuple[str, trio.SocketListener]
) -> None:
    path, listener = unix_listener
    holder = HoldingHandler()
    server = WebSocketServer(holder, [listener])
    await nursery.start(server.run)
    assert server.listeners == [path]
    with pytest.raises(RuntimeError):
        _ = server.port

    with trio.fail_after(TIMEOUT):
        stream = await trio.open_unix_socket(path)
        client = await wrap_client_stream(nursery, stream, "localhost", "/unix")
        request, server_side = await holder.next()
        assert request.path == "/unix"
        assert request.local == server_side.local == client.remote == path
        assert isinstance(request.remote, str)
        await client.send_message("over a unix socket")
        assert await server_side.get_message() == "over a unix socket"
        await client.aclose()
        with pytest.raises(ConnectionClosed):
            await server_side.get_message()


# -- Handler errors -----------------------------------------------------------


class Boom(Exception):
    """The error our misbehaving handler raises."""


async def misbehaving_handler(request: WebSocketRequest) -> None:
    """Misbehaves according to the request path; echoes on any other path."""
    if request.path == "/raise-before-accept":
        raise Boom(request.path)
    connection = await request.accept()
    if request.path == "/raise-after-accept":
        raise Boom(request.path)
    if request.path != "/return":
        await echo_messages(connection)


async def client_outcome(url: str) -> str:
    """What a client that opens ``url`` and reads one message experiences."""
    try:
        async with open_websocket_url(url) as client:
            try:
                return f"message {await client.get_message()!r}"
            except ConnectionClosed as exc:
                assert exc.reason is not None
                assert client.closed == exc.reason
                return f"close {exc.reason.code}"
    except ConnectionRejected as exc:
        return f"http {exc.status_code}"


@pytest.mark.parametrize(
    ("path", "outcome"),
    [
        ("/raise-before-accept", "http 500"),
        ("/raise-after-accept", "close 1011"),
        ("/return", "close 1000"),
    ],
)
async def test_handler_outcome(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, path: str, outcome: str
) -> None:
    server = await start_server(nursery, misbehaving_handler)
    with trio.fail_after(TIMEOUT):
        assert await client_outcome(server_url(server, path)) == outcome
        # The server lives on and serves the next client.
        async with open_websocket_url(server_url(server)) as client:
            await assert_echoes(client)

    logged = [
        record
        for record in caplog.records
        if record.name == "trio-websocket"
        and record.levelno >= logging.ERROR
        and record.exc_info is not None
        and isinstance(record.exc_info[1], Boom)
    ]
    if outcome == "close 1000":
        assert logged == []
    else:
        assert len(logged) == 1
        assert str(logged[0].exc_info[1]) == path  # type: ignore[index]


# -- Backpressure -------------------------------------------------------------


class BurstHandler:
    """Accepts, sends ``count`` numbered messages, then closes with 4002."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.finished = trio.Event()

    async def __call__(self, request: WebSocketRequest) -> None:
        connection = await request.accept()
        for number in range(self.count):
            await connection.send_message(f"message {number}")
        await connection.aclose(4002, "burst over")
        self.finished.set()


BURST_REASON = CloseReason(4002, "burst over")


async def receive_burst(client: WebSocketConnection, count: int) -> None:
    """All ``count`` messages arrive in order, then the close."""
    with trio.fail_after(TIMEOUT):
        for number in range(count):
            assert await client.get_message() == f"message {number}"
        with pytest.raises(ConnectionClosed) as closed:
            await client.get_message()
    assert closed.value.reason == BURST_REASON


@pytest.mark.parametrize("queue_size", [0, 1, 4, math.inf])
async def test_every_queue_size_delivers_everything_in_order(
    nursery: trio.Nursery, queue_size: float
) -> None:
    burst = BurstHandler(50)
    server = await start_server(nursery, burst)
    async with open_websocket_url(
        server_url(server), message_queue_size=queue_size
    ) as client:
        await receive_burst(client, burst.count)


async def connected_pair(
    nursery: trio.Nursery,
    streams: tuple[trio.abc.Stream, trio.abc.Stream],
    **client_options: Any,
) -> Pair:
    """Client and server connections over an in-memory stream pair."""
    client_stream, server_stream = streams
    server_sides: list[WebSocketConnection] = []

    async def serve() -> None:
        request = await wrap_server_stream(nursery, server_stream)
        server_sides.append(await request.accept())

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as handshake:
            handshake.start_soon(serve)
            client = await wrap_client_stream(
                nursery, client_stream, "localhost", "/", **client_options
            )
    return client, server_sides[0]


@pytest.mark.parametrize("queue_size", [0, 1, 3])
async def test_full_queue_stops_reading(nursery: trio.Nursery, queue_size: int) -> None:
    # Over a lockstep stream a write completes only once the peer has read
    # it, so the sender's progress shows exactly how much the reader read.
    client, server_side = await connected_pair(
        nursery, trio.testing.lockstep_stream_pair(), message_queue_size=queue_size
    )
    total = queue_size + 5
    sent: list[int] = []
    all_sent = trio.Event()

    async def sender() -> None:
        for number in range(total):
            await server_side.send_message(f"message {number}")
            sent.append(number)
        all_sent.set()

    nursery.start_soon(sender)
    await trio.testing.wait_all_tasks_blocked()
    assert sent == list(range(queue_size))  # the queue is full; reading stopped

    with trio.fail_after(TIMEOUT):
        for number in range(total):
            assert await client.get_message() == f"message {number}"
        await all_sent.wait()
        await client.aclose()
        with pytest.raises(ConnectionClosed):
            await server_side.get_message()


# -- Closing ------------------------------------------------------------------


@pytest.mark.parametrize("closer", ["client", "server"])
async def test_close_with_code_and_reason(
    holding_server: WebSocketServer, holder: HoldingHandler, closer: str
) -> None:
    expected = CloseReason(4001, "going away now")
    with trio.fail_after(TIMEOUT):
        async with connected(holding_server, holder) as (client, server_side):
            closing, peer = (
                (client, server_side) if closer == "client" else (server_side, client)
            )
            assert closing.closed is None
            await closing.aclose(expected.code, expected.reason)
            assert closing.closed == expected
            with pytest.raises(ConnectionClosed) as closed:
                await peer.get_message()
            assert closed.value.reason == expected
            assert peer.closed == expected


async def test_messages_received_before_remote_close_are_delivered(
    nursery: trio.Nursery,
) -> None:
    burst = BurstHandler(3)
    server = await start_server(nursery, burst)
    async with open_websocket_url(
        server_url(server), message_queue_size=math.inf
    ) as client:
        with trio.fail_after(TIMEOUT):
            # The server's close completes only once our reader has read
            # everything it sent, the close frame included.
            await burst.finished.wait()
        assert client.closed == BURST_REASON
        await receive_burst(client, burst.count)


OPERATIONS: dict[str, Callable[[WebSocketConnection], Awaitable[object]]] = {
    "get_message": lambda connection: connection.get_message(),
    "send_message": lambda connection: connection.send_message("too late"),
    "ping": lambda connection: connection.ping(),
    "pong": lambda connection: connection.pong(),
}


@pytest.mark.parametrize("operation", OPERATIONS)
async def test_operations_after_local_close_raise_at_once(
    holding_server: WebSocketServer, holder: HoldingHandler, operation: str
) -> None:
    with trio.fail_after(TIMEOUT):
        async with connected(holding_server, holder) as (client, server_side):
            # A message that arrives before our close is discarded, not returned.
            await server_side.send_message("pending")
            await client.aclose(4000, "done")
            with trio.move_on_after(TIMEOUT / 2) as waited:
                with pytest.raises(ConnectionClosed) as closed:
                    await OPERATIONS[operation](client)
            assert not waited.cancelled_caught
            assert closed.value.reason == CloseReason(4000, "done")


async def test_aclose_is_idempotent(
    holding_server: WebSocketServer, holder: HoldingHandler
) -> None:
    first = CloseReason(4000, "first")
    with trio.fail_after(TIMEOUT):
        async with connected(holding_server, holder) as (client, server_side):
            async with trio.open_nursery() as closers:
                closers.start_soon(client.aclose, first.code, first.reason)
                closers.start_soon(client.aclose, 4001, "concurrent")
            await client.aclose(1001, "later")
            with pytest.raises(ConnectionClosed) as closed:
                await server_side.get_message()
    # Whichever aclose ran first decided; the later one changed nothing.
    assert client.closed in (first, CloseReason(4001, "concurrent"))
    assert closed.value.reason == client.closed


async def test_close_times_out_when_peer_never_answers(
    deaf_server: WebSocketServer,
    holder: HoldingHandler,
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The server reads nothing while no one asks it for a message, so our
    # close frame is never answered.
    with trio.fail_after(TIMEOUT * 10):
        with pytest.raises(DisconnectionTimeout):
            async with open_websocket_url(
                server_url(deaf_server), disconnect_timeout=5
            ) as client:
                await holder.next()
                closing_started = trio.current_time()
        elapsed = trio.current_time() - closing_started
    assert 5 <= elapsed < 6
    assert client.closed is not None
    with pytest.raises(ConnectionClosed):
        await client.send_message("after the timeout")


class SilentPeer:
    """A TCP server that reads everything and never answers."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.disconnected = trio.Event()

    async def __call__(self, stream: trio.SocketStream) -> None:
        try:
            while data := await stream.receive_some():
                self.received += data
        except trio.BrokenResourceError:
            pass
        finally:
            await stream.aclose()
            self.disconnected.set()


@pytest.fixture
async def silent_peer(nursery: trio.Nursery) -> tuple[SilentPeer, int]:
    peer = SilentPeer()
    listeners: list[trio.SocketListener] = await nursery.start(
        partial(trio.serve_tcp, peer, 0, host="127.0.0.1")
    )
    port: int = listeners[0].socket.getsockname()[1]
    return peer, port


async def test_connect_timeout(
    silent_peer: tuple[SilentPeer, int], autojump_clock: trio.testing.MockClock
) -> None:
    peer, port = silent_peer
    with trio.fail_after(TIMEOUT * 10):
        started = trio.current_time()
        with pytest.raises(ConnectionTimeout):
            async with open_websocket(
                "127.0.0.1", port, "/", use_ssl=False, connect_timeout=7
            ):
                pytest.fail("connected to a server that never answers")
        assert 7 <= trio.current_time() - started < 8
        await peer.disconnected.wait()  # the client closed its socket
    assert peer.received.startswith(b"GET / HTTP/1.1\r\n")


# -- Structured concurrency ---------------------------------------------------


class BodyError(Exception):
    """Raised by the body of an ``async with`` under test."""


@pytest.mark.parametrize("opener", CONTEXT_MANAGERS, ids=_opener_id)
async def test_body_exception_propagates_as_itself(
    echo_server: WebSocketServer, opener: Opener
) -> None:
    cause = ValueError("the cause")
    raised: list[BodyError] = []

    async def body() -> None:
        async with opener("127.0.0.1", echo_server.port, None) as client:
            await assert_echoes(client)
            try:
                raise KeyError("the context")
            except KeyError:
                error = BodyError("from the body")
                raised.append(error)
                raise error from cause

    with trio.fail_after(TIMEOUT):
        with pytest.raises(BodyError) as caught:  # not an ExceptionGroup
            await body()
    assert caught.value is raised[0]
    assert caught.value.__cause__ is cause
    assert isinstance(caught.value.__context__, KeyError)
    frames = [frame.name for frame in traceback.extract_tb(caught.value.__traceback__)]
    assert "body" in frames


@pytest.mark.parametrize("opener", OPENERS, ids=_opener_id)
async def test_cancel_during_handshake_leaves_nothing_behind(
    silent_peer: tuple[SilentPeer, int],
    opener: Opener,
    autojump_clock: trio.testing.MockClock,
) -> None:
    peer, port = silent_peer
    with trio.fail_after(TIMEOUT * 10):
        with trio.move_on_after(5) as cancelled:
            async with opener("127.0.0.1", port, None):
                pytest.fail("connected to a server that never answers")
        assert cancelled.cancelled_caught
        await peer.disconnected.wait()
    assert peer.received.startswith(b"GET / HTTP/1.1\r\n")


@pytest.mark.parametrize("opener", OPENERS, ids=_opener_id)
async def test_cancel_during_get_message_leaves_nothing_behind(
    holding_server: WebSocketServer,
    holder: HoldingHandler,
    opener: Opener,
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(TIMEOUT * 10):
        with trio.move_on_after(5) as cancelled:
            async with opener("127.0.0.1", holding_server.port, None) as client:
                _, server_side = await holder.next()
                await client.get_message()
        assert cancelled.cancelled_caught
        # The server sees the connection end, one way or the other.
        with pytest.raises(ConnectionClosed):
            await server_side.get_message()
    assert client.closed is not None
    assert server_side.closed is not None


# -- Ping and pong ------------------------------------------------------------


async def drain(connection: WebSocketConnection) -> None:
    """Read (and so let the connection read) until it closes."""
    with pytest.raises(ConnectionClosed):
        while True:
            await connection.get_message()


async def test_ping_waits_for_pong(
    nursery: trio.Nursery, deaf_server: WebSocketServer, holder: HoldingHandler
) -> None:
    async with connected(deaf_server, holder) as (client, server_side):
        answered = trio.Event()

        async def ping() -> None:
            await client.ping(b"are you there")
            answered.set()

        nursery.start_soon(ping)
        await trio.testing.wait_all_tasks_blocked()
        assert not answered.is_set()  # the server has not read the ping yet
        nursery.start_soon(drain, server_side)
        with trio.fail_after(TIMEOUT):
            await answered.wait()


async def test_ping_payload_in_flight_is_value_error(
    nursery: trio.Nursery, deaf_server: WebSocketServer, holder: HoldingHandler
) -> None:
    async with connected(deaf_server, holder) as (client, server_side):
        nursery.start_soon(client.ping, b"twice")
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(ValueError):
            await client.ping(b"twice")
        nursery.start_soon(drain, server_side)
        with trio.fail_after(TIMEOUT):
            await client.ping(b"twice after the first")
            await client.ping(b"twice")  # no longer in flight


async def test_pong_answers_its_ping_and_earlier_ones(
    nursery: trio.Nursery, holding_server: WebSocketServer, holder: HoldingHandler
) -> None:
    # With a queue of 0 and no reader, the client answers no pings itself:
    # only its explicit, unsolicited pong() can answer the server's pings.
    async with connected(holding_server, holder, message_queue_size=0) as pair:
        client, server_side = pair
        answered: list[bytes] = []

        async def ping(payload: bytes) -> None:
            await server_side.ping(payload)
            answered.append(payload)

        for payload in (b"1", b"2", b"3"):
            nursery.start_soon(ping, payload)
            await trio.testing.wait_all_tasks_blocked()
        assert answered == []
        await client.pong(b"2")
        with trio.fail_after(TIMEOUT):
            while len(answered) < 2:
                await trio.testing.wait_all_tasks_blocked()
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(answered) == [b"1", b"2"]  # not the later ping 3
        await client.pong(b"3")
        with trio.fail_after(TIMEOUT):
            while len(answered) < 3:
                await trio.testing.wait_all_tasks_blocked()


async def test_ping_raises_when_connection_closes(
    nursery: trio.Nursery, deaf_server: WebSocketServer, holder: HoldingHandler
) -> None:
    async with connected(deaf_server, holder) as (client, server_side):
        outcome: list[BaseException] = []

        async def ping() -> None:
            try:
                await client.ping(b"never answered")
            except ConnectionClosed as exc:
                outcome.append(exc)

        nursery.start_soon(ping)
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(TIMEOUT):
            await server_side.aclose(4003, "no pong for you")
            while not outcome:
                await trio.testing.wait_all_tasks_blocked()
    (error,) = outcome
    assert isinstance(error, ConnectionClosed)
    assert error.reason == CloseReason(4003, "no pong for you")


# -- Accepting clients ---------------------------------------------------------


class FlakyListener(trio.abc.Listener[trio.abc.Stream]):
    """Out of file descriptors once, then one in-memory client, then quiet."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._failures = 1
        self._stream: trio.abc.Stream | None = stream
        self.closed = False

    async def accept(self) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        if self._failures:
            self._failures -= 1
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        if self._stream is None:
            await trio.sleep_forever()
        stream, self._stream = self._stream, None
        return stream

    async def aclose(self) -> None:
        self.closed = True
        await trio.lowlevel.checkpoint()


async def test_server_retries_accept_when_out_of_file_descriptors(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    listener = FlakyListener(server_stream)
    server = WebSocketServer(echo_handler, [listener])
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            ws = await wrap_client_stream(nursery, client_stream, "localhost", "/")
            await ws.send_message("still serving")
            assert await ws.get_message() == "still serving"
            await ws.aclose()
            await server.aclose()
    assert listener.closed
    assert any(
        "cannot accept connections" in record.getMessage()
        and record.levelno == logging.WARNING
        for record in caplog.records
    )


async def test_out_of_descriptors_is_one_warning_for_all_listeners(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # Two addresses (as IPv4 and IPv6), one shortage: one warning.
    caplog.set_level(logging.DEBUG, "trio-websocket")
    pairs = [trio.testing.memory_stream_pair() for _ in range(2)]
    listeners = [FlakyListener(server_stream) for _, server_stream in pairs]
    server = WebSocketServer(echo_handler, listeners)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            for client_stream, _ in pairs:  # both listeners failed, then accepted
                ws = await wrap_client_stream(nursery, client_stream, "localhost", "/")
                await ws.send_message("served")
                assert await ws.get_message() == "served"
                await ws.aclose()
            await server.aclose()
    shortages = [
        record.levelno
        for record in caplog.records
        if "cannot accept connections" in record.getMessage()
    ]
    assert sorted(shortages) == [logging.DEBUG, logging.WARNING]
