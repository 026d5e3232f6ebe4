"""The tutorial's echo server and client.

``python tutorial.py serve`` runs the server on port 8000,
``python tutorial.py client hello world`` talks to it, and
``python tutorial.py`` runs both in one process.
"""

from __future__ import annotations

import logging
import sys

import trio

from trio_websocket import (
    ConnectionClosed,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)

logger = logging.getLogger("tutorial")


# Step 1: the handler, called once per client.
async def echo_handler(request: WebSocketRequest) -> None:
    connection = await request.accept()
    logger.info("%s connected from %s", connection, connection.remote)
    try:
        while True:
            message = await connection.get_message()
            await connection.send_message(message)
    except ConnectionClosed as closed:
        logger.info("%s left: %s", connection, closed.reason)


# Step 2: serve it.
async def serve(port: int = 8000) -> None:
    await serve_websocket(echo_handler, "127.0.0.1", port, None)


# Step 3: a client that sends each message and collects the replies.
async def run_client(url: str, messages: list[str]) -> list[str]:
    replies = []
    async with open_websocket_url(url) as connection:
        for message in messages:
            await connection.send_message(message)
            reply = await connection.get_message()
            assert isinstance(reply, str)
            replies.append(reply)
    return replies


# Step 4: both in one process, the server on a free port.
async def main() -> list[str]:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            serve_websocket, echo_handler, "127.0.0.1", 0, None
        )
        url = f"ws://127.0.0.1:{server.port}/"
        replies = await run_client(url, ["hello", "trio"])
        nursery.cancel_scope.cancel()
    for reply in replies:
        print(reply)
    return replies


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    if sys.argv[1:2] == ["serve"]:
        trio.run(serve)
    elif sys.argv[1:2] == ["client"]:
        print(trio.run(run_client, "ws://127.0.0.1:8000/", sys.argv[2:]))
    else:
        trio.run(main)
