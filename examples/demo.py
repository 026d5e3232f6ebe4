"""Start the echo server and run the client against it, in one process.

This is what the README's first command runs: no second terminal needed.
"""

from __future__ import annotations

import trio
from client import talk  # type: ignore[import-not-found,unused-ignore]
from echo_server import echo  # type: ignore[import-not-found,unused-ignore]

from trio_websocket import serve_websocket


async def demo() -> None:
    """Serve on a free loopback port, talk to it, then shut the server down."""
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, echo, "127.0.0.1", 0, None)
        url = f"ws://127.0.0.1:{server.port}/"
        print(f"echo server listening on {url}")
        await talk(url, ["hello", "from", "trio-websocket"])
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(demo)
