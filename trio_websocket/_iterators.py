"""Async iterators over a connection's messages, and over chunks to send.

They are classes rather than async generators: a consumer may stop early
(``break``), and an async generator left unfinished makes Trio warn
(ResourceWarning) when it is garbage collected. There is nothing to clean
up: the next receive skips what is left of a message.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Protocol, cast

import trio
from websockets.frames import OK_CLOSE_CODES

from ._errors import CloseReason, ConnectionClosed
from ._queue import Fragment, Message

BytesLike = bytes | bytearray | memoryview
Chunks = Iterable[str | BytesLike] | AsyncIterable[str | BytesLike]


class MessageSource(Protocol):
    """What the iterators need of a connection."""

    @property
    def closing_locally(self) -> bool:
        """True once this side closed the connection."""

    async def get_message(self) -> Message:
        """The next whole message (:exc:`ConnectionClosed` at the end)."""

    async def next_item(self, *, start: bool) -> Message | Fragment:
        """The next message or fragment; ``start`` at a message's start."""


class Messages:
    """``async for message in connection``."""

    def __init__(self, connection: MessageSource) -> None:
        self._connection = connection

    def __aiter__(self) -> Messages:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self._connection.get_message()
        except ConnectionClosed as closed:
            if self._connection.closing_locally or _is_normal(closed.reason):
                raise StopAsyncIteration from None
            raise

    async def aclose(self) -> None:
        """Stop iterating (for ``contextlib.aclosing``); nothing to release."""
        await trio.lowlevel.checkpoint()


class Fragments(Messages):
    """``connection.get_fragments()``: the pieces of the next message."""

    def __init__(self, connection: MessageSource) -> None:
        super().__init__(connection)
        self._started = False
        self._done = False

    async def __anext__(self) -> Message:
        connection = self._connection
        if not self._started:
            self._started = True
            await trio.lowlevel.checkpoint_if_cancelled()
            item = await connection.next_item(start=True)
            if not isinstance(item, Fragment):
                self._done = True
                return item
            self._done = item.last
            return item.data
        while not self._done:
            item = cast(Fragment, await connection.next_item(start=False))
            self._done = item.last
            if item.data:  # not e.g. the empty final frame of send_fragments()
                return item.data
        raise StopAsyncIteration


def _is_normal(reason: CloseReason | None) -> bool:
    return reason is not None and reason.code in OK_CLOSE_CODES


def chunk_iterator(chunks: Chunks) -> AsyncIterator[str | BytesLike]:
    # Not an async generator: send_fragments() may stop part-way (an error,
    # a cancellation), and Trio warns about unfinished async generators.
    if isinstance(chunks, AsyncIterable):
        return aiter(chunks)
    return _SyncChunks(iter(chunks))


class _SyncChunks:
    """A synchronous iterable of chunks, iterated with ``async for``."""

    def __init__(self, chunks: Iterator[str | BytesLike]) -> None:
        self._chunks = chunks

    def __aiter__(self) -> _SyncChunks:
        return self

    async def __anext__(self) -> str | BytesLike:
        try:
            return next(self._chunks)
        except StopIteration:
            raise StopAsyncIteration from None
