"""Compatibility with the established trio_websocket API, and its old defects.

One test (or parametrized group) per item of the specification's sections
"Compatibility details real users rely on" and "Known defects of the older
implementation that this one must not have", over loopback sockets.
"""

from __future__ import annotations

import copy
import importlib.metadata
import inspect
import logging
import math
import pickle
import random
import re
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from conftest import needs_ipv6

import trio_websocket
from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    Endpoint,
    HandshakeError,
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

HOST = "127.0.0.1"
Handler = Callable[[WebSocketRequest], Awaitable[None]]
Opener = Callable[[trio.Nursery, int], AbstractAsyncContextManager[WebSocketConnection]]


# -- Helpers ---------------------------------------------------------------------------


async def echo(request: WebSocketRequest) -> None:
    """Accept, then echo up to 100 messages until the connection closes."""
    connection = await request.accept()
    try:
        for _ in range(100):
            await connection.send_message(await connection.get_message())
    except ConnectionClosed:
        pass


class Recorder:
    """A server handler that records each request, then runs ``action``."""

    def __init__(self, action: Handler = echo) -> None:
        self.action = action
        self.requests: list[WebSocketRequest] = []
        self.connections: list[WebSocketConnection] = []
        self.errors: list[Exception] = []
        self.ends: list[tuple[Endpoint | str, Endpoint | str]] = []

    async def __call__(self, request: WebSocketRequest) -> None:
        self.requests.append(request)
        self.ends.append((request.local, request.remote))
        try:
            await self.action(request)
        except Exception as exc:
            self.errors.append(exc)
            raise

    def header(self, name: bytes, index: int = -1) -> list[bytes]:
        """Every value of header ``name`` in request ``index``."""
        return [v for n, v in self.requests[index].headers if n == name]


async def start_server(
    nursery: trio.Nursery,
    handler: Handler,
    ssl_context: ssl.SSLContext | None = None,
    host: str = HOST,
    **options: Any,
) -> WebSocketServer:
    """``serve_websocket`` with ``ssl_context`` as its 4th positional argument."""
    server: WebSocketServer = await nursery.start(
        partial(serve_websocket, handler, host, 0, ssl_context, **options)
    )
    return server


def url_of(server: WebSocketServer, resource: str = "/", scheme: str = "ws") -> str:
    return f"{scheme}://{HOST}:{server.port}{resource}"


async def round_trip(connection: WebSocketConnection, message: str = "hi") -> None:
    """Check that ``connection`` talks to an echo server."""
    with trio.fail_after(5):
        await connection.send_message(message)
        assert await connection.get_message() == message


class URLObject:
    """A URL type in the style of yarl.URL: ``str()`` gives the URL."""

    def __init__(self, text: str) -> None:
        self._text = text

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"URLObject({self._text!r})"


# -- Positional layouts and keyword names ----------------------------------------------


def _parameter_names(function: Callable[..., object]) -> list[str]:
    return list(inspect.signature(function).parameters)


@pytest.mark.parametrize(
    ("function", "leading"),
    [
        (open_websocket_url, ["url", "ssl_context"]),
        (connect_websocket_url, ["nursery", "url", "ssl_context"]),
        (serve_websocket, ["handler", "host", "port", "ssl_context"]),
        (
            wrap_server_stream,
            [
                "nursery",
                "stream",
                "message_queue_size",
                "max_message_size",
                "receive_buffer_size",
            ],
        ),
    ],
)
def test_positional_layout(function: Callable[..., object], leading: list[str]) -> None:
    parameters = inspect.signature(function).parameters
    assert _parameter_names(function)[: len(leading)] == leading
    for name in leading:
        assert parameters[name].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD


def test_serve_websocket_ssl_context_has_no_default() -> None:
    parameter = inspect.signature(serve_websocket).parameters["ssl_context"]
    assert parameter.default is inspect.Parameter.empty


