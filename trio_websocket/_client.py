"""Opening client connections: TCP, TLS, then the WebSocket handshake."""

from __future__ import annotations

import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus
from websockets.http11 import Response
from websockets.typing import Subprotocol
from websockets.uri import WebSocketURI

from ._concurrency import background_nursery
from ._connection import WebSocketConnection
from ._errors import (
    ConnectionRejected,
    ConnectionTimeout,
    DisconnectionTimeout,
    HandshakeError,
)
from ._handshake import (
    ENGINE_LOGGER,
    HeaderPairs,
    add_extra_headers,
    header_pairs,
    receive_handshake,
    send_pending,
)
from ._settings import (
    CONN_TIMEOUT,
    MAX_MESSAGE_SIZE,
    MESSAGE_QUEUE_SIZE,
    RECEIVE_BYTES,
    ConnectionOptions,
    Settings,
)
from ._url import host_header, parse_url
from ._version import __version__

if TYPE_CHECKING:
    from typing_extensions import Unpack

USER_AGENT = (
    f"Python/{sys.version_info[0]}.{sys.version_info[1]} trio-websocket/{__version__}"
)


@asynccontextmanager
async def open_websocket(
    host: str,
    port: int,
    resource: str,
    *,
    use_ssl: bool | ssl.SSLContext,
    subprotocols: Sequence[str] | None = None,
    extra_headers: HeaderPairs | None = None,
    message_queue_size: float = MESSAGE_QUEUE_SIZE,
    max_message_size: float = MAX_MESSAGE_SIZE,
    receive_buffer_size: int | None = RECEIVE_BYTES,
    connect_timeout: float = CONN_TIMEOUT,
    disconnect_timeout: float = CONN_TIMEOUT,
    **options: Unpack[ConnectionOptions],
) -> AsyncIterator[WebSocketConnection]:
    """Open a WebSocket client connection for the length of an ``async with``.

    Connects to ``host``:``port`` (over TLS when ``use_ssl`` is ``True`` or an
    :class:`ssl.SSLContext`), requests ``resource`` and yields the open
    :class:`WebSocketConnection`. Leaving the block closes the connection.

    Connecting (TCP, TLS and handshake) is bounded by ``connect_timeout``
    (:exc:`ConnectionTimeout`), closing by ``disconnect_timeout``
    (:exc:`DisconnectionTimeout`). An exception raised in the block
    propagates as itself, never wrapped in an exception group.
    """
    settings = Settings(
        message_queue_size=message_queue_size,
        max_message_size=max_message_size,
        receive_buffer_size=receive_buffer_size,
        disconnect_timeout=disconnect_timeout,
        **options,
    )

    async def connect(nursery: trio.Nursery) -> WebSocketConnection:
        return await _connect(
            nursery, host, port, resource, use_ssl, subprotocols, extra_headers,
            settings,
        )  # fmt: skip

    async with _connection_scope(connect, connect_timeout) as connection:
        yield connection


@asynccontextmanager
async def open_websocket_url(
    url: object,
    ssl_context: ssl.SSLContext | None = None,
    *,
    subprotocols: Sequence[str] | None = None,
    extra_headers: HeaderPairs | None = None,
    message_queue_size: float = MESSAGE_QUEUE_SIZE,
    max_message_size: float = MAX_MESSAGE_SIZE,
    connect_timeout: float = CONN_TIMEOUT,
    disconnect_timeout: float = CONN_TIMEOUT,
    receive_buffer_size: int | None = RECEIVE_BYTES,
    **options: Unpack[ConnectionOptions],
) -> AsyncIterator[WebSocketConnection]:
    """Like :func:`open_websocket`, from a ``ws://`` or ``wss://`` URL.

    ``url`` may be any object whose ``str()`` is the URL. ``wss://`` without
    ``ssl_context`` uses the default TLS context; a context given with a
    ``ws://`` URL turns TLS on.
    """
    host, port, resource, use_ssl = _url_target(url, ssl_context)
    async with open_websocket(
        host,
        port,
        resource,
        use_ssl=use_ssl,
        subprotocols=subprotocols,
        extra_headers=extra_headers,
        message_queue_size=message_queue_size,
        max_message_size=max_message_size,
        receive_buffer_size=receive_buffer_size,
        connect_timeout=connect_timeout,
        disconnect_timeout=disconnect_timeout,
        **options,
    ) as connection:
        yield connection


async def connect_websocket(
    nursery: trio.Nursery,
    host: str,
    port: int,
    resource: str,
    *,
    use_ssl: bool | ssl.SSLContext,
    subprotocols: Sequence[str] | None = None,
    extra_headers: HeaderPairs | None = None,
    message_queue_size: float = MESSAGE_QUEUE_SIZE,
    max_message_size: float = MAX_MESSAGE_SIZE,
    receive_buffer_size: int | None = RECEIVE_BYTES,
    **options: Unpack[ConnectionOptions],
) -> WebSocketConnection:
    """Connect and return an open connection whose reader runs in ``nursery``.

    There is no connect timeout (wrap the call in :func:`trio.move_on_after`
    to add one); handshake errors are raised here, to the caller. The caller
    closes the connection.
    """
    settings = Settings(
        message_queue_size=message_queue_size,
        max_message_size=max_message_size,
        receive_buffer_size=receive_buffer_size,
        **options,
    )
    return await _connect(
        nursery, host, port, resource, use_ssl, subprotocols, extra_headers, settings
    )


