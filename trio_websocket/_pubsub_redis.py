"""A :class:`~trio_websocket.PubSub` whose channels are Redis channels.

The Redis protocol is spoken by `coredis <https://coredis.readthedocs.io>`_
(installed by the ``trio-websocket[redis]`` extra), which runs on Trio
through AnyIO. Its own retries are switched off: a retried ``PUBLISH`` could
be delivered twice, and a subscription that reconnects silently hides the
messages lost meanwhile. Instead this module owns the reconnect loop, so
every lost connection becomes a :class:`~trio_websocket.Gap` that the
application sees.

Messages carry a one-byte tag (``t`` text, ``b`` binary) before the payload,
so ``str`` and ``bytes`` arrive as they were sent.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import trio

from ._concurrency import background_nursery
from ._iterators import BytesLike
from ._pubsub import ChannelMessage, Gap, PubSub, Subscription, _check_message
from ._redis_subscriber import Subscriber, subscribed_connection

if TYPE_CHECKING:
    import coredis

DEFAULT_PORT = 6379
_INSTALL_HINT = "the Redis backend needs coredis: pip install 'trio-websocket[redis]'"


class RedisError(Exception):
    """Redis refused a command (for example a wrong password)."""


def _coredis() -> Any:
    """The coredis module, or an :exc:`ImportError` that says how to get it."""
    try:
        import coredis
        import coredis.exceptions
        import coredis.retry
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    return coredis


def _lost_connection_types() -> tuple[type[BaseException], ...]:
    """What a dropped, refused, stalled or torn-down connection raises."""
    import anyio  # coredis's own dependency

    errors = _coredis().exceptions
    return (
        OSError,
        TimeoutError,
        trio.TooSlowError,
        errors.ConnectionError,
        anyio.ClosedResourceError,
        anyio.BrokenResourceError,
    )


def _encode(message: ChannelMessage) -> bytes:
    if isinstance(message, str):
        return b"t" + message.encode()
    return b"b" + message


def _decode(data: bytes) -> ChannelMessage:
    if data[:1] == b"t":
        return data[1:].decode(errors="replace")
    if data[:1] == b"b":
        return data[1:]
    return data  # published by someone else: binary, as is


# Publishes sent in one pipeline at most; bounds one batch's memory and delay.
_MAX_BATCH = 256


class _Outgoing:
    """One message waiting in the outbox, and what became of it.

    ``done`` is set once Redis answered (or the connection failed), for a
    publisher that waits; :meth:`RedisPubSub.publish_nowait` has none.
    """

    __slots__ = ("channel", "count", "data", "done", "refusal")

    def __init__(self, channel: str, data: bytes, done: trio.Event | None) -> None:
        self.channel = channel
        self.data = data
        self.count = 0
        self.refusal: str | None = None
        self.done = done


class RedisPubSub(PubSub):
    """Channels shared by every process connected to one Redis server.

    Made by :func:`open_redis_pubsub`. Same interface and guarantees as
    :class:`PubSub`; in addition:

    * When the connection to Redis drops, every subscription gets a
      :class:`Gap` with ``disconnected=True`` (messages published meanwhile
      are lost), and the hub reconnects and subscribes again by itself.
      A subscription made while Redis is unreachable starts with such a gap.
    * :meth:`publish` returns how many subscribers Redis reached, in all
      processes. While Redis is unreachable it returns 0 and the message is
      lost; it is never sent twice.
    * Publishes wait in one outbox and are sent in pipelines, many per
      round trip, in the order they were made. :meth:`publish_nowait`
      queues a message without waiting for Redis at all, so one task can
      publish faster than one round trip per message; at most
      ``max_outbox`` messages wait.
    """

    def __init__(
        self,
        client: coredis.Redis[bytes],
        address: str,
        *,
        connect_timeout: float,
        max_reconnect_delay: float,
        max_outbox: int,
    ) -> None:
        super().__init__()
        self._max_outbox = max_outbox
        self._client = client
        #: ``host:port`` of the Redis server, for messages and logs.
        self.address = address
        self._connect_timeout = connect_timeout
        self._max_reconnect_delay = max_reconnect_delay
        self._lost = _lost_connection_types()
        self._subscriber: Subscriber | None = None
        self._connected = trio.Event()
        self._outbox: list[_Outgoing] = []
        self._outbox_ready = trio.Event()
        self._outbox_sent = trio.Event()  # set while the outbox is empty
        self._sending = trio.CancelScope()
        self._sender_done = trio.Event()
        self._opened = False
        self._closing = False
        self._delivering = trio.CancelScope()
        self._stopped = trio.Event()
        #: Times the subscribing connection was lost.
        self.disconnects = 0

    @property
    def connected(self) -> bool:
        """Whether the subscribing connection is up and has subscribed."""
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        """Return once connected and subscribed again to every channel."""
        await self._connected.wait()

    async def publish(self, channel: str, message: str | BytesLike) -> int:
        done = trio.Event()
        outgoing = _Outgoing(channel, _encode(_check_message(message)), done)
        self._queue(outgoing)
        await done.wait()
        if outgoing.refusal is not None:
            raise RedisError(outgoing.refusal)
        return outgoing.count

    def publish_nowait(self, channel: str, message: str | BytesLike) -> None:
        """Queue ``message`` for ``channel`` and return at once.

        It goes out in order with every other publish of this hub, in the
        next pipeline; what becomes of it is not reported (at most once: if
        Redis is unreachable it is lost, and subscribers see a
        :class:`Gap`). Raises :exc:`trio.WouldBlock` when ``max_outbox``
        messages already wait; ``await`` :meth:`publish` then, which waits
        its turn.
        """
        if len(self._outbox) >= self._max_outbox:
            raise trio.WouldBlock
        self._queue(_Outgoing(channel, _encode(_check_message(message)), None))

    def _queue(self, outgoing: _Outgoing) -> None:
        self._outbox.append(outgoing)
        self._outbox_ready.set()

    async def _send_outbox(self) -> None:
        """Send queued publishes in pipelines: one round trip per batch.

        One task sends every batch, in order, so messages keep the order in
        which they were published.
        """
        try:
            with self._sending:
                while True:
                    if not self._outbox:
                        self._outbox_sent.set()
                        self._outbox_ready = trio.Event()
                        await self._outbox_ready.wait()
                        self._outbox_sent = trio.Event()
                    batch = self._outbox[:_MAX_BATCH]
                    del self._outbox[:_MAX_BATCH]
                    await self._send_batch(batch)
        finally:
            self._sender_done.set()

    async def _send_batch(self, batch: list[_Outgoing]) -> None:
        try:
            async with self._client.pipeline(transaction=False) as pipeline:
                requests = [pipeline.publish(item.channel, item.data) for item in batch]
            for item, request in zip(batch, requests, strict=True):
                item.count = await request
        except self._lost:
            pass  # lost (count 0): never sent twice
        except _coredis().exceptions.RedisError as exc:
            for item in batch:
                item.refusal = str(exc)
        finally:
            for item in batch:
                if item.done is not None:
                    item.done.set()

    async def _joined(self, subscription: Subscription, first: bool) -> None:
        subscriber = self._subscriber
        if subscriber is None:
            # Subscribed on reconnection; what is published until then is lost.
            self._tell_gap(subscription, Gap(disconnected=True))
        elif first:
            try:
                await subscriber.subscribe(subscription.channel)
            except self._lost:
                # The reconnect loop subscribes again and reports the gap to
                # every subscription; this one must not miss it.
                self._tell_gap(subscription, Gap(disconnected=True))
        await trio.lowlevel.checkpoint()

    def _left(self, channel: str) -> None:
        if self._subscriber is None or self._closing:
            return
        # If this fails, the reconnection subscribes only to channels in use.
        with contextlib.suppress(*self._lost):
            self._subscriber.unsubscribe(channel)

    async def _run(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Hold the client open while the hub is, and keep subscribed.

        Failing to connect the first time ends the task with the reason, so
        that opening the hub fails; later failures are retried with backoff.
        The client lives here rather than around the hub's ``async with``
        body so that the body's exceptions do not pass through the client's
        task group (which would wrap them in an exception group).
        """
        try:
            async with self._client:
                await self._stay_subscribed(task_status)
        except BaseExceptionGroup as group:
            raise _without_cleanup_noise(group) from None
        finally:
            self._stopped.set()

    async def _stop(self) -> None:
        """Send what is queued, then unsubscribe and disconnect.

        The outbox gets ``connect_timeout`` seconds to empty; what is left
        then is lost (at most once). The sender stops before the client
        closes, and the client's context is left normally: cancelling it
        instead makes coredis fail in its own clean-up.
        """
        self._closing = True
        with trio.move_on_after(self._connect_timeout, shield=True):
            await self._outbox_sent.wait()
        self._sending.cancel()
        self._delivering.cancel()
        with trio.move_on_after(self._connect_timeout, shield=True):
            await self._sender_done.wait()
            await self._stopped.wait()

    async def _stay_subscribed(self, task_status: trio.TaskStatus[None]) -> None:
        delay = 0.0
        while not self._closing:
            try:
                await self._subscribe_and_deliver(task_status)
            except* self._lost as group:
                if not self._opened:
                    raise _unreachable(self.address, group) from None
            except* _coredis().exceptions.RedisError as group:
                if not self._opened:  # later, a refusal is retried like a drop
                    raise RedisError(str(_first(group))) from None
            if self._closing:
                return
            self._disconnected()
            delay = min(max(2 * delay, 0.05), self._max_reconnect_delay)
            await trio.sleep(delay)

    async def _subscribe_and_deliver(self, task_status: trio.TaskStatus[None]) -> None:
        """One connection's life: subscribe to every channel, then deliver."""
        async with (
            subscribed_connection(self._client, self._connect_timeout) as subscriber,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(subscriber.deliver, self._on_message)
            nursery.start_soon(subscriber.keep_alive)
            subscribed: set[str] = set()
            while missing := set(self.channels) - subscribed:  # some join meanwhile
                await subscriber.subscribe(*missing)
                subscribed |= missing
            self._delivering = nursery.cancel_scope
            if self._closing:
                nursery.cancel_scope.cancel()
            self._subscriber = subscriber
            try:
                self._connected.set()
                if not self._opened:
                    self._opened = True
                    task_status.started()
                await trio.sleep_forever()  # the nursery's tasks deliver
            finally:
                self._subscriber = None

    def _on_message(self, channel: bytes, data: bytes) -> bool:
        _, roomy = self._deliver(channel.decode(errors="replace"), _decode(data))
        return roomy

    def _disconnected(self) -> None:
        self.disconnects += 1
        if self._connected.is_set():  # waiters hold the unset one
            self._connected = trio.Event()
        self._gap_everywhere(Gap(disconnected=True))


def _without_cleanup_noise(
    group: BaseExceptionGroup[BaseException],
) -> BaseExceptionGroup[BaseException]:
    """``group`` without coredis's clean-up failures, if it was cancelled.

    Cancelled from outside (Ctrl-C, a nursery's end), coredis tries to
    unsubscribe over a connection it is tearing down and fails with errors
    that would hide the cancellation; only those are dropped.
    """
    if group.subgroup(trio.Cancelled) is None:
        return group
    _, rest = group.split(_lost_connection_types())
    return rest if rest is not None else group


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first leaf exception of a (nested) exception group."""
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


def _unreachable(address: str, group: BaseExceptionGroup[BaseException]) -> OSError:
    """The error that opening the hub raises when Redis cannot be reached.

    Its message names the server and, where there is one, the operating
    system's reason (coredis words it as its own error, caused by that one).
    """
    first = _first(group)
    cause: BaseException | None = first
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else first
    error = ConnectionError(f"cannot connect to Redis at {address}: {reason}")
    error.strerror = str(reason)  # the reason alone, as for the OS's errors
    error.__cause__ = first
    return error


def parse_redis_url(url: str) -> tuple[str, int, str | None, str | None, bool]:
    """Split ``redis://[[user]:password@]host[:port]`` (or ``rediss://``).

    Returns host, port, user name, password and whether TLS is asked for.
    A database number in the path is accepted and ignored: Redis channels
    are shared by every database.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"not a redis:// or rediss:// URL: {url!r}")
    if not parts.hostname:
        raise ValueError(f"no host in Redis URL {url!r}")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    port = parts.port or DEFAULT_PORT
    return parts.hostname, port, username, password, parts.scheme == "rediss"


