"""Recipe: an application heartbeat that measures the round trip."""

from __future__ import annotations

import trio

from trio_websocket import (
    WebSocketConnection,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)


async def heartbeat(
    connection: WebSocketConnection, interval: float, patience: float, beats: int
) -> list[float]:
    """Ping every ``interval`` seconds; fail on a pong later than ``patience``."""
    round_trips = []
    for _ in range(beats):
        with trio.fail_after(patience):  # raises trio.TooSlowError
            await connection.ping()
        rtt = connection.stats.last_ping_rtt
        assert rtt is not None
        round_trips.append(rtt)
        await trio.sleep(interval)
    return round_trips


async def quiet(request: WebSocketRequest) -> None:
    connection = await request.accept()
    async for _ in connection:
        pass


async def main() -> list[float]:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, quiet, "127.0.0.1", 0, None)
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            round_trips = await heartbeat(ws, interval=0.1, patience=5, beats=3)
        nursery.cancel_scope.cancel()
    print(" ".join(f"{rtt * 1000:.2f} ms" for rtt in round_trips))
    return round_trips


if __name__ == "__main__":
    trio.run(main)
