"""WebSocket client and server for Trio (RFC 6455).

A drop-in replacement for the established ``trio_websocket`` API, built on
the sans-I/O protocol engine of the ``websockets`` package. Start with
:func:`open_websocket_url` for a client and :func:`serve_websocket` for a
server.
"""

from ._admission import Admission
from ._broadcast import BroadcastResult, broadcast
from ._client import (
    USER_AGENT,
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
    ProxyError,
    RedirectError,
)
from ._pair import open_websocket_pair
from ._reconnect import ReconnectingWebSocket, reconnecting_websocket_url
from ._request import WebSocketRequest, wrap_server_stream
from ._routing import Router, static_response
from ._server import WebSocketServer, serve_websocket
from ._settings import (
    CONN_TIMEOUT,
    MAX_MESSAGE_SIZE,
    MESSAGE_QUEUE_SIZE,
    RECEIVE_BYTES,
    ConnectionOptions,
)
from ._stats import ConnectionStats
from ._stream import WebSocketStream
from ._url import Endpoint
from ._version import __version__

__all__ = [
    "CONN_TIMEOUT",
    "MAX_MESSAGE_SIZE",
    "MESSAGE_QUEUE_SIZE",
    "RECEIVE_BYTES",
    "USER_AGENT",
    "Admission",
    "BroadcastResult",
    "CloseReason",
    "ConnectionClosed",
    "ConnectionOptions",
    "ConnectionRejected",
    "ConnectionStats",
    "ConnectionTimeout",
    "DisconnectionTimeout",
    "Endpoint",
    "HandshakeError",
    "ProxyError",
    "ReconnectingWebSocket",
    "RedirectError",
    "Router",
    "WebSocketConnection",
    "WebSocketRequest",
    "WebSocketServer",
    "WebSocketStream",
    "__version__",
    "broadcast",
    "connect_websocket",
    "connect_websocket_url",
    "open_websocket",
    "open_websocket_pair",
    "open_websocket_url",
    "reconnecting_websocket_url",
    "serve_websocket",
    "static_response",
    "wrap_client_stream",
    "wrap_server_stream",
]