@asynccontextmanager
async def open_redis_pubsub(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    username: str | None = None,
    password: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    connect_timeout: float = 5.0,
    max_reconnect_delay: float = 2.0,
    max_outbox: int = 10_000,
) -> AsyncIterator[RedisPubSub]:
    """A :class:`RedisPubSub` connected to the Redis server at ``host:port``.

    ``host`` may also be a URL, ``redis://[[user]:password@]host[:port]``,
    or ``rediss://...`` for TLS; what the URL gives overrides ``port``,
    ``username`` and ``password``. ``ssl_context`` turns TLS on with that
    context (``rediss://`` without one verifies the server against the
    system's certificate authorities).

    Returns once connected; a server that cannot be reached within
    ``connect_timeout`` seconds raises :exc:`ConnectionError` (an
    :exc:`OSError`). Later disconnections are retried with a delay that
    doubles up to ``max_reconnect_delay`` seconds, and reported to
    subscribers as a :class:`Gap`. At most ``max_outbox`` messages wait to
    be published (see :meth:`RedisPubSub.publish_nowait`). Leaving the block
    first sends what is still queued (for at most ``connect_timeout``
    seconds; what is left then is lost), then disconnects.

    Needs the ``trio-websocket[redis]`` extra (coredis).
    """
    if max_outbox < 1:
        raise ValueError("max_outbox must be at least 1")
    if "://" in host:
        host, port, url_user, url_password, tls = parse_redis_url(host)
        username = url_user or username
        password = url_password if url_password is not None else password
        if tls and ssl_context is None:
            ssl_context = ssl.create_default_context()
    library = _coredis()
    client: coredis.Redis[bytes] = library.Redis(
        host=host,
        port=port,
        username=username,
        password=password,
        ssl=ssl_context is not None,
        ssl_context=ssl_context,
        connect_timeout=connect_timeout,
        retry_policy=library.retry.NoRetryPolicy(),
    )
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    hub = RedisPubSub(
        client,
        address,
        connect_timeout=connect_timeout,
        max_reconnect_delay=max_reconnect_delay,
        max_outbox=max_outbox,
    )
    async with background_nursery() as nursery:
        try:
            await nursery.start(hub._run)
            nursery.start_soon(hub._send_outbox)
        except BaseExceptionGroup as group:
            failure = _first(group)
            if isinstance(failure, (ConnectionError, RedisError)):
                raise failure from None  # as itself, not in task groups
            raise
        try:
            yield hub
        finally:
            await hub._stop()


__all__ = ["RedisError", "RedisPubSub", "open_redis_pubsub", "parse_redis_url"]
