"""Code written for trio-websocket 0.12, unchanged: it runs as before."""

from __future__ import annotations

import trio

from trio_websocket import (
    ConnectionClosed,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)


async def echo_server(request: WebSocketRequest) -> None:
    ws = await request.accept()
    while True:
        try:
            message = await ws.get_message()
            await ws.send_message(message)
        except ConnectionClosed:
            break


async def client(url: str) -> str:
    async with open_websocket_url(url) as ws:
        await ws.send_message("hello world!")
        message = await ws.get_message()
        return str(message)


async def main() -> str:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, echo_server, "127.0.0.1", 0, None)
        reply = await client(f"ws://127.0.0.1:{server.port}/")
        nursery.cancel_scope.cancel()
    print(reply)
    return reply


if __name__ == "__main__":
    trio.run(main)
