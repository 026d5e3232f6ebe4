"""Observability: per-connection statistics and the library's log lines."""

from __future__ import annotations

import logging

import trio

from trio_websocket import (
    ConnectionStats,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)


def configure_logging() -> None:
    # Per-connection events (open, close, a peer's errors) are at DEBUG.
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("trio-websocket").setLevel(logging.DEBUG)


async def echo(request: WebSocketRequest) -> None:
    connection = await request.accept()
    async for message in connection:
        await connection.send_message(message)


async def measure(url: str) -> ConnectionStats:
    async with open_websocket_url(url) as ws:
        for _ in range(10):
            await ws.send_message("status update " * 20)
            await ws.get_message()
        await ws.ping()  # sets stats.last_ping_rtt
        stats = ws.stats  # a snapshot; read it again for fresh numbers
    print(
        f"{ws}: {stats.messages_sent} sent, {stats.messages_received} received, "
        f"{stats.bytes_sent} payload bytes out, {stats.wire_bytes_sent} on the "
        f"wire, ratio {stats.compression_ratio:.1f}, "
        f"queue {stats.queue_depth}, ping {stats.last_ping_rtt:.6f} s"
    )
    return stats


async def main() -> ConnectionStats:
    configure_logging()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, echo, "127.0.0.1", 0, None)
        stats = await measure(f"ws://127.0.0.1:{server.port}/")
        nursery.cancel_scope.cancel()
    return stats


if __name__ == "__main__":
    trio.run(main)
