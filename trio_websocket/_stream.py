"""A WebSocket connection presented as a Trio byte stream.

Tunnels and transports that want a :class:`trio.abc.Stream` can run over a
WebSocket with this adapter: bytes written become binary messages, and the
messages received (binary, or text as UTF-8) are read back as bytes.
"""

from __future__ import annotations

import operator

import trio

from ._connection import WebSocketConnection
from ._errors import CloseReason, ConnectionClosed

# Codes that mean the peer ended the stream on purpose: reading then gives b"".
_NORMAL_CODES = frozenset({1000, 1001, 1005})


class WebSocketStream(trio.abc.HalfCloseableStream):
    """Send and receive bytes over a :class:`WebSocketConnection`.

    Each :meth:`send_all` sends one binary message; :meth:`receive_some`
    returns message bytes in order, split to ``max_bytes``. A normal close
    by the peer reads as end of stream (``b""``); an abnormal one raises
    :exc:`trio.BrokenResourceError`.

    :meth:`send_eof` sends a close frame (code 1000). RFC 6455 has no
    half-close: data the peer sent before it saw our close is still read,
    but after that the peer can send no more.
    """

    def __init__(self, connection: WebSocketConnection) -> None:
        self.connection = connection
        self._pending = memoryview(b"")
        self._sending = False
        self._receiving = False
        self._eof_sent = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` as one binary message."""
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        if self.connection.closing_locally:
            raise trio.ClosedResourceError("the stream was closed")
        if self._eof_sent:
            raise trio.ClosedResourceError("send_eof() was called")
        self._sending = True
        try:
            if not data:
                await trio.lowlevel.checkpoint()
                return
            await self.connection.send_message(bytes(data))
        except ConnectionClosed as exc:
            raise _broken_or_closed(self, exc.reason) from exc
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        """Return at once: a WebSocket send queues nothing of its own."""
        await trio.lowlevel.checkpoint()
        if self.connection.closing_locally:
            raise trio.ClosedResourceError("the stream was closed")

    async def send_eof(self) -> None:
        """Send a close frame; keep reading what the peer already sent."""
        self._eof_sent = True
        await self.connection.start_closing(1000, None, discard=False)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Return the next bytes received, or ``b""`` after a normal close."""
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)  # TypeError for 1.5
            if max_bytes < 1:
                raise ValueError("max_bytes must be at least 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this stream")
        self._receiving = True
        try:
            # Always a checkpoint, as the stream contract asks, even when
            # the data is already here.
            await trio.lowlevel.checkpoint_if_cancelled()
            if self.connection.closing_locally:
                raise trio.ClosedResourceError("the stream was closed")
            while not self._pending:
                message = await self._next_message()
                if message is None:
                    break  # end of stream: b""
                self._pending = memoryview(message)
            size = len(self._pending) if max_bytes is None else max_bytes
            chunk, self._pending = self._pending[:size], self._pending[size:]
            await trio.lowlevel.cancel_shielded_checkpoint()
            return bytes(chunk)
        finally:
            self._receiving = False

    async def _next_message(self) -> bytes | None:
        try:
            message = await self.connection.get_message()
        except ConnectionClosed as exc:
            if self.connection.closing_locally and not self._eof_sent:
                raise trio.ClosedResourceError("the stream was closed") from exc
            if exc.reason is not None and exc.reason.code in _NORMAL_CODES:
                return None
            raise _broken_or_closed(self, exc.reason) from exc
        return message.encode() if isinstance(message, str) else message

    async def aclose(self) -> None:
        """Close the WebSocket connection (code 1000)."""
        await self.connection.aclose()


def _broken_or_closed(stream: WebSocketStream, reason: CloseReason | None) -> Exception:
    if stream.connection.closing_locally:
        return trio.ClosedResourceError("the stream was closed")
    return trio.BrokenResourceError(f"the WebSocket connection closed: {reason}")
