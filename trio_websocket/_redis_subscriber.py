"""One Redis connection in subscribed mode, read a burst per scheduler pass.

coredis's own pub/sub object hands each pushed message through two tasks of
its own before the application's loop sees it (three scheduler passes per
message, about 40 µs of CPU, against about 14 µs for reading the
connection's pushes directly). A fan-out worker pays that for every message
it relays, so the Redis hub talks to its subscribing connection through
coredis's public connection interface instead: ``send_command`` for
SUBSCRIBE and UNSUBSCRIBE, ``push_messages`` for what Redis pushes (RESP3),
``create_request`` for a keepalive PING, ``invalidate`` to drop it.

The connection is taken from the client's pool and never given back to it
in subscribed mode: leaving :func:`subscribed_connection` invalidates it.

One private detail of coredis is used, here only: ``push_messages`` passes
through the scheduler once per message, so after each one the pushes that
the same read brought are taken at once from the connection's push buffer
(:func:`waiting_pushes`). A fan-out worker then relays a whole read in one
pass, and writes it to each WebSocket client in one write. If a coredis
release renames the buffer, delivery falls back to one message per pass,
and ``tests/test_pubsub_redis.py`` fails to say so.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    import coredis

#: Seconds between two PINGs on the subscribed connection: a Redis that stops
#: answering (frozen, or its host gone without a reset) is noticed this way.
KEEPALIVE_INTERVAL = 10.0

#: Pushes taken from the buffer in one pass at most, to let other tasks run.
MAX_PUSHES_PER_PASS = 256

#: Called with each message's channel and data; returns whether the
#: subscribers have room for more in the same pass.
MessageHandler = Callable[[bytes, bytes], bool]


class Subscriber:
    """The subscribed connection: subscribe, unsubscribe, read pushes.

    Made by :func:`subscribed_connection`. :meth:`deliver` must be running
    (in its own task) for :meth:`subscribe` to learn that Redis confirmed.
    """

    def __init__(self, connection: Any, confirm_timeout: float) -> None:
        self._connection = connection
        self._confirm_timeout = confirm_timeout
        self._confirmations: dict[bytes, deque[trio.Event]] = {}

    async def subscribe(self, *channels: str) -> None:
        """Subscribe, returning once Redis confirmed every channel.

        Raises :exc:`TimeoutError` (and drops the connection, so that its
        reader ends too) when Redis does not confirm in time.
        """
        confirmed = [self._expect_confirmation(channel) for channel in channels]
        self._connection.send_command(b"SUBSCRIBE", *channels)
        try:
            with trio.fail_after(self._confirm_timeout):
                for event in confirmed:
                    await event.wait()
        except trio.TooSlowError:
            self.drop()
            raise TimeoutError(f"Redis did not confirm SUBSCRIBE {channels}") from None

    def unsubscribe(self, channel: str) -> None:
        """Ask Redis to stop sending ``channel`` (its confirmation is not awaited)."""
        self._connection.send_command(b"UNSUBSCRIBE", channel)

    def drop(self) -> None:
        """Close the connection; :meth:`deliver` then ends with a lost connection."""
        self._connection.invalidate()

    async def deliver(self, on_message: MessageHandler) -> None:
        """Call ``on_message(channel, data)`` for each message, in order.

        The messages that already arrived are handled in the same pass, as
        long as ``on_message`` says there is room for them. Runs until the
        connection is lost, which raises coredis's ``ConnectionError``.
        """
        take_waiting = waiting_pushes(self._connection)
        async for push in self._connection.push_messages:
            if self._handle(push, on_message) and take_waiting is not None:
                self._handle_waiting(take_waiting, on_message)

    def _handle_waiting(
        self, take_waiting: Callable[[], list[Any]], on_message: MessageHandler
    ) -> None:
        """Handle the pushes that already arrived, while there is room for them."""
        import anyio  # coredis's own dependency, present where coredis is

        for _ in range(MAX_PUSHES_PER_PASS):
            try:
                push = take_waiting()
            except (anyio.WouldBlock, anyio.EndOfStream):
                return  # none waits, or the connection ended: the loop says
            if not self._handle(push, on_message):
                return  # let the subscribers read first

    def _handle(self, push: list[Any], on_message: MessageHandler) -> bool:
        kind = push[0]
        if kind == b"message":
            return on_message(push[1], push[2])
        if kind == b"subscribe":
            self._confirm(push[1])
        return True

    async def keep_alive(self) -> None:
        """PING now and then; drop the connection when a PONG is late."""
        while True:
            await trio.sleep(KEEPALIVE_INTERVAL)
            with trio.move_on_after(self._confirm_timeout) as late:
                await self._connection.create_request(b"PING")
            if late.cancelled_caught:
                self.drop()
                return

    def _expect_confirmation(self, channel: str) -> trio.Event:
        event = trio.Event()
        self._confirmations.setdefault(channel.encode(), deque()).append(event)
        return event

    def _confirm(self, channel: bytes) -> None:
        waiting = self._confirmations.get(channel)
        if waiting:
            waiting.popleft().set()
            if not waiting:
                del self._confirmations[channel]


def waiting_pushes(connection: object) -> Callable[[], list[Any]] | None:
    """Take the next push already received, or raise ``anyio.WouldBlock``.

    Reads coredis's private push buffer (an AnyIO memory stream, whose
    ``receive_nowait`` is public); ``None`` where a coredis release has no
    such buffer.
    """
    buffer = getattr(connection, "_push_message_buffer_out", None)
    receive_nowait = getattr(buffer, "receive_nowait", None)
    return receive_nowait if callable(receive_nowait) else None


@asynccontextmanager
async def subscribed_connection(
    client: coredis.Redis[bytes], confirm_timeout: float
) -> AsyncIterator[Subscriber]:
    """A connection of ``client`` of its own, for subscribing; dropped at the end."""
    async with client.connection_pool.acquire() as connection:
        subscriber = Subscriber(connection, confirm_timeout)
        try:
            yield subscriber
        finally:
            subscriber.drop()  # never back in the pool in subscribed mode
