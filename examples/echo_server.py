"""An echo server: every message a client sends comes straight back.

Run it with ``python examples/echo_server.py`` and talk to it with
``python examples/client.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging

import trio

from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

logger = logging.getLogger("echo-server")


async def echo(request: WebSocketRequest) -> None:
    """Accept the connection and echo messages until the client leaves."""
    connection = await request.accept()
    logger.info("%s connected from %s", connection, connection.remote)
    try:
        while True:
            message = await connection.get_message()
            await connection.send_message(message)
    except ConnectionClosed as closed:
        logger.info("%s left: %s", connection, closed.reason)


def main() -> None:
    """Parse the command line and serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logger.info("echo server on ws://%s:%d/", args.host, args.port)
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(serve_websocket, echo, args.host, args.port, None)


if __name__ == "__main__":
    main()