@pytest.mark.parametrize("scheme", ["wss", "ws"])
async def test_ssl_context_second_positional_of_url_functions(
    nursery: trio.Nursery,
    server_ssl_context: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
    scheme: str,
) -> None:
    # A context given with a ws:// URL still turns TLS on.
    server = await start_server(nursery, echo, server_ssl_context)
    url = url_of(server, scheme=scheme)
    async with open_websocket_url(url, client_ssl_context) as connection:
        assert isinstance(connection.local, Endpoint)
        assert connection.local.is_ssl
        await round_trip(connection)
    connection = await connect_websocket_url(nursery, url, client_ssl_context)
    await round_trip(connection)
    await connection.aclose()


async def _memory_connections(
    nursery: trio.Nursery, queue_size: float, max_size: float, receive_size: int
) -> tuple[WebSocketConnection, WebSocketConnection]:
    """A client and a server connection over an in-memory stream pair."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    send, receive = trio.open_memory_channel[WebSocketConnection](1)

    async def serve() -> None:
        # The three sizes, positionally, as the old API allowed.
        request = await wrap_server_stream(
            nursery, server_stream, queue_size, max_size, receive_size
        )
        await send.send(await request.accept())

    nursery.start_soon(serve)
    with trio.fail_after(5):
        client = await wrap_client_stream(nursery, client_stream, "example", "/")
        server = await receive.receive()
    return client, server


async def test_wrap_server_stream_sizes_positionally(nursery: trio.Nursery) -> None:
    client, server = await _memory_connections(nursery, 1, 10, 7)
    with trio.fail_after(5):
        await client.send_message(b"0123456789")
        assert await server.get_message() == b"0123456789"
        await client.send_message(b"0123456789!")  # 11 bytes > 10
        with pytest.raises(ConnectionClosed) as caught:
            await server.get_message()
    assert caught.value.reason is not None
    assert caught.value.reason.code == 1009


@asynccontextmanager
async def _open_url_by_keyword(
    nursery: trio.Nursery, port: int
) -> AsyncIterator[WebSocketConnection]:
    url = f"ws://{HOST}:{port}/"
    async with open_websocket_url(url=url, ssl_context=None) as connection:
        yield connection


@asynccontextmanager
async def _open_by_keyword(
    nursery: trio.Nursery, port: int
) -> AsyncIterator[WebSocketConnection]:
    async with open_websocket(
        host=HOST, port=port, resource="/", use_ssl=False
    ) as connection:
        yield connection


@asynccontextmanager
async def _connect_url_by_keyword(
    nursery: trio.Nursery, port: int
) -> AsyncIterator[WebSocketConnection]:
    url = f"ws://{HOST}:{port}/"
    connection = await connect_websocket_url(nursery=nursery, url=url, ssl_context=None)
    try:
        yield connection
    finally:
        await connection.aclose()


@asynccontextmanager
async def _connect_by_keyword(
    nursery: trio.Nursery, port: int
) -> AsyncIterator[WebSocketConnection]:
    connection = await connect_websocket(
        nursery=nursery, host=HOST, port=port, resource="/", use_ssl=False
    )
    try:
        yield connection
    finally:
        await connection.aclose()


@pytest.mark.parametrize(
    "opener",
    [
        _open_url_by_keyword,
        _open_by_keyword,
        _connect_url_by_keyword,
        _connect_by_keyword,
    ],
)
async def test_keyword_names(nursery: trio.Nursery, opener: Opener) -> None:
    server: WebSocketServer = await nursery.start(
        partial(serve_websocket, handler=echo, host=HOST, port=0, ssl_context=None)
    )
    async with opener(nursery, server.port) as connection:
        await round_trip(connection)


# -- URL objects and header types ------------------------------------------------------


async def test_url_may_be_any_object_whose_str_is_the_url(
    nursery: trio.Nursery,
) -> None:
    recorder = Recorder()
    server = await start_server(nursery, recorder)
    url = URLObject(url_of(server, "/object?kind=yarl"))
    async with open_websocket_url(url) as connection:
        await round_trip(connection)
    connection = await connect_websocket_url(nursery, url)
    await round_trip(connection)
    await connection.aclose()
    assert [request.path for request in recorder.requests] == [
        "/object?kind=yarl",
        "/object?kind=yarl",
    ]


async def test_header_pairs_may_be_bytes_or_str(nursery: trio.Nursery) -> None:
    async def accept_with_headers(request: WebSocketRequest) -> None:
        await request.accept(extra_headers=[("X-Reply", "text"), (b"X-Raw", b"bin")])

    recorder = Recorder(accept_with_headers)
    server = await start_server(nursery, recorder)
    sent: list[tuple[bytes | str, bytes | str]] = [
        (b"X-Bytes", b"one"),
        ("X-Str", "two"),
        (b"X-Mixed", "three"),
    ]
    async with open_websocket_url(url_of(server), extra_headers=sent) as connection:
        received = dict(connection.handshake_headers)
    assert received[b"x-reply"] == b"text"
    assert received[b"x-raw"] == b"bin"
    assert recorder.header(b"x-bytes") == [b"one"]
    assert recorder.header(b"x-str") == [b"two"]
    assert recorder.header(b"x-mixed") == [b"three"]


async def test_reject_header_pairs_may_be_str(nursery: trio.Nursery) -> None:
    async def refuse(request: WebSocketRequest) -> None:
        await request.reject(403, extra_headers=[("X-Why", "policy")], body=b"no")

    server = await start_server(nursery, refuse)
    with trio.fail_after(5), pytest.raises(ConnectionRejected) as caught:
        async with open_websocket_url(url_of(server)):
            pass  # pragma: no cover
    assert (b"x-why", b"policy") in list(caught.value.headers)
    assert caught.value.body == b"no"


# -- ConnectionClosed subclasses and reasons -------------------------------------------


class AppClosed(ConnectionClosed):
    """An application error in the style of real dependents' subclasses."""

    def __init__(self, why: str) -> None:  # no super().__init__()
        self.reason = CloseReason(1000, why)


