"""permessage-deflate: negotiation, savings, opting out, and a bomb refused."""

from __future__ import annotations

import json
import zlib
from functools import partial

import trio

from trio_websocket import (
    ConnectionClosed,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)


async def echo(request: WebSocketRequest) -> None:
    connection = await request.accept()
    async for message in connection:
        await connection.send_message(message)


async def negotiated(url: str) -> tuple[list[str], list[str]]:
    async with open_websocket_url(url) as ws:  # compression="deflate"
        default = ws.extensions
    async with open_websocket_url(url, compression=None) as ws:
        off = ws.extensions
    return default, off


async def savings(url: str) -> float:
    rows = [{"symbol": "TRIO", "price": 100 + n, "volume": 10 * n} for n in range(50)]
    async with open_websocket_url(url) as ws:
        for row in rows:
            await ws.send_message(json.dumps(row))
            await ws.get_message()
        # Already compressed data gains nothing from deflate: skip it.
        await ws.send_message(zlib.compress(b"archive" * 100), compress=False)
        await ws.get_message()
        ratio = ws.stats.compression_ratio
    assert ratio is not None
    return ratio


async def send_a_bomb(url: str) -> int:
    # 16 MiB of zeros deflates to about 16 KiB on the wire, but the server's
    # max_message_size (1 MiB by default) counts the decompressed bytes.
    async with open_websocket_url(url) as ws:
        try:
            await ws.send_message(bytes(16 * 2**20))
            await ws.get_message()
        except ConnectionClosed as closed:
            assert closed.reason is not None
            return closed.reason.code  # 1009: message too big
    raise AssertionError("the server accepted the bomb")


async def main() -> list[object]:
    serve = partial(serve_websocket, compression="deflate")  # the default
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve, echo, "127.0.0.1", 0, None)
        url = f"ws://127.0.0.1:{server.port}/"
        results: list[object] = [
            await negotiated(url),
            await savings(url),
            await send_a_bomb(url),
        ]
        nursery.cancel_scope.cancel()
    for result in results:
        print(result)
    return results


if __name__ == "__main__":
    trio.run(main)
