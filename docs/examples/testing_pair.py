"""Testing application code with open_websocket_pair: no sockets needed.

The two ``test_*`` functions are written for pytest with pytest-trio; here
``main`` runs them directly.
"""

from __future__ import annotations

import json

import trio

from trio_websocket import WebSocketConnection, open_websocket_pair


async def greeter(connection: WebSocketConnection) -> None:
    """The code under test: answer each name with a greeting."""
    async for name in connection:
        assert isinstance(name, str)
        await connection.send_message(f"hello, {name}")


async def test_greeter() -> None:
    async with open_websocket_pair() as (client, server), trio.open_nursery() as n:
        n.start_soon(greeter, server)
        await client.send_message("Ada")
        assert await client.get_message() == "hello, Ada"
        await client.aclose()  # the greeter's loop ends, and so does the nursery


async def test_pair_options() -> None:
    # Subprotocols, paths and every connection option work as over a socket.
    async with open_websocket_pair(
        path="/v1/feed", subprotocols=["json"], compression=None
    ) as (client, server):
        assert server.path == "/v1/feed"
        assert client.subprotocol == server.subprotocol == "json"
        await server.send_message(json.dumps({"ok": True}))
        assert json.loads(await client.get_message()) == {"ok": True}


async def main() -> str:
    with trio.fail_after(5):  # in a test suite, guard against a hang
        await test_greeter()
        await test_pair_options()
    print("both tests passed")
    return "both tests passed"


if __name__ == "__main__":
    trio.run(main)
