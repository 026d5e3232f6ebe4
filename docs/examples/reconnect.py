"""Reconnecting: a feed client that survives a flaky server."""

from __future__ import annotations

import trio

from trio_websocket import (
    ConnectionClosed,
    WebSocketRequest,
    reconnecting_websocket_url,
    serve_websocket,
)


class FlakyFeed:
    """Restarts twice (close code 1012), then serves three ticks."""

    def __init__(self) -> None:
        self.connections = 0

    async def __call__(self, request: WebSocketRequest) -> None:
        self.connections += 1
        connection = await request.accept()
        if self.connections <= 2:
            await connection.aclose(1012, "service restart")
            return
        for tick in ("101.5", "101.7", "101.6"):
            await connection.send_message(tick)
        await connection.aclose(1000, "market closed")


async def follow_feed(url: str) -> list[str]:
    ticks: list[str] = []
    async with reconnecting_websocket_url(
        url, initial_delay=1, max_delay=30, jitter=0.5
    ) as client:
        async for connection in client:
            try:
                async for tick in connection:  # ends on a normal close
                    ticks.append(str(tick))
            except ConnectionClosed:
                ticks.append("(dropped; reconnecting)")
    return ticks


async def main() -> list[str]:
    feed = FlakyFeed()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, feed, "127.0.0.1", 0, None)
        ticks = await follow_feed(f"ws://127.0.0.1:{server.port}/")
        nursery.cancel_scope.cancel()
    print(ticks)
    return ticks


if __name__ == "__main__":
    trio.run(main)
