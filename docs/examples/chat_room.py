"""Recipe: a chat room where every message goes to every member."""

from __future__ import annotations

import trio

from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)

BACKLOG = 32  # messages a member may fall behind before it is dropped


class ChatRoom:
    def __init__(self) -> None:
        self.members: dict[WebSocketConnection, trio.MemorySendChannel[str]] = {}

    def broadcast(self, message: str) -> None:
        for member, outbox in list(self.members.items()):
            try:
                outbox.send_nowait(message)  # never wait for a slow member
            except trio.WouldBlock:
                del self.members[member]
                outbox.close()  # its sender task closes it with 1008

    async def handler(self, request: WebSocketRequest) -> None:
        connection = await request.accept()
        outbox, inbox = trio.open_memory_channel[str](BACKLOG)
        self.members[connection] = outbox
        self.broadcast(f"{len(self.members)} members")
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_loop, connection, inbox)
                async for message in connection:
                    self.broadcast(str(message))
                nursery.cancel_scope.cancel()
        finally:
            self.members.pop(connection, None)

    async def _send_loop(
        self, connection: WebSocketConnection, inbox: trio.MemoryReceiveChannel[str]
    ) -> None:
        try:
            async for message in inbox:
                await connection.send_message(message)
            await connection.aclose(1008, "too slow to keep up")
        except ConnectionClosed:
            pass


async def member(url: str, name: str, room_size: int) -> list[str]:
    """Join, wait until everyone is in, say hello, hear everyone's hello."""
    heard: list[str] = []
    async with open_websocket_url(url) as ws:
        while await ws.get_message() != f"{room_size} members":
            pass
        await ws.send_message(f"hello from {name}")
        while len(heard) < room_size:
            message = str(await ws.get_message())
            if message.startswith("hello"):
                heard.append(message)
    return sorted(heard)


async def main() -> list[list[str]]:
    room = ChatRoom()
    names = ["ada", "bob", "cy"]
    results: dict[str, list[str]] = {}

    async def join(url: str, name: str) -> None:
        results[name] = await member(url, name, len(names))

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            serve_websocket, room.handler, "127.0.0.1", 0, None
        )
        async with trio.open_nursery() as members:
            for name in names:
                members.start_soon(join, f"ws://127.0.0.1:{server.port}/", name)
        nursery.cancel_scope.cancel()
    for name in names:
        print(name, "heard", results[name])
    return [results[name] for name in names]


if __name__ == "__main__":
    trio.run(main)
