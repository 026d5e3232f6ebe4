"""The engine floor: the ``websockets`` sans-I/O engine fed by plain Trio.

Not a usable library: one task per connection calls ``receive_some``, feeds
the engine and writes whatever it answers. There is no reader task, message
queue, UTF-8 check of our own, keepalive or close timeout. It shows how fast
any library built on this engine (as this one is) could be at best, next to
plain Trio TCP, which has no WebSocket framing at all.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import websockets.version
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Protocol
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from interface import MAX_MESSAGE_SIZE, Channel, Message, serve_tcp


class EngineStream:
    """One connection: a Trio stream and the engine, in one task."""

    def __init__(self, stream: trio.SocketStream, protocol: Protocol) -> None:
        self._stream = stream
        self._protocol = protocol
        self._events: deque[object] = deque()
        self._parts: list[bytes] = []
        self._text = False  # the kind of the message being assembled

    async def send(self, message: Message) -> None:
        if isinstance(message, str):
            self._protocol.send_text(message.encode())
        else:
            self._protocol.send_binary(message)
        await self.flush()

    async def recv(self) -> Message:
        while True:
            while self._events:
                message = self._assemble(self._events.popleft())
                if message is not None:
                    return message
            if not await self._read():
                raise EOFError("the connection closed")

    async def next_event(self) -> object:
        """The next event of any kind (the handshake request or response)."""
        while not self._events:
            if not await self._read():
                raise EOFError("the connection closed during the handshake")
        return self._events.popleft()

    async def close(self) -> None:
        """Send a close frame and read until the server closes."""
        self._protocol.send_close()
        await self.flush()
        while await self._read():
            pass

    def _assemble(self, event: object) -> Message | None:
        if not isinstance(event, Frame) or event.opcode not in DATA:
            return None
        if event.opcode is not Opcode.CONT:
            self._text = event.opcode is Opcode.TEXT
        self._parts.append(bytes(event.data))
        if not event.fin:
            return None
        data = b"".join(self._parts)
        self._parts.clear()
        return data.decode() if self._text else data

    async def _read(self) -> bool:
        try:
            data = await self._stream.receive_some()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if data:
            self._protocol.receive_data(data)
        else:
            self._protocol.receive_eof()
        self._events.extend(self._protocol.events_received())
        await self.flush()  # pongs and the answer to a close
        return bool(data)

    async def flush(self) -> None:
        """Write what the engine has queued."""
        for data in self._protocol.data_to_send():
            if data:
                await self._stream.send_all(data)
            else:  # the engine says: end of stream
                await self._stream.send_eof()


DATA = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)


class EngineTrioPeer:
    supports_compression = False

    def info(self) -> dict[str, Any]:
        return {
            "library": "websockets engine on plain Trio",
            "version": websockets.version.version,
            "trio": trio.__version__,
        }

    @asynccontextmanager
    async def connect(
        self, host: str, port: int, *, compression: bool
    ) -> AsyncIterator[Channel]:
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            protocol = ClientProtocol(
                parse_uri(f"ws://{host}:{port}/"), max_size=MAX_MESSAGE_SIZE
            )
            connection = EngineStream(stream, protocol)
            protocol.send_request(protocol.connect())
            await connection.flush()
            response = await connection.next_event()
            assert isinstance(response, Response) and protocol.handshake_exc is None
            yield Channel(connection.send, connection.recv)
            await connection.close()

    async def serve(
        self,
        host: str,
        *,
        compression: bool,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async def echo(stream: trio.SocketStream) -> None:
            async with stream:
                protocol = ServerProtocol(max_size=MAX_MESSAGE_SIZE)
                connection = EngineStream(stream, protocol)
                try:
                    request = await connection.next_event()
                    assert isinstance(request, Request)
                    protocol.send_response(protocol.accept(request))
                    await connection.flush()
                    recv, send = connection.recv, connection.send
                    while True:
                        await send(await recv())
                except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

        await serve_tcp(echo, host, task_status)


def create() -> EngineTrioPeer:
    return EngineTrioPeer()
