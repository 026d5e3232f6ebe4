"""``async for message in connection``: normal and abnormal endings."""

from __future__ import annotations

import trio

from trio_websocket import (
    ConnectionClosed,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)


async def countdown(request: WebSocketRequest) -> None:
    """Send 3, 2, 1, then close normally (or with 1011 on /fail)."""
    connection = await request.accept()
    for number in (3, 2, 1):
        await connection.send_message(str(number))
    if request.path == "/fail":
        await connection.aclose(1011, "something broke")
    # Returning closes the connection with 1000.


async def receive_all(url: str) -> list[str]:
    received = []
    async with open_websocket_url(url) as ws:
        async for message in ws:  # ends quietly on a normal close
            received.append(str(message))
    return received


async def receive_all_or_error(url: str) -> str:
    try:
        messages = await receive_all(url)
    except ConnectionClosed as closed:  # an abnormal close raises
        return f"failed: {closed.reason}"
    return f"got {messages}"


async def main() -> list[str]:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, countdown, "127.0.0.1", 0, None)
        url = f"ws://127.0.0.1:{server.port}"
        results = [
            await receive_all_or_error(f"{url}/"),
            await receive_all_or_error(f"{url}/fail"),
        ]
        nursery.cancel_scope.cancel()
    for result in results:
        print(result)
    return results


if __name__ == "__main__":
    trio.run(main)