async def test_connection_closed_subclass_without_super_init(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    async def close_by_raising(request: WebSocketRequest) -> None:
        await request.accept()
        raise AppClosed("session over")

    server = await start_server(nursery, close_by_raising)
    async with open_websocket_url(url_of(server)) as connection:
        with trio.fail_after(5), pytest.raises(ConnectionClosed) as caught:
            await connection.get_message()
    # The server treats the subclass as a closed connection, not a failure.
    assert caught.value.reason is not None
    assert caught.value.reason.code == 1000
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    error = AppClosed("text")
    assert "text" in str(error)
    assert repr(error).startswith("AppClosed")


async def test_connection_closed_reason_is_a_plain_attribute(
    echo_server: WebSocketServer,
) -> None:
    async with open_websocket_url(url_of(echo_server)) as connection:
        await connection.aclose(4002, "done")
        with pytest.raises(ConnectionClosed) as caught:
            await connection.get_message()
    error = caught.value
    assert error.reason == CloseReason(4002, "done")
    error.reason = CloseReason(4003, "reassigned")
    assert "4003" in repr(error)
    assert "reassigned" in str(error)


# -- Version, logger, names, constants, pickling ---------------------------------------


def _version_tuple(text: str) -> tuple[int, ...]:
    match = re.match(r"\d+(\.\d+)*", text)
    assert match is not None, text
    return tuple(int(part) for part in match.group().split("."))


def test_version_satisfies_dependents_pins() -> None:
    # Dependents pin trio-websocket>=0.12.2,<1.0.
    installed = importlib.metadata.version("trio-websocket")
    assert installed == trio_websocket.__version__
    assert (0, 12, 2) <= _version_tuple(installed) < (1,)
    assert _version_tuple(installed) >= (0, 13)


async def test_logger_name_and_connection_names(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    names: list[str] = []

    async def fail_after_accept(request: WebSocketRequest) -> None:
        connection = await request.accept()
        names.append(str(connection))
        raise RuntimeError("handler bug")

    server = await start_server(nursery, fail_after_accept)
    with caplog.at_level(logging.ERROR, logger="trio-websocket"):
        async with open_websocket_url(url_of(server)) as connection:
            with trio.fail_after(5), pytest.raises(ConnectionClosed) as caught:
                await connection.get_message()
            client_name = str(connection)
    assert caught.value.reason is not None
    assert caught.value.reason.code == 1011
    assert re.fullmatch(r"client-\d+", client_name)
    assert len(names) == 1
    assert re.fullmatch(r"server-\d+", names[0])
    assert names[0] != client_name.replace("client", "server")
    errors = [r for r in caplog.records if r.name == "trio-websocket"]
    assert errors
    assert any(
        r.exc_info is not None and isinstance(r.exc_info[1], RuntimeError)
        for r in errors
    )
    assert logging.getLogger("trio-websocket") is logging.getLogger(errors[0].name)


@pytest.mark.parametrize(
    ("function", "parameter", "constant"),
    [
        (open_websocket, "connect_timeout", "CONN_TIMEOUT"),
        (open_websocket, "disconnect_timeout", "CONN_TIMEOUT"),
        (open_websocket_url, "message_queue_size", "MESSAGE_QUEUE_SIZE"),
        (open_websocket_url, "max_message_size", "MAX_MESSAGE_SIZE"),
        (connect_websocket, "receive_buffer_size", "RECEIVE_BYTES"),
        (serve_websocket, "connect_timeout", "CONN_TIMEOUT"),
        (serve_websocket, "max_message_size", "MAX_MESSAGE_SIZE"),
        (wrap_server_stream, "message_queue_size", "MESSAGE_QUEUE_SIZE"),
        (wrap_client_stream, "receive_buffer_size", "RECEIVE_BYTES"),
    ],
)
def test_module_constants_are_the_defaults(
    function: Callable[..., object], parameter: str, constant: str
) -> None:
    expected = {
        "CONN_TIMEOUT": 60,
        "MESSAGE_QUEUE_SIZE": 1,
        "MAX_MESSAGE_SIZE": 2**20,
        "RECEIVE_BYTES": 4096,
    }
    assert getattr(trio_websocket, constant) == expected[constant]
    default = inspect.signature(function).parameters[parameter].default
    assert default == expected[constant]


def _pickled(value: Any) -> Any:
    return pickle.loads(pickle.dumps(value))


async def test_errors_from_live_connections_copy_and_pickle(
    nursery: trio.Nursery,
) -> None:
    async def refuse(request: WebSocketRequest) -> None:
        await request.reject(418, body=b"teapot")

    refusing = await start_server(nursery, refuse)
    with trio.fail_after(5), pytest.raises(ConnectionRejected) as rejected:
        async with open_websocket_url(url_of(refusing)):
            pass  # pragma: no cover
    accepting = await start_server(nursery, echo)
    async with open_websocket_url(url_of(accepting)) as connection:
        await connection.aclose(1001, "bye")
        with pytest.raises(ConnectionClosed) as closed:
            await connection.get_message()
    duplicates: list[Callable[[Any], Any]] = [copy.copy, copy.deepcopy, _pickled]
    for duplicate in duplicates:
        rejection = duplicate(rejected.value)
        assert isinstance(rejection, ConnectionRejected)
        assert rejection.status_code == 418
        assert rejection.body == b"teapot"
        assert list(rejection.headers) == list(rejected.value.headers)
        closure = duplicate(closed.value)
        assert isinstance(closure, ConnectionClosed)
        assert closure.reason == CloseReason(1001, "bye")
        assert duplicate(closed.value.reason) == CloseReason(1001, "bye")


# -- Defect: handshake failures raise at once ------------------------------------------


async def _read_head(stream: trio.SocketStream) -> bytes:
    head = b""
    with trio.move_on_after(5):
        while b"\r\n\r\n" not in head:
            data = await stream.receive_some(4096)
            if not data:
                break
            head += data
    return head


async def _answer(reply: bytes, stream: trio.SocketStream) -> None:
    await _read_head(stream)
    if reply:
        await stream.send_all(reply)
    await stream.aclose()


async def _hang_up_at_once(stream: trio.SocketStream) -> None:
    await stream.aclose()


async def _reset_at_once(stream: trio.SocketStream) -> None:
    # SO_LINGER with a zero timeout: closing sends a TCP reset.
    stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


_BAD_SERVERS: list[tuple[str, Callable[[trio.SocketStream], Awaitable[None]]]] = [
    ("lost-after-request", partial(_answer, b"")),
    ("lost-before-request", _hang_up_at_once),
    ("reset-before-request", _reset_at_once),
    ("garbage", partial(_answer, b"\x00\x01garbage that is not HTTP\r\n\r\n")),
    ("partial-status", partial(_answer, b"HTTP/1.1 101 Switch")),
    (
        "101-without-upgrade",
        partial(_answer, b"HTTP/1.1 101 Switching Protocols\r\n\r\n"),
    ),
]


@pytest.mark.parametrize(
    "behaviour", [b for _, b in _BAD_SERVERS], ids=[i for i, _ in _BAD_SERVERS]
)
async def test_bad_handshake_raises_at_once(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    behaviour: Callable[[trio.SocketStream], Awaitable[None]],
) -> None:
    # With a virtual clock, waiting out connect_timeout would be instant and
    # raise ConnectionTimeout; the failure must be seen for what it is.
    listeners = await nursery.start(partial(trio.serve_tcp, behaviour, 0, host=HOST))
    port = listeners[0].socket.getsockname()[1]
    with pytest.raises(HandshakeError) as caught:
        async with open_websocket_url(f"ws://{HOST}:{port}/"):
            pass  # pragma: no cover
    assert not isinstance(caught.value, ConnectionTimeout)
    assert not isinstance(caught.value, ConnectionRejected)


async def test_refusal_status_raises_at_once(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    reply = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\n\r\nnope"
    listeners = await nursery.start(
        partial(trio.serve_tcp, partial(_answer, reply), 0, host=HOST)
    )
    port = listeners[0].socket.getsockname()[1]
    with pytest.raises(ConnectionRejected) as caught:
        async with open_websocket_url(f"ws://{HOST}:{port}/"):
            pass  # pragma: no cover
    assert caught.value.status_code == 403
    assert caught.value.body == b"nope"


def _closed_port() -> int:
    """A loopback port that nothing listens on (with high probability)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


async def test_refused_tcp_connection_is_a_handshake_error_caused_by_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    port = _closed_port()
    with pytest.raises(HandshakeError, match=f"{HOST}:{port}") as caught:
        async with open_websocket_url(f"ws://{HOST}:{port}/"):
            pass  # pragma: no cover
    assert type(caught.value) is HandshakeError
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)


async def test_refused_tcp_connection_is_an_os_error_from_connect_websocket(
    nursery: trio.Nursery,
) -> None:
    with pytest.raises(ConnectionRefusedError):
        await connect_websocket_url(nursery, f"ws://{HOST}:{_closed_port()}/")


async def test_tls_certificate_failure_is_a_handshake_error_caused_by_tls(
    nursery: trio.Nursery, server_ssl_context: ssl.SSLContext
) -> None:
    server = await start_server(nursery, echo, server_ssl_context)
    untrusting = ssl.create_default_context()  # does not trust the test CA
    with trio.fail_after(5), pytest.raises(HandshakeError) as caught:
        async with open_websocket_url(url_of(server, scheme="wss"), untrusting):
            pass  # pragma: no cover
    assert isinstance(caught.value.__cause__, ssl.SSLError)
    assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)


# -- Defect: the Host header -----------------------------------------------------------


@pytest.fixture
def redirect_tcp(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Send every client TCP connection to one local port, whatever the URL."""
    from trio_websocket._tcp import open_tcp as original

    def redirect(port: int) -> None:
        async def open_redirected(host: str, _port: int) -> trio.SocketStream:
            return await original(HOST, port)

        monkeypatch.setattr("trio_websocket._client.open_tcp", open_redirected)

    return redirect


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("ws://127.0.0.1:{port}/", "127.0.0.1:{port}"),
        ("ws://127.0.0.1/", "127.0.0.1"),
        ("ws://127.0.0.1:80/", "127.0.0.1"),
        ("ws://127.0.0.1:443/", "127.0.0.1:443"),
        ("ws://localhost:8080/", "localhost:8080"),
        ("ws://[::1]:8080/", "[::1]:8080"),
        ("ws://[::1]/", "[::1]"),
        ("ws://[::1]:443/", "[::1]:443"),
        ("wss://127.0.0.1/", "127.0.0.1"),
        ("wss://127.0.0.1:443/", "127.0.0.1"),
        ("wss://127.0.0.1:80/", "127.0.0.1:80"),
        ("wss://[::1]/", "[::1]"),
        ("wss://[::1]:8443/", "[::1]:8443"),
        ("wss://localhost/", "localhost"),
    ],
)
async def test_host_header(
    nursery: trio.Nursery,
    redirect_tcp: Callable[[int], None],
    server_ssl_context: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
    url: str,
    host: str,
) -> None:
    secure = url.startswith("wss")
    recorder = Recorder()
    server = await start_server(
        nursery, recorder, server_ssl_context if secure else None
    )
    redirect_tcp(server.port)
    async with open_websocket_url(
        url.format(port=server.port), client_ssl_context if secure else None
    ) as connection:
        await round_trip(connection)
    assert recorder.header(b"host") == [host.format(port=server.port).encode()]


@needs_ipv6
async def test_host_header_over_real_ipv6(nursery: trio.Nursery) -> None:
    recorder = Recorder()
    server = await start_server(nursery, recorder, host="::1")
    async with open_websocket("::1", server.port, "/", use_ssl=False) as connection:
        await round_trip(connection)
    assert recorder.header(b"host") == [f"[::1]:{server.port}".encode()]
    [(local, remote)] = recorder.ends
    assert isinstance(local, Endpoint)
    assert isinstance(remote, Endpoint)
    assert local.address.version == remote.address.version == 6
    assert local.url == f"ws://[::1]:{server.port}"


# -- Defect: Unix-socket listeners -----------------------------------------------------


async def test_unix_socket_listener(
    nursery: trio.Nursery, unix_listener: tuple[str, trio.SocketListener]
) -> None:
    path, listener = unix_listener
    recorder = Recorder()
    server = WebSocketServer(recorder, [listener])
    await nursery.start(server.run)
    assert server.listeners == [path]

    stream = await trio.open_unix_socket(path)
    with trio.fail_after(5):
        connection = await wrap_client_stream(nursery, stream, "localhost", "/unix")
    await round_trip(connection)
    assert isinstance(connection.remote, str)
    assert connection.remote == path
    await connection.aclose()
    assert recorder.requests[0].path == "/unix"
    [(local, remote)] = recorder.ends
    assert local == path
    assert isinstance(remote, str)


# -- Defect: extra_headers may not touch the handshake ---------------------------------

_HANDSHAKE_HEADERS: list[bytes | str] = [
    "Sec-WebSocket-Key",
    b"Sec-WebSocket-Version",
    "sec-websocket-protocol",
    "Sec-WebSocket-Extensions",
    "SEC-WEBSOCKET-ACCEPT",
    "Upgrade",
    b"connection",
    "Connection",
]


@pytest.mark.parametrize("name", _HANDSHAKE_HEADERS, ids=repr)
async def test_client_extra_headers_cannot_override_handshake(
    echo_server: WebSocketServer, name: bytes | str
) -> None:
    headers: list[tuple[bytes | str, bytes | str]] = [
        ("X-Fine", "yes"),
        (name, "13" if isinstance(name, str) else b"13"),
    ]
    with trio.fail_after(5), pytest.raises(ValueError):
        async with open_websocket_url(url_of(echo_server), extra_headers=headers):
            pass  # pragma: no cover


@pytest.mark.parametrize("name", _HANDSHAKE_HEADERS, ids=repr)
async def test_server_extra_headers_cannot_override_handshake(
    nursery: trio.Nursery, name: bytes | str
) -> None:
    async def accept_badly_then_well(request: WebSocketRequest) -> None:
        with pytest.raises(ValueError):
            await request.accept(extra_headers=[(name, "x")])
        await echo(request)

    recorder = Recorder(accept_badly_then_well)
    server = await start_server(nursery, recorder)
    async with open_websocket_url(url_of(server)) as connection:
        await round_trip(connection)
    assert recorder.errors == []


# -- Defect: accept() with a subprotocol the client did not offer ----------------------


async def test_accept_unoffered_subprotocol_is_a_value_error(
    nursery: trio.Nursery,
) -> None:
    async def accept_chat(request: WebSocketRequest) -> None:
        connection = await request.accept(subprotocol="chat")
        await connection.send_message(connection.subprotocol or "")

    recorder = Recorder(accept_chat)
    server = await start_server(nursery, recorder)
    with trio.fail_after(5), pytest.raises(ConnectionRejected) as caught:
        async with open_websocket_url(url_of(server), subprotocols=["mqtt"]):
            pass  # pragma: no cover
    assert caught.value.status_code == 500
    assert len(recorder.errors) == 1
    assert isinstance(recorder.errors[0], ValueError)
    # The server is still serving.
    with trio.fail_after(5):
        async with open_websocket_url(
            url_of(server), subprotocols=["mqtt", "chat"]
        ) as connection:
            assert connection.subprotocol == "chat"
            assert await connection.get_message() == "chat"


# -- Defect: max_message_size counts UTF-8 bytes ---------------------------------------


@pytest.mark.parametrize(
    ("characters", "fits"),
    [(700, True), (750, True), (751, False), (1000, False)],
)
async def test_max_message_size_counts_utf8_bytes(
    nursery: trio.Nursery, characters: int, fits: bool
) -> None:
    server = await start_server(nursery, echo, max_message_size=1500)
    message = "é" * characters  # two bytes each in UTF-8
    async with open_websocket_url(url_of(server)) as connection:
        await connection.send_message(message)
        if fits:
            with trio.fail_after(5):
                assert await connection.get_message() == message
        else:
            with trio.fail_after(5), pytest.raises(ConnectionClosed) as caught:
                await connection.get_message()
            assert caught.value.reason is not None
            assert caught.value.reason.code == 1009


async def test_client_max_message_size_counts_utf8_bytes(
    echo_server: WebSocketServer,
) -> None:
    async with open_websocket_url(
        url_of(echo_server), max_message_size=1500
    ) as connection:
        await connection.send_message("é" * 1000)
        with trio.fail_after(5), pytest.raises(ConnectionClosed):
            await connection.get_message()
        assert connection.closed is not None
        assert connection.closed.code == 1009


# -- Defect: a cancelled send never corrupts the stream --------------------------------


async def test_send_cancelled_mid_frame_aborts_the_connection(
    nursery: trio.Nursery,
) -> None:
    outcome: list[BaseException | str | bytes] = []
    first_arrived = trio.Event()

    recorder = Recorder()

    async def slow_reader(request: WebSocketRequest) -> None:
        recorder.connections.append(await request.accept())
        first_arrived.set()
        # Read nothing until the client gave up on its large send; the
        # first small message fills the queue, so the reader pauses.
        await trio.sleep_forever()

    recorder.action = slow_reader
    # The frame must stay large on the wire: no compression (a server that
    # declines it), and random bytes in case it is negotiated anyway.
    server = await start_server(
        nursery, recorder, max_message_size=math.inf, compression=None
    )
    large = random.Random(1).randbytes(32 * 2**20)
    with trio.fail_after(10):  # on failure, do not wait out the close timeout
        async with open_websocket_url(url_of(server)) as client:
            await client.send_message(b"first")
            await first_arrived.wait()
            with trio.CancelScope() as sending:
                nursery.start_soon(_cancel_when_blocked, sending)
                await client.send_message(large)
            assert sending.cancelled_caught, "the large send was never blocked"
            assert client.closed is not None
            assert client.closed.code == 1006
            with pytest.raises(ConnectionClosed):
                await client.send_message("after")
    [server_side] = recorder.connections
    with trio.fail_after(5):
        outcome.append(await server_side.get_message())
        try:
            outcome.append(await server_side.get_message())
        except ConnectionClosed as exc:
            outcome.append(exc)
    assert outcome[0] == b"first"
    assert isinstance(outcome[1], ConnectionClosed)
    assert outcome[1].reason is not None
    assert outcome[1].reason.code == 1006  # not 1002: no corrupt frame seen


async def _cancel_when_blocked(scope: trio.CancelScope) -> None:
    await trio.testing.wait_all_tasks_blocked()
    scope.cancel()


# -- Defect: connect_websocket raises to the caller ------------------------------------


@pytest.mark.parametrize("by_url", [True, False], ids=["url", "host-port"])
async def test_connect_websocket_raises_rejection_to_the_caller(
    by_url: bool,
) -> None:
    async def refuse(request: WebSocketRequest) -> None:
        await request.reject(401, body=b"who are you")

    caught: list[ConnectionRejected] = []
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, refuse)
        try:
            with trio.fail_after(5):
                if by_url:
                    await connect_websocket_url(nursery, url_of(server))
                else:
                    await connect_websocket(
                        nursery, HOST, server.port, "/", use_ssl=False
                    )
        except ConnectionRejected as exc:
            caught.append(exc)
        # The nursery is still open and healthy: the error came to us.
        assert len(caught) == 1
        assert caught[0].status_code == 401
        assert caught[0].body == b"who are you"
        connection = await connect_websocket_url(
            nursery, url_of(await start_server(nursery, echo))
        )
        await round_trip(connection)
        await connection.aclose()
        nursery.cancel_scope.cancel()


