"""Misbehaving peers for the examples: a server that never answers.

Real servers fail like this when their machine hangs or a network path
drops packets without a reset. These helpers stand in for them on loopback.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
from collections.abc import Awaitable, Callable
from functools import partial

import trio

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


async def mute(stream: trio.SocketStream) -> None:
    """Accept a TCP connection and never say anything."""
    await trio.sleep_forever()


async def silent_after_handshake(stream: trio.SocketStream) -> None:
    """Complete the WebSocket handshake, then never read or write again."""
    request = b""
    while b"\r\n\r\n" not in request:
        request += await stream.receive_some()
    found = re.search(rb"sec-websocket-key: *(\S+)", request, re.IGNORECASE)
    assert found is not None
    accept = base64.b64encode(hashlib.sha1(found.group(1) + _GUID).digest())
    await stream.send_all(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    await trio.sleep_forever()


async def start_tcp_server(
    nursery: trio.Nursery, handler: Callable[[trio.SocketStream], Awaitable[None]]
) -> str:
    """Serve ``handler`` on a free loopback port; return a ``ws://`` URL."""
    serve = partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
    listeners: list[trio.SocketListener] = await nursery.start(serve)
    port = listeners[0].socket.getsockname()[1]
    return f"ws://127.0.0.1:{port}/"


async def _pipe(source: trio.abc.Stream, sink: trio.abc.Stream) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        while data := await source.receive_some():
            await sink.send_all(data)
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await sink.aclose()


async def connect_proxy(client: trio.SocketStream) -> None:
    """A minimal HTTP CONNECT proxy: enough to show a client using one."""
    head = b""
    while b"\r\n\r\n" not in head:
        head += await client.receive_some()
    host, _, port = head.split()[1].decode().rpartition(":")
    server = await trio.open_tcp_stream(host.strip("[]"), int(port))
    await client.send_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_pipe, client, server)
        nursery.start_soon(_pipe, server, client)
