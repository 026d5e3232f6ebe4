"""A hand-driven HTTP client for server tests.

The library's own client is used wherever it can be; this one is for what
it cannot do on purpose: hold a connection without sending a request, send
the request later, complete a handshake and then never read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

HOST = "127.0.0.1"
#: Bound on the reads made while waiting for one answer.
MAX_READS = 1000
#: The sample ``Sec-WebSocket-Key`` of RFC 6455, section 1.3.
SAMPLE_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def upgrade_request(
    path: str = "/",
    headers: Iterable[tuple[str, str]] = (),
    *,
    key: bytes = SAMPLE_KEY,
    version: str = "13",
    omit: str = "",
    extra: str = "",
) -> bytes:
    """A WebSocket handshake request for ``path``, valid unless told otherwise.

    ``headers`` (name and value pairs) and ``extra`` (raw header lines, each
    ending with CRLF) follow the handshake's own fields; ``omit`` leaves out
    one of those, ``version`` is sent as ``Sec-WebSocket-Version``.
    """
    own = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key.decode(),
        "Sec-WebSocket-Version": version,
    }
    own.pop(omit, None)
    return _get(path, _header_lines([*own.items(), *headers]) + extra)


def plain_request(path: str = "/", headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """A plain ``GET`` request for ``path``, plus ``headers``."""
    return _get(path, _header_lines(headers))


def _get(path: str, header_lines: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n{header_lines}\r\n".encode()


def _header_lines(headers: Iterable[tuple[str, str]]) -> str:
    return "".join(f"{name}: {value}\r\n" for name, value in headers)


@dataclass(frozen=True)
class Answer:
    """A parsed HTTP response: status, headers (lower-case names), body."""

    status: int
    headers: dict[str, str]
    body: bytes


def parse_answer(data: bytes) -> Answer:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(status_line.split()[1]), headers, body)


async def read_until(stream: trio.abc.ReceiveStream, done: bytes | None) -> bytes:
    """Read until ``done`` appears in the data (or to the end, with None)."""
    data = bytearray()
    for _ in range(MAX_READS):
        if done is not None and done in data:
            return bytes(data)
        try:
            chunk = await stream.receive_some()
        except trio.BrokenResourceError:
            chunk = b""
        if not chunk:
            return bytes(data)
        data += chunk
    raise AssertionError("the server sent too much")


async def send_and_read_answer(stream: trio.abc.Stream, request: bytes) -> Answer:
    """Send ``request``; read the whole answer, up to the end of the stream."""
    await stream.send_all(request)
    return parse_answer(await read_until(stream, None))


async def exchange(port: int, request: bytes) -> Answer:
    """Connect, send ``request``, and return the server's complete answer."""
    async with await trio.open_tcp_stream(HOST, port) as stream:
        return await send_and_read_answer(stream, request)


async def connect(port: int, receive_buffer: int | None = None) -> trio.SocketStream:
    """A TCP connection; ``receive_buffer`` sets SO_RCVBUF before connecting."""
    sock = trio.socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, receive_buffer)
    try:
        await sock.connect((HOST, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


@asynccontextmanager
async def upgraded(
    port: int, path: str = "/", receive_buffer: int | None = None
) -> AsyncIterator[trio.SocketStream]:
    """A raw TCP client that completed a handshake; it reads nothing more."""
    async with await connect(port, receive_buffer) as stream:
        await stream.send_all(upgrade_request(path))
        head = await read_until(stream, b"\r\n\r\n")
        assert parse_answer(head).status == 101, head
        yield stream
