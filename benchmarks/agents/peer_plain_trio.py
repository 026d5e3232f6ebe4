"""Plain Trio TCP with a minimal length-prefixed framing: the ceiling.

A frame is a 5-byte header (1 byte kind: 1 text, 2 binary; 4 bytes big-endian
length) and the payload. Like a WebSocket library, it hands out one whole
message per call (text decoded to ``str``) and writes one message per
``send_all``; unlike one, it has no handshake, masking, or background task.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from interface import Channel, Message, serve_tcp

HEADER = struct.Struct("!BI")
TEXT, BINARY = 1, 2
_SMALL = 65536


class FramedStream:
    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def send(self, message: Message) -> None:
        if isinstance(message, str):
            data, kind = message.encode(), TEXT
        else:
            data, kind = message, BINARY
        header = HEADER.pack(kind, len(data))
        if len(data) < _SMALL:
            await self._stream.send_all(header + data)
        else:
            await self._stream.send_all(header)
            await self._stream.send_all(data)

    async def recv(self) -> Message:
        buffer = self._buffer
        while True:
            if len(buffer) >= HEADER.size:
                kind, length = HEADER.unpack_from(buffer)
                end = HEADER.size + length
                if len(buffer) >= end:
                    data = bytes(buffer[HEADER.size : end])
                    del buffer[:end]
                    return data.decode() if kind == TEXT else data
            chunk = await self._stream.receive_some()
            if not chunk:
                raise EOFError("peer closed the connection")
            buffer += chunk


class PlainTrioPeer:
    supports_compression = False

    def info(self) -> dict[str, Any]:
        return {"library": "plain trio TCP", "version": trio.__version__}

    @asynccontextmanager
    async def connect(
        self, host: str, port: int, *, compression: bool
    ) -> AsyncIterator[Channel]:
        stream = await trio.open_tcp_stream(host, port)
        framed = FramedStream(stream)
        try:
            yield Channel(framed.send, framed.recv)
            # Closing mirrors a WebSocket close: we stop sending, the server
            # sees end-of-file and closes first.
            await stream.send_eof()
            while await stream.receive_some():
                pass
        finally:
            await stream.aclose()

    async def serve(
        self,
        host: str,
        *,
        compression: bool,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async def echo(stream: trio.SocketStream) -> None:
            framed = FramedStream(stream)
            recv, send = framed.recv, framed.send
            try:
                while True:
                    await send(await recv())
            except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            finally:
                await stream.aclose()

        await serve_tcp(echo, host, task_status)


def create() -> PlainTrioPeer:
    return PlainTrioPeer()
