"""Client examples: every way to open a connection, TLS, and errors."""

from __future__ import annotations

import ssl

import trio

from trio_websocket import (
    ConnectionRejected,
    ConnectionTimeout,
    HandshakeError,
    WebSocketRequest,
    connect_websocket_url,
    open_websocket,
    open_websocket_url,
    serve_websocket,
    wrap_client_stream,
)


async def by_url(url: str) -> tuple[str | None, str]:
    async with open_websocket_url(
        url,
        subprotocols=["chat.v2", "chat.v1"],  # in order of preference
        extra_headers=[(b"Authorization", b"Bearer s3cret")],
    ) as connection:
        await connection.send_message("hi")
        reply = await connection.get_message()
        return connection.subprotocol, str(reply)


async def by_host(port: int) -> str:
    async with open_websocket(
        "127.0.0.1", port, "/prices?symbol=TRIO", use_ssl=False
    ) as connection:
        await connection.send_message("hi")
        return str(await connection.get_message())


async def in_my_nursery(url: str) -> str:
    async with trio.open_nursery() as nursery:
        connection = await connect_websocket_url(nursery, url)
        try:
            await connection.send_message("hi")
            return str(await connection.get_message())
        finally:
            await connection.aclose()


async def over_a_stream(port: int) -> str:
    async with trio.open_nursery() as nursery:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        connection = await wrap_client_stream(
            nursery, stream, host=f"127.0.0.1:{port}", resource="/"
        )
        try:
            await connection.send_message("hi")
            return str(await connection.get_message())
        finally:
            await connection.aclose()


def client_tls_context(cafile: str) -> ssl.SSLContext:
    # Trust a private certificate authority, e.g. for a staging server.
    return ssl.create_default_context(cafile=cafile)


async def over_tls(url: str, context: ssl.SSLContext) -> str:
    async with open_websocket_url(url, context) as connection:
        await connection.send_message("hi")
        return str(await connection.get_message())


async def try_to_connect(url: str) -> str:
    try:
        async with open_websocket_url(url, connect_timeout=5) as connection:
            await connection.send_message("hi")
            return f"answered: {await connection.get_message()!r}"
    except ConnectionRejected as rejected:
        return f"rejected with HTTP {rejected.status_code}: {rejected.body!r}"
    except ConnectionTimeout:
        return "timed out"
    except HandshakeError as error:
        if isinstance(error.__cause__, OSError):  # DNS failure, refused, ...
            return f"could not connect: {error.__cause__.strerror or error}"
        return f"handshake failed: {error}"  # not a WebSocket server, bad TLS


async def demo_handler(request: WebSocketRequest) -> None:
    """Refuse ``/forbidden``; elsewhere accept and echo every message."""
    if request.path == "/forbidden":
        await request.reject(403, body=b"no entry")
        return
    offered = request.proposed_subprotocols
    connection = await request.accept(subprotocol=offered[0] if offered else None)
    async for message in connection:
        await connection.send_message(message)


async def main() -> list[object]:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            serve_websocket, demo_handler, "127.0.0.1", 0, None
        )
        url = f"ws://127.0.0.1:{server.port}"
        results: list[object] = [
            await by_url(url),
            await by_host(server.port),
            await in_my_nursery(url),
            await over_a_stream(server.port),
            await try_to_connect(f"{url}/forbidden"),
        ]
        nursery.cancel_scope.cancel()
    for result in results:
        print(result)
    return results


if __name__ == "__main__":
    trio.run(main)