async def test_connect_websocket_raises_handshake_error_to_the_caller() -> None:
    async with trio.open_nursery() as nursery:
        reply = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
        listeners = await nursery.start(
            partial(trio.serve_tcp, partial(_answer, reply), 0, host=HOST)
        )
        port = listeners[0].socket.getsockname()[1]
        with trio.fail_after(5), pytest.raises(ConnectionRejected) as caught:
            await connect_websocket(nursery, HOST, port, "/", use_ssl=False)
        assert caught.value.status_code == 200
        reply_101 = b"HTTP/1.1 101 Switching Protocols\r\n\r\n"
        listeners = await nursery.start(
            partial(trio.serve_tcp, partial(_answer, reply_101), 0, host=HOST)
        )
        port = listeners[0].socket.getsockname()[1]
        with trio.fail_after(5), pytest.raises(HandshakeError) as failed:
            await connect_websocket_url(nursery, f"ws://{HOST}:{port}/")
        assert not isinstance(failed.value, ConnectionRejected)
        nursery.cancel_scope.cancel()


# -- Defect: the server sees every request header --------------------------------------


async def test_server_sees_every_request_header(nursery: trio.Nursery) -> None:
    recorder = Recorder(partial(WebSocketRequest.reject, status_code=403))
    server = await start_server(nursery, recorder)
    stream = await trio.open_tcp_stream(HOST, server.port)
    request = (
        f"GET /all?x=1 HTTP/1.1\r\n"
        f"Host: {HOST}:{server.port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        "Sec-WebSocket-Protocol: chat, superchat\r\n"
        "Origin: http://example.com\r\n"
        "X-Custom: 1\r\n"
        "X-Custom: 2\r\n"
        "\r\n"
    )
    async with stream:
        await stream.send_all(request.encode())
        with trio.fail_after(5):
            answer = await _read_head(stream)
    assert answer.startswith(b"HTTP/1.1 403")
    headers = recorder.requests[0].headers
    assert (b"host", f"{HOST}:{server.port}".encode()) in headers
    assert (
        b"sec-websocket-extensions",
        b"permessage-deflate; client_max_window_bits",
    ) in headers
    assert (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ==") in headers
    assert (b"sec-websocket-version", b"13") in headers
    assert (b"upgrade", b"websocket") in headers
    assert (b"connection", b"Upgrade") in headers
    assert (b"origin", b"http://example.com") in headers
    assert recorder.header(b"x-custom") == [b"1", b"2"]
    assert recorder.requests[0].proposed_subprotocols == ("chat", "superchat")
    assert len(headers) == 10
