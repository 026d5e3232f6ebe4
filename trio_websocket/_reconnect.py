"""Staying connected: reconnect with exponential backoff and jitter.

Market-data feeds, chat clients and other long-lived consumers want one
thing from a connection: that it is there. :func:`reconnecting_websocket_url`
hands out a fresh open connection each time the previous one is lost::

    async with reconnecting_websocket_url("wss://feed.example/v1") as client:
        async for connection in client:
            await connection.send_message('{"subscribe": "ticks"}')
            try:
                async for message in connection:
                    handle(message)
            except ConnectionClosed:
                pass  # lost: the loop waits a little, then reconnects

The policy, exactly:

- The first connection is attempted at once. A connection attempt that
  fails with a *transient* error (:exc:`OSError`, a timeout, a TLS or
  handshake failure, an HTTP 408, 429 or 5xx answer, a proxy failure that is
  not an HTTP 4xx) is retried after a delay; any other error (a 4xx answer
  such as 401 or 404, a redirect error, an untrusted certificate, a bad
  option) is raised at once.
- After ``max_attempts`` consecutive failed attempts (default: no limit),
  the last error is raised. A successful handshake resets that count.
- When a connection ends, the next step depends on its close code: 1000
  (normal), 1001 (going away) and 1005 (no code) end the loop, unless
  ``reconnect_after_normal_close=True``; any other code (1006 for a dropped
  connection, 1011, 1012 for a restarting service, ...) reconnects.
  Closing the connection yourself with the default code 1000, or leaving the
  loop body with the connection still open (it is then closed with 1000),
  ends the loop too; ``break`` works as well.
- Delays grow from ``initial_delay`` by ``factor`` per failure up to
  ``max_delay``. Each is shortened by a random fraction of up to ``jitter``
  (0.5: between half and all of it), so that many clients dropped at once
  do not come back at once. A connection that stayed open for
  ``healthy_after`` seconds resets the delay to ``initial_delay``; one that
  dropped sooner makes it grow, so a server that accepts and drops at once is
  not hammered.
- Leaving the ``async with`` block (normally, by an exception or by
  cancellation) closes the current connection and stops everything.
"""

from __future__ import annotations

import logging
import math
import random
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import trio

from ._client import ClientConfig, Connector, url_connector
from ._concurrency import background_nursery
from ._connection import WebSocketConnection
from ._errors import (
    ConnectionRejected,
    ConnectionTimeout,
    HandshakeError,
    ProxyError,
    RedirectError,
)
from ._handshake import HeaderPairs
from ._proxy import ProxySetting
from ._settings import CONN_TIMEOUT, ConnectionOptions

if TYPE_CHECKING:
    from typing_extensions import Unpack

_logger = logging.getLogger("trio-websocket")

#: Close codes after which the loop ends (see ``reconnect_after_normal_close``).
NORMAL_CLOSE_CODES = frozenset({1000, 1001, 1005})


class UrlConnectOptions(ConnectionOptions, total=False):
    """The keyword options of :func:`open_websocket_url`, for each attempt."""

    subprotocols: Sequence[str] | None
    extra_headers: HeaderPairs | None
    message_queue_size: float
    max_message_size: float
    receive_buffer_size: int | None
    disconnect_timeout: float
    proxy: ProxySetting
    max_redirects: int
    origin: str | None
    user_agent: str | None


@dataclass(frozen=True)
class Backoff:
    """When to try again: the timing half of the reconnection policy."""

    initial_delay: float = 1.0
    max_delay: float = 60.0
    factor: float = 2.0
    jitter: float = 0.5
    healthy_after: float = 10.0
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.initial_delay <= self.max_delay:
            raise ValueError("need 0 < initial_delay <= max_delay")
        if self.factor < 1 or not 0 <= self.jitter <= 1:
            raise ValueError("need factor >= 1 and 0 <= jitter <= 1")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1 (or None)")

    def grow(self, delay: float | None) -> float:
        """The delay after ``delay`` (``None``: after none, the first)."""
        if delay is None:
            return self.initial_delay
        return min(self.max_delay, delay * self.factor)

    def jittered(self, delay: float) -> float:
        """``delay`` shortened by a random fraction of up to ``jitter``."""
        return delay * (1 - self.jitter * random.random())


def is_transient(error: Exception) -> bool:
    """Whether a failed attempt is worth repeating (see the module docs)."""
    if isinstance(error, (ConnectionRejected, ProxyError)):
        status = error.status_code
        if status is not None:
            return status >= 500 or status in (408, 429)
    if isinstance(error, RedirectError):
        return False
    if isinstance(error, HandshakeError):
        return not isinstance(error.__cause__, ssl.SSLCertVerificationError)
    return isinstance(error, OSError)


