"""Publish/subscribe: named channels, and relaying a channel to WebSockets.

:class:`PubSub` is the in-process hub (no server needed); other backends
(see :doc:`/pubsub`) keep the same interface and the same guarantees:

* **At most once.** A message reaches each subscriber once or not at all;
  nothing is retried or stored for later.
* **Ordered per publisher and channel.** Messages one task publishes on
  one channel reach each subscriber in the order they were published.
* **Gaps are reported.** Whenever messages may have been lost for a
  subscriber -- its buffer overflowed, or the backend's connection dropped
  -- the subscription yields a :class:`Gap` at the place where they went
  missing. An application resynchronises from its source of truth there.
* **Bounded.** Each subscription buffers at most ``max_buffer`` messages.
  A subscriber that cannot keep up loses the oldest ones (and gets a
  :class:`Gap`), or is ended with :exc:`SubscriptionOverflow`; it never
  slows the publisher or other subscribers.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal, TypeAlias

import trio

from ._broadcast import FramedMessage, frame_message, send_framed
from ._concurrency import background_nursery
from ._connection import WebSocketConnection
from ._errors import ConnectionClosed
from ._iterators import BytesLike

#: What a channel carries: text (``str``) or binary (``bytes``).
ChannelMessage: TypeAlias = str | bytes
#: What a subscriber that cannot keep up gets.
Overflow: TypeAlias = Literal["drop_oldest", "close"]

#: Close code for a WebSocket client evicted by :meth:`PubSub.fan_out`
#: ("try again later").
SLOW_CLIENT_CODE = 1013
SLOW_CLIENT_REASON = "too slow to keep up with the channel"


@dataclass(frozen=True)
class Gap:
    """Messages may be missing here; resynchronise before going on.

    ``dropped`` counts messages this subscriber is known to have lost
    because its buffer was full. ``disconnected`` is true when the backend
    lost its connection: any number of messages published meanwhile are
    lost. Consecutive gaps are merged into one.
    """

    dropped: int = 0
    disconnected: bool = False

    def __add__(self, other: Gap) -> Gap:
        return Gap(
            self.dropped + other.dropped, self.disconnected or other.disconnected
        )


class SubscriptionOverflow(Exception):
    """A subscription with ``overflow="close"`` fell ``max_buffer`` behind."""


def _check_message(message: str | BytesLike) -> ChannelMessage:
    if isinstance(message, str | bytes):
        return message
    if isinstance(message, bytearray | memoryview):
        return bytes(message)  # a copy: buffers outlive the caller's object
    raise TypeError(f"cannot publish a message of type {type(message)!r}")


class Subscription:
    """Messages on one channel, as an async iterator of messages and gaps.

    Made by :meth:`PubSub.subscribe`. Iterating yields ``str`` and ``bytes``
    messages, and a :class:`Gap` where some may be missing. Iteration ends
    once the ``async with`` block that made it is left.
    """

    def __init__(self, channel: str, max_buffer: int, overflow: Overflow) -> None:
        if max_buffer < 1:
            raise ValueError("max_buffer must be at least 1")
        if overflow not in ("drop_oldest", "close"):
            raise ValueError(
                f"overflow must be 'drop_oldest' or 'close', not {overflow!r}"
            )
        #: The channel's name.
        self.channel = channel
        self.max_buffer = max_buffer
        self.overflow: Overflow = overflow
        #: Messages dropped because the buffer was full, in all.
        self.dropped = 0
        #: Gaps yielded so far (or about to be).
        self.gaps = 0
        self._items: deque[ChannelMessage | Gap] = deque()
        self._messages = 0  # items that are not gaps
        self._lot = trio.lowlevel.ParkingLot()
        self._ended = False
        self._overflowed = False

    @property
    def buffered(self) -> int:
        """Messages received but not yet taken."""
        return self._messages

    def _put(self, message: ChannelMessage) -> None:
        """Buffer a message, without ever blocking."""
        if self._ended:
            return
        if self._messages >= self.max_buffer:
            if self.overflow == "close":
                self._overflowed = True
                self._end()
                return
            self._drop_oldest()
        self._items.append(message)
        self._messages += 1
        self._lot.unpark_all()

    def _drop_oldest(self) -> None:
        """Drop the oldest message; one gap takes its place (and its gaps')."""
        lost = Gap()
        counted = False  # merged into a gap already yielded-to-be
        dropped_one = False
        while self._items and not (dropped_one and not isinstance(self._items[0], Gap)):
            item = self._items.popleft()
            if isinstance(item, Gap):
                lost += item
                counted = True
            else:
                self._messages -= 1
                self.dropped += 1
                lost += Gap(dropped=1)
                dropped_one = True
        if not counted:
            self.gaps += 1
        self._items.appendleft(lost)

    def _put_gap(self, gap: Gap) -> None:
        """Mark that messages may have been lost from here on."""
        if self._ended:
            return
        if self._items and isinstance(self._items[-1], Gap):
            self._items[-1] += gap
        else:
            self._items.append(gap)
            self.gaps += 1
        self._lot.unpark_all()

    def _end(self) -> None:
        self._ended = True
        self._items.clear()
        self._messages = 0
        self._lot.unpark_all()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> ChannelMessage | Gap:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def receive_nowait(self) -> ChannelMessage | Gap:
        """The next message or gap if one is waiting, without a checkpoint.

        Raises :exc:`trio.WouldBlock` if none is, :exc:`trio.EndOfChannel`
        once the subscription ended, and :exc:`SubscriptionOverflow` once it
        was closed for falling behind. A task that relays messages can take
        what piled up in one go after each ``await``, rather than passing
        through the scheduler once per message.
        """
        if self._items:
            item = self._items.popleft()
            if not isinstance(item, Gap):
                self._messages -= 1
            return item
        if self._overflowed:
            raise SubscriptionOverflow(
                f"more than {self.max_buffer} messages behind on {self.channel!r}"
            )
        if self._ended:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> ChannelMessage | Gap:
        """The next message or gap; :exc:`trio.EndOfChannel` once ended."""
        await trio.lowlevel.checkpoint()
        while True:
            try:
                return self.receive_nowait()
            except trio.WouldBlock:
                await self._lot.park()


class PubSub:
    """Named channels within this process.

    ``await hub.publish(channel, message)`` hands the message to every
    subscription of ``channel`` at once (into each one's bounded buffer)
    and returns how many got it; it never waits for a subscriber.
    ``async with hub.subscribe(channel) as subscription`` subscribes until
    the block is left. See the module's guarantees in :doc:`/pubsub`.
    """

    def __init__(self) -> None:
        self._subscriptions: dict[str, set[Subscription]] = {}

    @property
    def channels(self) -> list[str]:
        """The channels with at least one subscription here."""
        return list(self._subscriptions)

    def subscribers(self, channel: str) -> int:
        """How many subscriptions ``channel`` has here."""
        return len(self._subscriptions.get(channel, ()))

    async def publish(self, channel: str, message: str | BytesLike) -> int:
        """Send ``message`` (``str`` as text, ``bytes`` as binary) on ``channel``.

        Returns the number of subscriptions it was handed to.
        """
        count, _ = self._deliver(channel, _check_message(message))
        await trio.lowlevel.checkpoint()
        return count

    def publish_nowait(self, channel: str, message: str | BytesLike) -> None:
        """Publish without waiting: for a task that relays a stream of messages.

        In this process the message is handed to every subscription at
        once, as :meth:`publish` does. A backend that sends it over a network
        queues it instead, and raises :exc:`trio.WouldBlock` when its queue
        is full; ``await`` :meth:`publish` then, which waits its turn.
        """
        self._deliver(channel, _check_message(message))

    def _deliver(self, channel: str, message: ChannelMessage) -> tuple[int, bool]:
        """Hand ``message`` to every subscription of ``channel``.

        Returns how many took it, and whether each still has its buffer
        under half full: a backend that receives messages in bursts stops
        handing them over when it has not, until the subscribers had a turn,
        so a subscriber that keeps up one message at a time loses none.
        """
        count = 0
        roomy = True
        for subscription in self._subscriptions.get(channel, ()):
            if not subscription._ended:  # ended ones leave at their block's end
                subscription._put(message)
                count += 1
                roomy = roomy and subscription.buffered < subscription.max_buffer // 2
        return count, roomy

    def _gap_everywhere(self, gap: Gap) -> None:
        """Tell every subscription that messages may have been lost."""
        for subscriptions in self._subscriptions.values():
            for subscription in subscriptions:
                subscription._put_gap(gap)

    def _tell_gap(self, subscription: Subscription, gap: Gap) -> None:
        """Tell one subscription that messages may have been lost."""
        subscription._put_gap(gap)

    def _remove(self, subscription: Subscription) -> bool:
        """Forget a subscription; true if it was its channel's last one."""
        subscriptions = self._subscriptions.get(subscription.channel)
        if subscriptions is None or subscription not in subscriptions:
            return False
        subscriptions.discard(subscription)
        if subscriptions:
            return False
        del self._subscriptions[subscription.channel]
        return True

    async def _joined(self, subscription: Subscription, first: bool) -> None:
        """Backends start receiving the channel (``first``) here.

        Returns once messages published from now on reach ``subscription``.
        """
        await trio.lowlevel.checkpoint()

    def _left(self, channel: str) -> None:
        """Backends stop receiving ``channel``, its last subscription gone."""

    @asynccontextmanager
    async def subscribe(
        self,
        channel: str,
        *,
        max_buffer: int = 100,
        overflow: Overflow = "drop_oldest",
    ) -> AsyncIterator[Subscription]:
        """Receive what is published on ``channel`` until the block is left.

        At most ``max_buffer`` messages wait for the subscriber. When one
        more arrives, ``overflow="drop_oldest"`` drops the oldest and
        yields a :class:`Gap` in its place (counted in ``dropped``);
        ``overflow="close"`` ends the subscription, whose iteration then
        raises :exc:`SubscriptionOverflow`.
        """
        subscription = Subscription(channel, max_buffer, overflow)
        first = channel not in self._subscriptions
        self._subscriptions.setdefault(channel, set()).add(subscription)
        try:
            await self._joined(subscription, first)
            yield subscription
        finally:
            subscription._end()
            if self._remove(subscription):
                self._left(channel)

    @asynccontextmanager
    async def fan_out(
        self,
        channel: str,
        *,
        max_pending: int = 16,
        slow: Overflow = "close",
        on_gap: str | BytesLike | None = None,
    ) -> AsyncIterator[FanOut]:
        """Relay ``channel`` to the WebSocket connections added to the group.

        Each message is framed once and sent to every connection in the
        group: at once by the relaying task where the socket takes it
        whole, else by that connection's own writer task, so no connection
        waits for another. At most ``max_pending`` messages wait for one
        connection; when one more arrives, ``slow="close"`` closes it with
        code 1013 (``SLOW_CLIENT_CODE``) and removes it, while
        ``slow="drop_oldest"`` drops its oldest pending message (counted in
        :attr:`FanOut.dropped`). ``on_gap``, if given, is sent to every
        connection where the channel reports a :class:`Gap`.

        Messages that arrive together go out together: up to half of
        ``max_pending`` of them (at most 64, and no more than the fullest
        connection's queue still holds) are relayed in one pass and one
        write per idle connection, and a writer task writes what waits for
        its connection at once; each write joins at most 64 KiB of frames
        (a larger message goes alone).

        Leaving the block stops relaying; a write still in progress is
        cancelled, which aborts that connection (half a frame cannot be
        finished later).
        """
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        if slow not in ("drop_oldest", "close"):
            raise ValueError(f"slow must be 'drop_oldest' or 'close', not {slow!r}")
        gap_message = None if on_gap is None else _check_message(on_gap)
        async with (
            self.subscribe(channel, max_buffer=1000) as subscription,
            background_nursery() as nursery,
        ):
            group = FanOut(nursery, max_pending, slow)
            nursery.start_soon(group._pump, subscription, gap_message)
            yield group


#: Messages the relaying task takes from its subscription in one pass at
#: most: one pass through the scheduler per burst rather than per message,
#: while other tasks still get their turn.
_RELAY_BATCH = 64


#: Bytes of frames joined into one write at most: past that, joining would
#: copy large messages for no saving in system calls.
_JOIN_LIMIT = 64 * 2**10


class _Burst:
    """Messages relayed in one pass: each framed once, and all back to back."""

    __slots__ = ("frames", "messages", "payload_size")

    def __init__(self, messages: list[FramedMessage]) -> None:
        self.messages = messages
        self.frames = b"".join([framed.frame for framed in messages])
        self.payload_size = sum(framed.payload_size for framed in messages)


def _take_burst(queue: deque[FramedMessage]) -> _Burst:
    """Take the first message of ``queue``, and those after it that fit in
    :data:`_JOIN_LIMIT` bytes together."""
    taken = [queue.popleft()]
    size = len(taken[0].frame)
    while queue and size + len(queue[0].frame) <= _JOIN_LIMIT:
        framed = queue.popleft()
        taken.append(framed)
        size += len(framed.frame)
    return _Burst(taken)


class _Member:
    def __init__(self, connection: WebSocketConnection) -> None:
        self.connection = connection
        self.pending: deque[FramedMessage] = deque()
        self.rest: bytes | None = None  # of a frame the pump began to write
        self.lot = trio.lowlevel.ParkingLot()
        self.active = True

    @property
    def idle(self) -> bool:
        """Whether the writer task has nothing to write."""
        return not self.pending and self.rest is None


class FanOut:
    """WebSocket connections that receive a channel; see :meth:`PubSub.fan_out`."""

    def __init__(self, nursery: trio.Nursery, max_pending: int, slow: Overflow) -> None:
        self._nursery = nursery
        self._members: dict[WebSocketConnection, _Member] = {}
        self.max_pending = max_pending
        self.slow: Overflow = slow
        #: Messages dropped for slow connections (``slow="drop_oldest"``).
        self.dropped = 0
        #: Connections closed for being too slow (``slow="close"``).
        self.evicted = 0
        #: Gaps the channel reported.
        self.gaps = 0
        #: Messages relayed from the channel (each framed once).
        self.relayed = 0

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, connection: object) -> bool:
        return connection in self._members

    def add(self, connection: WebSocketConnection) -> None:
        """Relay the channel's next messages to ``connection`` too.

        A closed connection is ignored; one already in the group stays.
        """
        if connection.closed is not None or connection in self._members:
            return
        member = _Member(connection)
        self._members[connection] = member
        self._nursery.start_soon(self._write, member)

    def discard(self, connection: WebSocketConnection) -> None:
        """Stop relaying to ``connection``, after the message being written.

        Connections that close leave the group by themselves.
        """
        member = self._members.pop(connection, None)
        if member is not None:
            self._stop(member)

    def _stop(self, member: _Member) -> None:
        member.active = False
        member.pending.clear()
        member.lot.unpark_all()

    async def _pump(
        self, subscription: Subscription, gap_message: ChannelMessage | None
    ) -> None:
        async for item in subscription:
            items = [item]
            for _ in range(self._room() - 1):  # what else piled up meanwhile
                try:
                    items.append(subscription.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            framed = self._frame(items, gap_message)
            while framed:
                burst = _take_burst(framed)
                for member in list(self._members.values()):
                    self._offer(member, burst)

    def _room(self) -> int:
        """How many messages one pass may relay.

        Up to half of ``max_pending`` (at most 64), and no more than the
        fullest connection's queue still holds: a burst goes out in one
        pass, in one write per idle connection, and never closes (or drops
        for) a connection that had room for it. A connection that lags does
        not slow the others down to one message per pass; it only bounds
        the burst by what it can still queue.
        """
        room = min(_RELAY_BATCH, self.max_pending // 2)
        for member in self._members.values():
            if member.pending:
                room = min(room, self.max_pending - len(member.pending))
        return max(1, room)

    def _frame(
        self, items: list[ChannelMessage | Gap], gap_message: ChannelMessage | None
    ) -> deque[FramedMessage]:
        framed: deque[FramedMessage] = deque()
        for item in items:
            if isinstance(item, Gap):
                self.gaps += 1
                if gap_message is None:
                    continue
                item = gap_message
            self.relayed += 1
            framed.append(frame_message(item))
        return framed

    def _offer(self, member: _Member, burst: _Burst) -> None:
        connection = member.connection
        if connection.closed is not None:
            self.discard(connection)
            return
        if member.idle and connection.takes_shared_frames:
            # The fast path: one write from the pump, sparing the writer task
            # a wake-up, when the socket takes the frames now.
            rest = connection.try_send_shared_frame(
                burst.frames, burst.payload_size, len(burst.messages)
            )
            if rest is not None:
                if rest:  # the socket filled up mid-frame: the writer ends it
                    member.rest = rest
                    member.lot.unpark_all()
                return
        for framed in burst.messages:
            if not self._queue(member, framed):
                return

    def _queue(self, member: _Member, framed: FramedMessage) -> bool:
        """Queue one message for the writer; false if the connection was closed."""
        if len(member.pending) >= self.max_pending:
            if self.slow == "close":
                self.discard(member.connection)
                self.evicted += 1
                self._nursery.start_soon(_evict, member.connection)
                return False
            member.pending.popleft()
            self.dropped += 1
        member.pending.append(framed)
        member.lot.unpark_all()
        return True

    async def _write(self, member: _Member) -> None:
        connection = member.connection
        try:
            while member.active or member.rest is not None:
                if member.rest is not None:
                    rest, member.rest = member.rest, None
                    await connection.finish_shared_frame(rest)
                elif member.pending:
                    await _send_pending(connection, member.pending)
                else:
                    await member.lot.park()
        except ConnectionClosed:
            pass
        finally:
            if member.rest is not None:  # cancelled: abort, as mid-frame
                with contextlib.suppress(ConnectionClosed):
                    await connection.finish_shared_frame(member.rest)
            if self._members.get(connection) is member:
                del self._members[connection]


async def _send_pending(
    connection: WebSocketConnection, pending: deque[FramedMessage]
) -> None:
    """Write what waits: as much as :func:`_take_burst` joins, where frames
    can be shared; else the next message."""
    if not connection.takes_shared_frames:
        await send_framed(connection, pending.popleft())
        return
    burst = _take_burst(pending)
    await connection.send_shared_frame(
        burst.frames, burst.payload_size, len(burst.messages)
    )


async def _evict(connection: WebSocketConnection) -> None:
    # Waits for a write in progress at most disconnect_timeout, then aborts.
    await connection.aclose(SLOW_CLIENT_CODE, SLOW_CLIENT_REASON)


__all__ = [
    "SLOW_CLIENT_CODE",
    "ChannelMessage",
    "FanOut",
    "Gap",
    "Overflow",
    "PubSub",
    "Subscription",
    "SubscriptionOverflow",
]
