"""WebSocketStream: a WebSocket connection as a Trio byte stream."""

from __future__ import annotations

import trio

from trio_websocket import (
    WebSocketRequest,
    WebSocketStream,
    open_websocket_url,
    serve_websocket,
)


async def shout(request: WebSocketRequest) -> None:
    """Any code written for trio.abc.Stream works: here, an upper-case echo."""
    stream = WebSocketStream(await request.accept())
    async with stream:
        while data := await stream.receive_some(1024):  # b"" at a normal close
            await stream.send_all(data.upper())


async def talk(url: str) -> bytes:
    async with open_websocket_url(url) as connection:
        stream = WebSocketStream(connection)
        await stream.send_all(b"hello, ")  # each send_all is a binary message
        await stream.send_all(b"stream")
        received = b""
        while len(received) < len(b"hello, stream"):
            received += await stream.receive_some()
    return received


async def main() -> bytes:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, shout, "127.0.0.1", 0, None)
        received = await talk(f"ws://127.0.0.1:{server.port}/")
        nursery.cancel_scope.cancel()
    print(received)
    return received


if __name__ == "__main__":
    trio.run(main)