async def connect_websocket_url(
    nursery: trio.Nursery,
    url: object,
    ssl_context: ssl.SSLContext | None = None,
    *,
    subprotocols: Sequence[str] | None = None,
    extra_headers: HeaderPairs | None = None,
    message_queue_size: float = MESSAGE_QUEUE_SIZE,
    max_message_size: float = MAX_MESSAGE_SIZE,
    receive_buffer_size: int | None = RECEIVE_BYTES,
    **options: Unpack[ConnectionOptions],
) -> WebSocketConnection:
    """Like :func:`connect_websocket`, from a ``ws://`` or ``wss://`` URL."""
    host, port, resource, use_ssl = _url_target(url, ssl_context)
    return await connect_websocket(
        nursery,
        host,
        port,
        resource,
        use_ssl=use_ssl,
        subprotocols=subprotocols,
        extra_headers=extra_headers,
        message_queue_size=message_queue_size,
        max_message_size=max_message_size,
        receive_buffer_size=receive_buffer_size,
        **options,
    )


async def wrap_client_stream(
    nursery: trio.Nursery,
    stream: trio.abc.Stream,
    host: str,
    resource: str,
    *,
    subprotocols: Sequence[str] | None = None,
    extra_headers: HeaderPairs | None = None,
    message_queue_size: float = MESSAGE_QUEUE_SIZE,
    max_message_size: float = MAX_MESSAGE_SIZE,
    receive_buffer_size: int | None = RECEIVE_BYTES,
    **options: Unpack[ConnectionOptions],
) -> WebSocketConnection:
    """Run the client side of the handshake over any Trio stream.

    ``host`` is sent as the ``Host`` header and ``resource`` as the request
    target. The connection's reader runs in ``nursery``.
    """
    settings = Settings(
        message_queue_size=message_queue_size,
        max_message_size=max_message_size,
        receive_buffer_size=receive_buffer_size,
        **options,
    )
    return await _handshake(
        nursery, stream, host, resource, subprotocols, extra_headers, settings
    )


def _url_target(
    url: object, ssl_context: ssl.SSLContext | None
) -> tuple[str, int, str, bool | ssl.SSLContext]:
    parts = parse_url(url)
    use_ssl: bool | ssl.SSLContext = ssl_context or parts.secure
    return parts.host, parts.port, parts.resource, use_ssl


@asynccontextmanager
async def _connection_scope(
    connect: Callable[[trio.Nursery], Awaitable[WebSocketConnection]],
    connect_timeout: float,
) -> AsyncIterator[WebSocketConnection]:
    """Own a connection and its background tasks for an ``async with``."""
    async with background_nursery() as nursery:
        with trio.move_on_after(connect_timeout) as connecting:
            connection = await connect(nursery)
        if connecting.cancelled_caught:
            raise ConnectionTimeout(f"connecting took over {connect_timeout} s")
        try:
            yield connection
        finally:
            await connection.aclose()
    if connection._close_timed_out:
        raise DisconnectionTimeout("the closing handshake did not complete in time")


async def _connect(
    nursery: trio.Nursery,
    host: str,
    port: int,
    resource: str,
    use_ssl: bool | ssl.SSLContext,
    subprotocols: Sequence[str] | None,
    extra_headers: HeaderPairs | None,
    settings: Settings,
) -> WebSocketConnection:
    stream = await _open_stream(host, port, use_ssl)
    return await _handshake(
        nursery,
        stream,
        host_header(host, port, bool(use_ssl)),
        resource,
        subprotocols,
        extra_headers,
        settings,
    )


async def _open_stream(
    host: str, port: int, use_ssl: bool | ssl.SSLContext
) -> trio.abc.Stream:
    if not use_ssl:
        return await trio.open_tcp_stream(host, port)
    context = use_ssl if isinstance(use_ssl, ssl.SSLContext) else None
    stream = await trio.open_ssl_over_tcp_stream(
        host, port, ssl_context=context, https_compatible=True
    )
    try:
        await stream.do_handshake()
    except trio.BrokenResourceError as exc:
        await trio.aclose_forcefully(stream)
        raise HandshakeError(
            f"TLS handshake with {host} failed: {exc.__cause__}"
        ) from (exc.__cause__ or exc)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream


async def _handshake(
    nursery: trio.Nursery,
    stream: trio.abc.Stream,
    host: str,
    resource: str,
    subprotocols: Sequence[str] | None,
    extra_headers: HeaderPairs | None,
    settings: Settings,
) -> WebSocketConnection:
    """Send the upgrade request over ``stream`` and wait for the response.

    On any failure, including cancellation, the stream is closed.
    """
    try:
        protocol = ClientProtocol(
            WebSocketURI(False, host, 0, resource, ""),
            subprotocols=[Subprotocol(name) for name in subprotocols]
            if subprotocols
            else None,
            extensions=settings.client_extensions(),
            logger=ENGINE_LOGGER,
            max_size=settings.engine_max_size,
        )
        request = protocol.connect()
        del request.headers["Host"]
        request.headers["Host"] = host
        request.headers["User-Agent"] = USER_AGENT
        add_extra_headers(request.headers, extra_headers)
        protocol.send_request(request)
        await send_pending(stream, protocol)
        response, *early_frames = await receive_handshake(
            stream, protocol, settings.receive_buffer_size
        )
        _check_response(protocol)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    assert isinstance(response, Response)
    connection = WebSocketConnection(
        stream,
        protocol,
        settings,
        path=resource,
        handshake_headers=header_pairs(response.headers),
    )
    connection._start(nursery, early_frames)
    return connection


def _check_response(protocol: ClientProtocol) -> None:
    failure = protocol.handshake_exc
    if isinstance(failure, InvalidStatus):
        response = failure.response
        raise ConnectionRejected(
            response.status_code, header_pairs(response.headers), bytes(response.body)
        )
    if failure is not None:
        raise HandshakeError(f"invalid handshake response: {failure}") from failure
