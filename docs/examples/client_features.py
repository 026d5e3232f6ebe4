"""Client features: proxies, redirects, credentials, Origin and User-Agent."""

from __future__ import annotations

import trio
from peers import connect_proxy, start_tcp_server

from trio_websocket import (
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)


async def moved(request: WebSocketRequest) -> None:
    """``/old`` has moved to ``/new``; ``/new`` says who is asking."""
    if request.path == "/old":
        await request.reject(308, extra_headers=[(b"Location", b"/new")])
        return
    connection = await request.accept()
    headers = dict(request.headers)
    await connection.send_message(
        f"{request.path} auth={headers.get(b'authorization', b'-').decode()} "
        f"origin={headers.get(b'origin', b'-').decode()}"
    )


async def through_a_proxy(url: str, proxy: str) -> str:
    async with open_websocket_url(url, proxy=proxy) as ws:
        return str(await ws.get_message())


async def follow_redirects(url: str) -> str:
    # 301, 302, 303, 307 and 308 are followed, up to max_redirects times.
    async with open_websocket_url(url, max_redirects=3) as ws:
        return str(await ws.get_message())


async def with_credentials(port: int) -> str:
    url = f"ws://alice:s3cret@127.0.0.1:{port}/new"  # sent as basic auth
    async with open_websocket_url(url, origin="https://app.example.com") as ws:
        return str(await ws.get_message())


async def main() -> list[str]:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, moved, "127.0.0.1", 0, None)
        proxy_url = (await start_tcp_server(nursery, connect_proxy)).replace(
            "ws://", "http://"
        )
        url = f"ws://127.0.0.1:{server.port}"
        results = [
            await through_a_proxy(f"{url}/new", proxy_url),
            await follow_redirects(f"{url}/old"),
            await with_credentials(server.port),
        ]
        nursery.cancel_scope.cancel()
    for result in results:
        print(result)
    return results


if __name__ == "__main__":
    trio.run(main)
