"""The queue between a connection's reader task and the application.

It holds complete messages, and the fragments of messages that arrive in
several frames, in arrival order. Its limits decide when the reader may read
the network again: while there is room by count (``max_items``, plus one per
task waiting for a message) *or* by size (``max_bytes``). The second limit is
what lets a connection with a slow consumer keep reading small amounts, and
so keep answering pings and noticing a close, before TCP flow control takes
over.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

from ._locks import Waiters

Message = str | bytes


class Fragment(NamedTuple):
    """One frame of a message that arrived in several frames."""

    data: Message
    last: bool


Item = Message | Fragment

# What one queued item costs beyond its payload (the tuple, the deque slot,
# the str or bytes header): counted against the byte budget, so that a
# budget of N bytes holds about N bytes however small the messages are.
_ITEM_OVERHEAD = 150


class MessageQueue:
    """A bounded FIFO of messages and fragments, with reader flow control."""

    __slots__ = (
        "_bytes",
        "_closed",
        "_consumers",
        "_items",
        "_max_bytes",
        "_max_items",
        "_reader",
        "_waiting",
    )

    def __init__(self, max_items: float, max_bytes: int) -> None:
        # The containers are made on first use: most connections are idle
        # most of the time, and memory per idle connection matters.
        self._items: deque[tuple[Item, int]] | None = None
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._bytes = 0
        self._waiting = 0  # tasks inside get()
        self._consumers: Waiters | None = None
        self._reader: Waiters | None = None
        self._closed = False

    def __len__(self) -> int:
        return len(self._items) if self._items else 0

    @property
    def queued_bytes(self) -> int:
        """The payload bytes waiting in the queue."""
        return self._bytes

    def put(self, item: Item, size: int) -> None:
        """Append an item (``size`` payload bytes) and wake one consumer."""
        if self._items is None:
            self._items = deque()
        self._items.append((item, size))
        self._bytes += size
        if self._consumers:
            self._consumers.unpark()

    @property
    def has_waiter_without_item(self) -> bool:
        """True when more tasks wait in :meth:`get` than there are items."""
        return self._waiting > len(self)

    @property
    def has_item_for_every_waiter(self) -> bool:
        """True when tasks wait in :meth:`get` and each has an item coming."""
        return 0 < self._waiting <= len(self)

    def has_room(self) -> bool:
        """Whether the reader may read more from the network."""
        count = len(self)
        if count < self._max_items + self._waiting:
            return True
        return self._bytes + count * _ITEM_OVERHEAD < self._max_bytes

    async def wait_for_room(self) -> None:
        """Park the reader until a consumer makes room (or the queue closes)."""
        while not self._closed and not self.has_room():
            if self._reader is None:
                self._reader = Waiters()
            await self._reader.park()

    def get_nowait(self) -> Item | None:
        """Pop the next item, or return ``None`` if there is none."""
        items = self._items
        if items is None:
            return None
        item, size = items.popleft()
        if not items:
            # An empty deque keeps a 600-byte block: idle connections drop it.
            self._items = None
        self._bytes -= size
        self._wake_reader_if_room()
        return item

    async def get(self) -> Item | None:
        """Wait for the next item; ``None`` once the queue is closed and empty."""
        while True:
            item = self.get_nowait()
            if item is not None or self._closed:
                return item
            # Count ourselves first: with no room otherwise, a waiting
            # consumer is what lets the reader read.
            if self._consumers is None:
                self._consumers = Waiters()
            self._waiting += 1
            try:
                self._wake_reader_if_room()
                await self._consumers.park()
            finally:
                self._waiting -= 1

    def close(self, *, discard: bool) -> None:
        """No more items will come; wake everyone. ``discard`` drops the rest."""
        self._closed = True
        if discard:
            self._items = None
            self._bytes = 0
        if self._consumers:
            self._consumers.unpark_all()
        if self._reader:
            self._reader.unpark_all()

    def _wake_reader_if_room(self) -> None:
        if self._reader and self.has_room():
            self._reader.unpark()