class ReconnectingWebSocket:
    """The connections of a reconnecting client, one after the other.

    Iterate over it with ``async for``; each step waits as the policy says,
    connects, and gives the new open :class:`WebSocketConnection`.
    """

    def __init__(
        self,
        connect: Connector,
        nursery: trio.Nursery,
        backoff: Backoff,
        *,
        connect_timeout: float = CONN_TIMEOUT,
        reconnect_after_normal_close: bool = False,
        name: str = "the server",
    ) -> None:
        self._connect = connect
        self._nursery = nursery
        self._backoff = backoff
        self._connect_timeout = connect_timeout
        self._reconnect_after_normal_close = reconnect_after_normal_close
        self._name = name
        self._connection: WebSocketConnection | None = None
        self._opened_at = -math.inf
        self._delay: float | None = None  # None: connect without waiting
        self._failures = 0
        self._finished = False

    @property
    def connection(self) -> WebSocketConnection | None:
        """The connection handed out last, if it was not retired yet."""
        return self._connection

    @property
    def failures(self) -> int:
        """How many connection attempts failed in a row so far."""
        return self._failures

    def __aiter__(self) -> ReconnectingWebSocket:
        return self

    async def __anext__(self) -> WebSocketConnection:
        if self._connection is not None:
            await self._retire(self._connection)
        if self._finished:
            raise StopAsyncIteration
        while True:
            if self._delay is not None:
                await trio.sleep(self._backoff.jittered(self._delay))
            try:
                connection = await self._attempt()
            except Exception as error:
                self._note_failure(error)
                continue
            self._failures = 0
            self._connection = connection
            self._opened_at = trio.current_time()
            return connection

    async def _attempt(self) -> WebSocketConnection:
        with trio.move_on_after(self._connect_timeout):
            return await self._connect(self._nursery)
        raise ConnectionTimeout(f"connecting took over {self._connect_timeout} s")

    def _note_failure(self, error: Exception) -> None:
        """Count a failed attempt; raise it unless it is worth another."""
        self._failures += 1
        limit = self._backoff.max_attempts
        if not is_transient(error) or (limit is not None and self._failures >= limit):
            self._finished = True
            raise error
        self._delay = self._backoff.grow(self._delay)
        _logger.info(
            "connecting to %s failed (%s: %s); attempt %d, next in up to %.3g s",
            self._name,
            type(error).__name__,
            error,
            self._failures,
            self._delay,
        )

    async def _retire(self, connection: WebSocketConnection) -> None:
        """Close the last connection if still open and decide what comes next."""
        self._connection = None
        if connection.closed is None:
            await connection.aclose()
        reason = connection.closed
        code = reason.code if reason is not None else 1006
        if code in NORMAL_CLOSE_CODES and not self._reconnect_after_normal_close:
            self._finished = True
            return
        healthy = trio.current_time() - self._opened_at >= self._backoff.healthy_after
        self._delay = self._backoff.grow(None if healthy else self._delay)
        _logger.info(
            "connection to %s closed (%s); reconnecting in up to %.3g s",
            self._name,
            reason,
            self._delay,
        )

    async def aclose(self) -> None:
        """Close the current connection, if any; iteration ends."""
        self._finished = True
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.aclose()


@asynccontextmanager
async def reconnecting(
    connect: Connector,
    backoff: Backoff,
    *,
    connect_timeout: float = CONN_TIMEOUT,
    reconnect_after_normal_close: bool = False,
    name: str = "the server",
) -> AsyncIterator[ReconnectingWebSocket]:
    """Reconnect with any ``connect`` function (see :class:`Backoff`)."""
    async with background_nursery() as nursery:
        client = ReconnectingWebSocket(
            connect,
            nursery,
            backoff,
            connect_timeout=connect_timeout,
            reconnect_after_normal_close=reconnect_after_normal_close,
            name=name,
        )
        try:
            yield client
        finally:
            await client.aclose()


@asynccontextmanager
async def reconnecting_websocket_url(
    url: object,
    ssl_context: ssl.SSLContext | None = None,
    *,
    initial_delay: float = 1.0,
    max_delay: float = 60.0,
    factor: float = 2.0,
    jitter: float = 0.5,
    max_attempts: int | None = None,
    healthy_after: float = 10.0,
    reconnect_after_normal_close: bool = False,
    connect_timeout: float = CONN_TIMEOUT,
    **options: Unpack[UrlConnectOptions],
) -> AsyncIterator[ReconnectingWebSocket]:
    """Keep a client connected to ``url``; see the policy above.

    ``ssl_context`` and ``options`` are those of :func:`open_websocket_url`
    (``disconnect_timeout`` included) and apply to every attempt;
    ``connect_timeout`` bounds each attempt. The other parameters set the
    :class:`Backoff` policy. Options are checked before the first attempt.
    """
    config = ClientConfig.build("reconnecting_websocket_url", **options)
    connect = url_connector(url, ssl_context, config)
    backoff = Backoff(
        initial_delay, max_delay, factor, jitter, healthy_after, max_attempts
    )
    async with reconnecting(
        connect,
        backoff,
        connect_timeout=connect_timeout,
        reconnect_after_normal_close=reconnect_after_normal_close,
        name=_without_user_info(str(url)),
    ) as client:
        yield client


def _without_user_info(url: str) -> str:
    """The URL as logs may show it: no password."""
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
