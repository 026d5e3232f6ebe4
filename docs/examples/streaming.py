"""Streaming: send and receive a message of any size in bounded memory."""

from __future__ import annotations

import hashlib
import math
from collections.abc import AsyncIterator
from functools import partial

import trio

from trio_websocket import WebSocketRequest, open_websocket_url, serve_websocket

CHUNK = 64 * 1024


async def digest_handler(request: WebSocketRequest) -> None:
    """Answer each binary message with its size and SHA-256, never holding it."""
    connection = await request.accept()
    while True:
        digest, size = hashlib.sha256(), 0
        async for fragment in connection.get_fragments():
            assert isinstance(fragment, bytes)
            digest.update(fragment)
            size += len(fragment)
        await connection.send_message(f"{size} {digest.hexdigest()}")


async def produce(count: int) -> AsyncIterator[bytes]:
    """Chunks as they become available: read from a file, a pipe, ..."""
    for number in range(count):
        await trio.lowlevel.checkpoint()
        yield bytes([number % 256]) * CHUNK


async def upload(url: str, count: int) -> str:
    async with open_websocket_url(url) as ws:
        await ws.send_fragments(produce(count))  # one message, many frames
        return str(await ws.get_message())


async def main() -> str:
    serve = partial(
        serve_websocket,
        max_message_size=math.inf,  # no limit on the whole message...
        max_fragment_size=CHUNK,  # ...but on each frame: bounded memory
    )
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve, digest_handler, "127.0.0.1", 0, None)
        answer = await upload(f"ws://127.0.0.1:{server.port}/", count=32)
        nursery.cancel_scope.cancel()
    print(answer)
    return answer


if __name__ == "__main__":
    trio.run(main)
