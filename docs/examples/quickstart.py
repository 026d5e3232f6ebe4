"""The ten-line example of the front page: an echo server and a client.

Run it with ``python docs/examples/quickstart.py``.
"""

from __future__ import annotations

import trio

from trio_websocket import WebSocketRequest, open_websocket_url, serve_websocket


async def echo(request: WebSocketRequest) -> None:
    connection = await request.accept()
    async for message in connection:
        await connection.send_message(message)


async def main() -> str:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, echo, "127.0.0.1", 0, None)
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            await ws.send_message("hello, world")
            reply = await ws.get_message()
        nursery.cancel_scope.cancel()
    print(reply)
    return str(reply)


if __name__ == "__main__":
    trio.run(main)
