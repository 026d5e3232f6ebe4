"""Message queues: how many messages a busy handler lets pile up."""

from __future__ import annotations

import math
from functools import partial

import trio

from trio_websocket import WebSocketRequest, open_websocket_url, serve_websocket


async def report_depth(request: WebSocketRequest) -> None:
    connection = await request.accept()
    await trio.sleep(0.5)  # busy: the client's burst arrives meanwhile
    await connection.send_message(str(connection.stats.queue_depth))
    async for _ in connection:  # then drain, so the client can close
        pass


async def queued_after_burst(queue_size: float, queue_bytes: int = 0) -> int:
    """How many of ten 5 kB messages the server reads ahead of its handler."""
    serve = partial(
        serve_websocket,
        message_queue_size=queue_size,
        message_queue_bytes=queue_bytes,
        compression=None,  # so that each message is 5 kB on the wire too
    )
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve, report_depth, "127.0.0.1", 0, None)
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            for number in range(10):
                await ws.send_message(f"{number}" * 5000)
            depth = int(await ws.get_message())
        nursery.cancel_scope.cancel()
    return depth


async def main() -> dict[str, int]:
    results = {
        "message_queue_size=0": await queued_after_burst(0),
        "message_queue_size=1": await queued_after_burst(1),
        "message_queue_size=4": await queued_after_burst(4),
        "message_queue_size=math.inf": await queued_after_burst(math.inf),
        "message_queue_bytes=2**16": await queued_after_burst(1, 2**16),
    }
    for setting, depth in results.items():
        print(f"{setting}: {depth} queued")
    return results


if __name__ == "__main__":
    trio.run(main)
