"""Server features: routing, admission, broadcast, graceful shutdown."""

from __future__ import annotations

from functools import partial

import trio

from trio_websocket import (
    Admission,
    ConnectionRejected,
    Router,
    WebSocketRequest,
    WebSocketServer,
    broadcast,
    open_websocket_url,
    serve_websocket,
    static_response,
)


async def feed(request: WebSocketRequest) -> None:
    connection = await request.accept()
    await connection.send_message(f"welcome to {request.path_params['name']}")
    async for _ in connection:
        pass


def make_router() -> Router:
    router = Router()
    router.route("/feed/{name}", feed)  # WebSocket upgrades
    router.http("/healthz", static_response(b"ok\n"))  # plain HTTP
    return router


admission = Admission(
    origins={"https://app.example.com", None},  # None: clients without Origin
    basic_auth={"alice": "s3cret"},
    max_connections=1000,
)


async def start(nursery: trio.Nursery) -> WebSocketServer:
    router = make_router()
    serve = partial(serve_websocket, http_handler=router, admission=admission)
    server: WebSocketServer = await nursery.start(serve, router, "127.0.0.1", 0, None)
    return server


async def refused_origin(port: int) -> int:
    url = f"ws://alice:s3cret@127.0.0.1:{port}/feed/prices"
    try:
        async with open_websocket_url(url, origin="https://evil.example"):
            pass
    except ConnectionRejected as rejected:
        return rejected.status_code  # 403
    raise AssertionError("the origin was admitted")


async def subscriber(url: str, ready: trio.Event, got: list[str]) -> None:
    async with open_websocket_url(url) as ws:
        got.append(str(await ws.get_message()))  # the welcome
        ready.set()
        async for message in ws:  # ends quietly at the server's 1001
            got.append(str(message))
        got.append(f"closed: {ws.closed}")


async def main() -> list[object]:
    got: list[str] = []
    async with trio.open_nursery() as nursery:
        server = await start(nursery)
        status = await refused_origin(server.port)
        url = f"ws://alice:s3cret@127.0.0.1:{server.port}/feed/prices"
        ready = trio.Event()
        nursery.start_soon(subscriber, url, ready, got)
        await ready.wait()
        # One message to every open connection, framed once, never blocked
        # by a slow receiver.
        async with trio.open_nursery() as writes:
            result = await broadcast(writes, server.connections, "TRIO 101.5")
        await server.aclose()  # 1001 to everyone, then serve_websocket returns
    print(status, len(result.started), got)
    return [status, len(result.started), got]


if __name__ == "__main__":
    trio.run(main)
