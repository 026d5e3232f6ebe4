"""WebSocket client and server for Trio (RFC 6455).

A drop-in replacement for the established ``trio_websocket`` API, built on
the sans-I/O protocol engine of the ``websockets`` package. Start with
:func:`open_websocket_url` for a client and :func:`serve_websocket` for a
server.
"""

from importlib import import_module
from typing import TYPE_CHECKING

from ._admission import Admission
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
from ._request import WebSocketRequest, wrap_server_stream
from ._server import WebSocketServer, serve_websocket
from ._settings import (
    CONN_TIMEOUT,
    MAX_MESSAGE_SIZE,
    MESSAGE_QUEUE_SIZE,
    RECEIVE_BYTES,
    ConnectionOptions,
)
from ._stats import ConnectionStats
from ._url import Endpoint
from ._version import __version__

# Names whose modules only some programs use are imported on first access
# (PEP 562), so that ``import trio_websocket`` costs little beyond importing
# trio and websockets. Type checkers see ordinary imports.
_LAZY = {
    "BroadcastResult": "._broadcast",
    "broadcast": "._broadcast",
    "open_websocket_pair": "._pair",
    "FanOut": "._pubsub",
    "Gap": "._pubsub",
    "PubSub": "._pubsub",
    "Subscription": "._pubsub",
    "SubscriptionOverflow": "._pubsub",
    "RedisError": "._pubsub_redis",
    "RedisPubSub": "._pubsub_redis",
    "open_redis_pubsub": "._pubsub_redis",
    "ReconnectingWebSocket": "._reconnect",
    "reconnecting_websocket_url": "._reconnect",
    "Router": "._routing",
    "static_response": "._routing",
    "WebSocketStream": "._stream",
    "run_workers": "._workers",
    "worker_index": "._workers",
}

if TYPE_CHECKING:
    from ._broadcast import BroadcastResult, broadcast
    from ._pair import open_websocket_pair
    from ._pubsub import FanOut, Gap, PubSub, Subscription, SubscriptionOverflow
    from ._pubsub_redis import RedisError, RedisPubSub, open_redis_pubsub
    from ._reconnect import ReconnectingWebSocket, reconnecting_websocket_url
    from ._routing import Router, static_response
    from ._stream import WebSocketStream
    from ._workers import run_workers, worker_index
else:
    # Hidden from type checkers: a module-level __getattr__ would make them
    # accept any misspelt name imported from this package.

    def __getattr__(name: str) -> object:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(import_module(module, __name__), name)
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(globals()) | set(__all__))


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
    "FanOut",
    "Gap",
    "HandshakeError",
    "ProxyError",
    "PubSub",
    "ReconnectingWebSocket",
    "RedirectError",
    "RedisError",
    "RedisPubSub",
    "Router",
    "Subscription",
    "SubscriptionOverflow",
    "WebSocketConnection",
    "WebSocketRequest",
    "WebSocketServer",
    "WebSocketStream",
    "__version__",
    "broadcast",
    "connect_websocket",
    "connect_websocket_url",
    "open_redis_pubsub",
    "open_websocket",
    "open_websocket_pair",
    "open_websocket_url",
    "reconnecting_websocket_url",
    "run_workers",
    "serve_websocket",
    "static_response",
    "worker_index",
    "wrap_client_stream",
    "wrap_server_stream",
]
