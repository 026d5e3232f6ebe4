"""Size limits on a client's request head: the request line and the headers.

A server enforces :class:`~trio_websocket.Admission`'s ``max_request_line``
(414 beyond) and ``max_header_size`` (431 beyond) while it reads a request,
by reading through :func:`limit_head`.
"""

from __future__ import annotations

import math

import trio

from ._errors import HandshakeError


class HeadTooLarge(HandshakeError):
    """The request line or headers exceed the server's limits."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


def limit_head(
    stream: trio.abc.Stream, max_request_line: int | None, max_header_size: int | None
) -> trio.abc.Stream:
    """``stream`` as read during the handshake, with size limits enforced.

    Without limits, returns ``stream`` itself.
    """
    if max_request_line is None and max_header_size is None:
        return stream
    return _HeadLimitedStream(
        stream,
        math.inf if max_request_line is None else max_request_line,
        math.inf if max_header_size is None else max_header_size,
    )


class _HeadLimitedStream(trio.abc.Stream):
    """Watches the request head go by and stops it once it is too large.

    The engine reads the head line by line with fixed limits; this wrapper
    sits in front of it only while the request is read, so the check costs
    nothing once the connection is open.
    """

    def __init__(
        self, stream: trio.abc.Stream, max_line: float, max_headers: float
    ) -> None:
        self._stream = stream
        self._max_line = max_line
        self._max_headers = max_headers
        self._head = bytearray()
        self._complete = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self._stream.receive_some(max_bytes)
        if not self._complete:
            self._head += data
            self._check()
        return data

    def _check(self) -> None:
        head = self._head
        line_end = head.find(b"\r\n")
        if (len(head) if line_end < 0 else line_end) > self._max_line:
            raise HeadTooLarge(414, "request line too long")
        if line_end < 0:
            return
        head_end = head.find(b"\r\n\r\n", line_end)
        headers_end = len(head) if head_end < 0 else head_end + 2
        if headers_end - (line_end + 2) > self._max_headers:
            raise HeadTooLarge(431, "request header fields too large")
        self._complete = head_end >= 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()
