"""The module path of trio-websocket 0.12, kept for code that imports from it.

Up to 0.12 the whole library lived in ``trio_websocket._impl``, and published
projects import from there: py-libp2p takes :func:`wrap_server_stream`, piker
the exceptions, others :func:`_url_to_host` and :data:`_TRIO_EXC_GROUP_TYPE`.
This module only re-exports names; every one of them is implemented
elsewhere. New code should import from :mod:`trio_websocket`.
"""

from __future__ import annotations

import logging
import ssl

from ._client import (
    connect_websocket,
    connect_websocket_url,
    open_websocket,
    open_websocket_url,
    wrap_client_stream,
)
from ._connection import WebSocketConnection
from ._errors import (
    CloseReason,
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    DisconnectionTimeout,
    HandshakeError,
)
from ._request import WebSocketRequest, wrap_server_stream
from ._server import WebSocketServer, serve_websocket
from ._settings import CONN_TIMEOUT, MAX_MESSAGE_SIZE, MESSAGE_QUEUE_SIZE, RECEIVE_BYTES
from ._url import Endpoint, parse_url

#: The exception group type Trio raises (``BaseExceptionGroup`` on every Trio
#: this library supports).
_TRIO_EXC_GROUP_TYPE = BaseExceptionGroup

#: The library's logger, under the name it has always had.
logger = logging.getLogger("trio-websocket")


def _url_to_host(
    url: object, ssl_context: ssl.SSLContext | None
) -> tuple[str, int, str, ssl.SSLContext | bool]:
    """Split a WebSocket URL into ``(host, port, resource, ssl_context)``.

    The last item is ``ssl_context`` itself when one is given, else whether
    the URL asks for TLS (``wss://``). A scheme other than ``ws`` or ``wss``
    is a :exc:`ValueError`.
    """
    parts = parse_url(url)
    use_ssl = ssl_context if ssl_context is not None else parts.secure
    return parts.host, parts.port, parts.resource, use_ssl


__all__ = [
    "CONN_TIMEOUT",
    "MAX_MESSAGE_SIZE",
    "MESSAGE_QUEUE_SIZE",
    "RECEIVE_BYTES",
    "_TRIO_EXC_GROUP_TYPE",
    "CloseReason",
    "ConnectionClosed",
    "ConnectionRejected",
    "ConnectionTimeout",
    "DisconnectionTimeout",
    "Endpoint",
    "HandshakeError",
    "WebSocketConnection",
    "WebSocketRequest",
    "WebSocketServer",
    "_url_to_host",
    "connect_websocket",
    "connect_websocket_url",
    "logger",
    "open_websocket",
    "open_websocket_url",
    "serve_websocket",
    "wrap_client_stream",
    "wrap_server_stream",
]
