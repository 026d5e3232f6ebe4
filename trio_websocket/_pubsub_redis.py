"""A :class:`~trio_websocket.PubSub` whose channels are Redis channels.

It speaks the Redis protocol (RESP2) over a Trio TCP stream itself, so it
needs no client library: one connection subscribes (and reconnects on its
own), another publishes. Messages carry a one-byte tag (``t`` text, ``b``
binary) before the payload, so ``str`` and ``bytes`` arrive as sent.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from ._concurrency import background_nursery
from ._iterators import BytesLike
from ._pubsub import ChannelMessage, Gap, PubSub, Subscription, _check_message

_Reply = bytes | int | list["_Reply"] | None
_FAILURES = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, EOFError)


class RedisError(Exception):
    """Redis answered a command with an error."""


def _command(*args: str | bytes) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


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


class _Connection:
    """One RESP connection: commands out, replies and pushes in."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._buffer = bytearray()
        self._send_lock = trio.Lock()

    async def send(self, data: bytes) -> None:
        async with self._send_lock:
            await self.stream.send_all(data)

    async def _fill(self) -> None:
        chunk = await self.stream.receive_some(65536)
        if not chunk:
            raise EOFError("Redis closed the connection")
        self._buffer += chunk

    async def _line(self) -> bytes:
        while (end := self._buffer.find(b"\r\n")) < 0:
            await self._fill()
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        return line

    async def reply(self) -> _Reply:
        line = await self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RedisError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            while len(self._buffer) < size + 2:
                await self._fill()
            data = bytes(self._buffer[:size])
            del self._buffer[: size + 2]
            return data
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [await self.reply() for _ in range(count)]
        raise EOFError(f"unexpected reply from Redis: {line[:40]!r}")

    async def aclose(self) -> None:
        await self.stream.aclose()


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
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        password: str | None,
        connect_timeout: float,
        max_reconnect_delay: float,
    ) -> None:
        super().__init__()
        self.host = host
        self.port = port
        self._password = password
        self._connect_timeout = connect_timeout
        self._max_reconnect_delay = max_reconnect_delay
        self._subscriber: _Connection | None = None
        self._confirmed: dict[str, trio.Event] = {}
        self._pending: deque[bytes] = deque()
        self._pending_lot = trio.lowlevel.ParkingLot()
        self._publisher: _Connection | None = None
        self._publish_lock = trio.Lock()
        self._connected = trio.Event()
        #: Times the subscribing connection was lost.
        self.disconnects = 0

    @property
    def connected(self) -> bool:
        """Whether the subscribing connection is up and has subscribed."""
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        """Return once connected and subscribed again to every channel."""
        await self._connected.wait()

    async def _connect(self) -> _Connection:
        with trio.fail_after(self._connect_timeout):
            stream = await trio.open_tcp_stream(self.host, self.port)
            connection = _Connection(stream)
            try:
                if self._password is not None:
                    await connection.send(_command("AUTH", self._password))
                    await connection.reply()
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
        return connection

    async def publish(self, channel: str, message: str | BytesLike) -> int:
        data = _encode(_check_message(message))
        async with self._publish_lock:
            try:
                if self._publisher is None:
                    self._publisher = await self._connect()
                await self._publisher.send(_command("PUBLISH", channel, data))
                count = await self._publisher.reply()
            except (*_FAILURES, trio.TooSlowError):
                await self._drop_publisher()
                return 0  # lost: never sent twice
            except BaseException:
                # Cancelled mid-way: the answer would be read by the next
                # publish, so this connection is done for.
                await self._drop_publisher()
                raise
        return count if isinstance(count, int) else 0

    async def _drop_publisher(self) -> None:
        if self._publisher is not None:
            publisher, self._publisher = self._publisher, None
            await trio.aclose_forcefully(publisher.stream)

    async def _joined(self, subscription: Subscription, first: bool) -> None:
        channel = subscription.channel
        if first:
            self._confirmed[channel] = trio.Event()
            self._queue(_command("SUBSCRIBE", channel))
        confirmed = self._confirmed.get(channel)
        if confirmed is not None and self._subscriber is not None:
            with trio.move_on_after(self._connect_timeout):
                await confirmed.wait()
        if confirmed is None or not confirmed.is_set() or self._subscriber is None:
            subscription._put_gap(Gap(disconnected=True))
        await trio.lowlevel.checkpoint()

    def _left(self, channel: str) -> None:
        self._confirmed.pop(channel, None)
        self._queue(_command("UNSUBSCRIBE", channel))

    def _queue(self, command: bytes) -> None:
        if self._subscriber is not None:  # otherwise: done on reconnection
            self._pending.append(command)
            self._pending_lot.unpark_all()

    async def _run(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Keep the subscribing connection up, and deliver what it receives."""
        delay = 0.0
        started = False
        while True:
            try:
                connection = await self._connect()
            except (*_FAILURES, trio.TooSlowError):
                if not started:
                    raise
                delay = min(max(2 * delay, 0.05), self._max_reconnect_delay)
                await trio.sleep(delay)
                continue
            delay = 0.0
            try:
                async with trio.open_nursery() as nursery:
                    self._pending.clear()
                    self._confirmed = {
                        channel: trio.Event() for channel in self.channels
                    }
                    if self._confirmed:
                        await connection.send(_command("SUBSCRIBE", *self._confirmed))
                    self._subscriber = connection
                    self._check_connected()
                    nursery.start_soon(self._write, connection)
                    if not started:
                        started = True
                        task_status.started()
                    await self._read(connection)
            except* _FAILURES:
                pass
            finally:
                self._subscriber = None
                if self._connected.is_set():  # waiters hold the unset one
                    self._connected = trio.Event()
                for confirmed in self._confirmed.values():
                    confirmed.set()  # waiters see the disconnection
                await trio.aclose_forcefully(connection.stream)
            self.disconnects += 1
            self._gap_everywhere(Gap(disconnected=True))

    async def _write(self, connection: _Connection) -> None:
        while True:
            while not self._pending:
                await self._pending_lot.park()
            await connection.send(self._pending.popleft())

    async def _read(self, connection: _Connection) -> None:
        while True:
            push = await connection.reply()
            if not isinstance(push, list) or len(push) != 3:
                continue
            kind, name, data = push
            if not isinstance(name, bytes):
                continue
            channel = name.decode(errors="replace")
            if kind == b"message" and isinstance(data, bytes):
                self._deliver(channel, _decode(data))
            elif kind == b"subscribe" and channel in self._confirmed:
                self._confirmed[channel].set()
                self._check_connected()

    def _check_connected(self) -> None:
        if self._subscriber is not None and all(
            confirmed.is_set() for confirmed in self._confirmed.values()
        ):
            self._connected.set()

    async def _aclose(self) -> None:
        await self._drop_publisher()


@asynccontextmanager
async def open_redis_pubsub(
    host: str = "127.0.0.1",
    port: int = 6379,
    *,
    password: str | None = None,
    connect_timeout: float = 5.0,
    max_reconnect_delay: float = 2.0,
) -> AsyncIterator[RedisPubSub]:
    """A :class:`RedisPubSub` connected to the Redis server at ``host:port``.

    Returns once connected; a server that cannot be reached within
    ``connect_timeout`` seconds raises :exc:`OSError` or
    :exc:`trio.TooSlowError`. Later disconnections are retried with a
    delay that doubles up to ``max_reconnect_delay`` seconds, and reported
    to subscribers as a :class:`Gap`. Leaving the block disconnects.
    """
    hub = RedisPubSub(
        host,
        port,
        password=password,
        connect_timeout=connect_timeout,
        max_reconnect_delay=max_reconnect_delay,
    )
    try:
        async with background_nursery() as nursery:
            await nursery.start(hub._run)
            yield hub
    finally:
        with trio.CancelScope(shield=True):
            await hub._aclose()


__all__ = ["RedisError", "RedisPubSub", "open_redis_pubsub"]
