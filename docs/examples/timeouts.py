"""Connect and disconnect timeouts against servers that never answer."""

from __future__ import annotations

import trio
from peers import mute, silent_after_handshake, start_tcp_server

from trio_websocket import (
    ConnectionTimeout,
    DisconnectionTimeout,
    connect_websocket_url,
    open_websocket_url,
)


async def connect_with_timeout(url: str) -> str:
    try:
        async with open_websocket_url(url, connect_timeout=5) as connection:
            await connection.send_message("hello")
    except ConnectionTimeout:
        return "the server did not complete the handshake within 5 s"
    return "connected"


async def disconnect_with_timeout(url: str) -> str:
    try:
        async with open_websocket_url(url, disconnect_timeout=2) as connection:
            await connection.send_message("bye")
        # Leaving the block sends a close frame and waits for the answer.
    except DisconnectionTimeout:
        return "no closing handshake within 2 s: the connection was dropped"
    return "closed cleanly"


async def connect_websocket_timeout(url: str) -> str:
    # connect_websocket*() has no timeout of its own: add one with Trio.
    async with trio.open_nursery() as nursery:
        with trio.move_on_after(5):
            connection = await connect_websocket_url(nursery, url)
            await connection.aclose()
            return "connected"
    return "gave up after 5 s"


async def main() -> list[str]:
    async with trio.open_nursery() as nursery:
        mute_url = await start_tcp_server(nursery, mute)
        silent_url = await start_tcp_server(nursery, silent_after_handshake)
        results = [
            await connect_with_timeout(mute_url),
            await disconnect_with_timeout(silent_url),
            await connect_websocket_timeout(mute_url),
        ]
        nursery.cancel_scope.cancel()
    for result in results:
        print(result)
    return results


if __name__ == "__main__":
    trio.run(main)
