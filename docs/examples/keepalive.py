"""Keepalive: a dead peer is detected; a slow consumer is not a dead peer."""

from __future__ import annotations

from functools import partial

import trio
from peers import silent_after_handshake, start_tcp_server

from trio_websocket import (
    ConnectionClosed,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)


async def wait_for_news(url: str) -> str:
    # Ping every 5 s; no pong within 3 s means the peer is gone.
    async with open_websocket_url(url, ping_interval=5, ping_timeout=3) as ws:
        try:
            return str(await ws.get_message())
        except ConnectionClosed as closed:
            assert closed.reason is not None
            return f"gave up: {closed.reason.code} {closed.reason.reason}"


async def busy_handler(request: WebSocketRequest) -> None:
    connection = await request.accept()
    await trio.sleep(2)  # busy elsewhere: no get_message() for a while
    async for _ in connection:
        pass


async def ping_a_busy_server(queue_bytes: int) -> bool:
    """Send a burst to a server that is not reading, then ping it."""
    serve = partial(serve_websocket, message_queue_bytes=queue_bytes)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve, busy_handler, "127.0.0.1", 0, None)
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            for _ in range(20):
                await ws.send_message("x" * 1000)
            answered = False
            with trio.move_on_after(1):
                await ws.ping()
                answered = True
        nursery.cancel_scope.cancel()
    return answered


async def main() -> list[object]:
    async with trio.open_nursery() as nursery:
        silent_url = await start_tcp_server(nursery, silent_after_handshake)
        results: list[object] = [
            await wait_for_news(silent_url),
            await ping_a_busy_server(queue_bytes=0),
            await ping_a_busy_server(queue_bytes=2**16),
        ]
        nursery.cancel_scope.cancel()
    for result in results:
        print(result)
    return results


if __name__ == "__main__":
    trio.run(main)
