"""Recipe: a server behind a reverse proxy (nginx, Caddy, a load balancer)."""

from __future__ import annotations

import ipaddress
from functools import partial

import trio

from trio_websocket import (
    Endpoint,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)

TRUSTED_PROXIES = [ipaddress.ip_network("127.0.0.0/8")]


def client_address(request: WebSocketRequest) -> str:
    """The real client: from X-Forwarded-For, if a trusted proxy set it."""
    peer = request.remote
    if isinstance(peer, Endpoint) and any(
        peer.address in network for network in TRUSTED_PROXIES
    ):
        for name, value in request.headers:
            if name == b"x-forwarded-for":
                # The last entry is the one our own proxy added.
                return value.decode().split(",")[-1].strip()
    return str(peer.address) if isinstance(peer, Endpoint) else peer


async def who_am_i(request: WebSocketRequest) -> None:
    connection = await request.accept()
    await connection.send_message(client_address(request))


async def through_proxy(port: int) -> str:
    # What the proxy sends on: the client's address in X-Forwarded-For.
    forwarded = [(b"X-Forwarded-For", b"203.0.113.7")]
    url = f"ws://127.0.0.1:{port}/"
    async with open_websocket_url(url, extra_headers=forwarded) as ws:
        return str(await ws.get_message())


async def main() -> str:
    # Behind a proxy: listen on loopback only; the proxy speaks TLS, not us.
    serve = partial(serve_websocket, who_am_i, "127.0.0.1", 0, None)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve)
        address = await through_proxy(server.port)
        nursery.cancel_scope.cancel()
    print(address)
    return address


if __name__ == "__main__":
    trio.run(main)
