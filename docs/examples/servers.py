"""Server examples: starting, listeners (TCP and Unix), errors, plain HTTP."""

from __future__ import annotations

import os
import tempfile
from functools import partial

import trio

from trio_websocket import (
    ConnectionClosed,
    Endpoint,
    WebSocketRequest,
    WebSocketServer,
    open_websocket_url,
    serve_websocket,
    wrap_client_stream,
)


async def echo(request: WebSocketRequest) -> None:
    connection = await request.accept()
    async for message in connection:
        await connection.send_message(message)


async def start_and_stop() -> str:
    async with trio.open_nursery() as nursery:
        # nursery.start() returns once the server is listening.
        server = await nursery.start(serve_websocket, echo, "127.0.0.1", 0, None)
        url = f"ws://127.0.0.1:{server.port}/"
        async with open_websocket_url(url) as connection:
            await connection.send_message("ping?")
            reply = await connection.get_message()
        nursery.cancel_scope.cancel()  # stops the server
    return str(reply)


async def unix_socket_listener(path: str) -> trio.SocketListener:
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(path)
    sock.listen()
    return trio.SocketListener(sock)


async def tcp_and_unix(directory: str) -> tuple[list[Endpoint | str], str]:
    path = os.path.join(directory, "ws.sock")
    listeners = [
        *await trio.open_tcp_listeners(0, host="127.0.0.1"),
        await unix_socket_listener(path),
    ]
    server = WebSocketServer(echo, listeners)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        where = list(server.listeners)  # an Endpoint, then the socket's path
        # A client reaches the Unix socket through wrap_client_stream.
        stream = await trio.open_unix_socket(path)
        connection = await wrap_client_stream(nursery, stream, "localhost", "/")
        await connection.send_message("over a Unix socket")
        reply = await connection.get_message()
        await connection.aclose()
        nursery.cancel_scope.cancel()
    return where, str(reply)


async def buggy_handler(request: WebSocketRequest) -> None:
    connection = await request.accept()
    message = await connection.get_message()
    if message == "crash":
        raise RuntimeError("a bug in the handler")  # logged; client gets 1011
    await connection.send_message(message)


async def handler_errors() -> list[object]:
    outcomes: list[object] = []
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            serve_websocket, buggy_handler, "127.0.0.1", 0, None
        )
        url = f"ws://127.0.0.1:{server.port}/"
        for message in ["crash", "still serving?"]:
            async with open_websocket_url(url) as connection:
                await connection.send_message(message)
                try:
                    outcomes.append(await connection.get_message())
                except ConnectionClosed as closed:
                    assert closed.reason is not None
                    outcomes.append(closed.reason.code)
        nursery.cancel_scope.cancel()
    return outcomes


async def health_check(request: WebSocketRequest) -> None:
    if request.path == "/healthz":
        await request.reject(
            200, extra_headers=[(b"Content-Type", b"text/plain")], body=b"ok\n"
        )
    # Returning without an answer sends 404 Not Found.


async def http_get(port: int, path: str) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        request = f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"
        await stream.send_all(request.encode())
        response = b""
        while chunk := await stream.receive_some():
            response += chunk
    return response


async def plain_http() -> list[bytes]:
    async with trio.open_nursery() as nursery:
        serve = partial(serve_websocket, http_handler=health_check)
        server = await nursery.start(serve, echo, "127.0.0.1", 0, None)
        responses = [
            await http_get(server.port, "/healthz"),
            await http_get(server.port, "/elsewhere"),
        ]
        nursery.cancel_scope.cancel()
    return [response.split(b"\r\n")[0] for response in responses]


async def main() -> list[object]:
    with tempfile.TemporaryDirectory() as directory:
        results: list[object] = [
            await start_and_stop(),
            await tcp_and_unix(directory),
            await handler_errors(),
            await plain_http(),
        ]
    for result in results:
        print(result)
    return results


if __name__ == "__main__":
    trio.run(main)
