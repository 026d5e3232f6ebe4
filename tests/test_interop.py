"""Interoperability with another implementation: the ``websockets`` package.

Its asyncio client and server run in a thread of their own, with their own
event loop, and talk to ours over 127.0.0.1: text and binary messages, a
fragmented message each way, pings each way, close codes each way, with
permessage-deflate on and off on either side.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, Literal

import pytest
import trio
from conftest import server_url
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed as TheirConnectionClosed

from trio_websocket import (
    ConnectionClosed,
    WebSocketRequest,
    WebSocketServer,
    open_websocket_url,
    serve_websocket,
)

Compression = Literal["deflate"] | None
DEFLATE = ["permessage-deflate"]
TIMEOUT = 10  # seconds, real time: the other side runs in another thread

MESSAGES: list[str | bytes] = ["hello", "ünïcode ✓", b"\x00\xff" * 50]

compressions = pytest.mark.parametrize(
    ("ours", "theirs"),
    [("deflate", "deflate"), ("deflate", None), (None, "deflate"), (None, None)],
    ids=["both", "ours-only", "theirs-only", "neither"],
)


def expected_extensions(ours: Compression, theirs: Compression) -> list[str]:
    return DEFLATE if ours and theirs else []


# -- Their server, our client ------------------------------------------------


async def their_handler(
    closes: queue.Queue[tuple[int | None, str | None]], ws: ServerConnection
) -> None:
    """Their server: behaviour chosen by the request path."""
    path = ws.request.path if ws.request else "/"
    extensions = [extension.name for extension in ws.protocol.extensions]
    try:
        if path == "/info":
            await ws.send(json.dumps(extensions))
        elif path == "/fragments":
            await ws.send(["frag", "men", "ted"])
        elif path == "/ping":
            pong = await ws.ping(b"from them")
            await asyncio.wait_for(pong, TIMEOUT)
            await ws.send("pong received")
        elif path == "/close":
            await ws.close(4000, "their reason")
            return
        async for message in ws:  # then echo
            await ws.send(message)
    finally:
        closes.put((ws.close_code, ws.close_reason))


class TheirServer:
    """A ``websockets`` asyncio server in a thread with its own event loop."""

    def __init__(self, compression: Compression) -> None:
        self.compression = compression
        self.closes: queue.Queue[tuple[int | None, str | None]] = queue.Queue()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.port = 0

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        handler = partial(their_handler, self.closes)
        async with serve(
            handler, "127.0.0.1", 0, compression=self.compression
        ) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(TIMEOUT), "their server did not start"

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(TIMEOUT)
        assert not self._thread.is_alive()

    async def next_close(self) -> tuple[int | None, str | None]:
        """The close code and reason their side saw on its next connection end."""
        return await trio.to_thread.run_sync(self.closes.get, True, TIMEOUT)


@pytest.fixture
def their_server() -> Iterator[Callable[[Compression], TheirServer]]:
    started: list[TheirServer] = []

    def start(compression: Compression) -> TheirServer:
        server = TheirServer(compression)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@compressions
async def test_our_client_negotiates_compression_with_their_server(
    their_server: Callable[[Compression], TheirServer],
    ours: Compression,
    theirs: Compression,
) -> None:
    server = their_server(theirs)
    async with open_websocket_url(server.url("/info"), compression=ours) as client:
        with trio.fail_after(TIMEOUT):
            their_view = json.loads(await client.get_message())
    assert client.extensions == expected_extensions(ours, theirs)
    assert their_view == expected_extensions(ours, theirs)


@compressions
async def test_our_client_exchanges_messages_with_their_server(
    their_server: Callable[[Compression], TheirServer],
    ours: Compression,
    theirs: Compression,
) -> None:
    server = their_server(theirs)
    big_text = json.dumps([{"key": index, "value": "x" * 20} for index in range(500)])
    async with open_websocket_url(server.url("/echo"), compression=ours) as client:
        with trio.fail_after(TIMEOUT):
            for message in [*MESSAGES, big_text]:
                await client.send_message(message)
                assert await client.get_message() == message
            # Our fragmented message, which they reassemble and echo whole.
            await client.send_fragments([b"one ", b"two ", b"three"])
            assert await client.get_message() == b"one two three"
            await client.send_message(b"uncompressed", compress=False)
            assert await client.get_message() == b"uncompressed"


@compressions
async def test_our_client_receives_their_fragmented_message(
    their_server: Callable[[Compression], TheirServer],
    ours: Compression,
    theirs: Compression,
) -> None:
    server = their_server(theirs)
    url = server.url("/fragments")
    async with open_websocket_url(url, compression=ours) as client:
        with trio.fail_after(TIMEOUT):
            pieces = [piece async for piece in client.get_fragments()]
    assert pieces == ["frag", "men", "ted"]


async def test_pings_between_our_client_and_their_server(
    their_server: Callable[[Compression], TheirServer],
) -> None:
    server = their_server("deflate")
    async with open_websocket_url(server.url("/ping")) as client:
        with trio.fail_after(TIMEOUT):
            # Their ping, answered by our reader.
            assert await client.get_message() == "pong received"
            # Our ping, answered by them.
            await client.ping(b"from us")
            await client.ping()


async def test_close_codes_between_our_client_and_their_server(
    their_server: Callable[[Compression], TheirServer],
) -> None:
    server = their_server("deflate")
    async with open_websocket_url(server.url("/close")) as client:
        with trio.fail_after(TIMEOUT), pytest.raises(ConnectionClosed) as closed:
            await client.get_message()
    assert closed.value.reason is not None
    assert closed.value.reason.code == 4000
    assert closed.value.reason.reason == "their reason"
    assert await server.next_close() == (4000, "their reason")

    async with open_websocket_url(server.url("/echo")) as client:
        await client.aclose(4001, "our reason")
    assert await server.next_close() == (4001, "our reason")


# -- Their client, our server ------------------------------------------------


async def their_client_session(url: str, compression: Compression) -> dict[str, Any]:
    """Their client's side of a conversation with our server (see ``our_handler``)."""
    report: dict[str, Any] = {}
    async with connect(url, compression=compression) as ws:
        report["extensions"] = [extension.name for extension in ws.protocol.extensions]
        echoes = []
        for message in [*MESSAGES, "x" * 5000]:
            await ws.send(message)
            echoes.append(await ws.recv() == message)
        report["echoes"] = echoes
        await ws.send(["frag", "men", "ted"])
        report["fragments seen by the server"] = await ws.recv()
        pong = await ws.ping(b"from them")
        await asyncio.wait_for(pong, TIMEOUT)
        await ws.send("ping me")
        report["after our ping"] = await ws.recv()
        await ws.send("send fragments")
        report["our fragmented message"] = await ws.recv()
        await ws.send("close please")
        try:
            await ws.recv()
        except TheirConnectionClosed as exc:
            report["close"] = [exc.rcvd.code, exc.rcvd.reason] if exc.rcvd else None
    return report


def run_their_client(url: str, compression: Compression) -> dict[str, Any]:
    async def bounded() -> dict[str, Any]:
        return await asyncio.wait_for(their_client_session(url, compression), TIMEOUT)

    return asyncio.run(bounded())


class OurServerLog:
    """What our server's handler saw: the extensions, then the close code."""

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.closed = trio.Event()


async def our_handler(log: OurServerLog, request: WebSocketRequest) -> None:
    """Our server: answers the requests of ``their_client_session``."""
    connection = await request.accept()
    log.seen.append(connection.extensions)
    try:
        while True:
            pieces = [piece async for piece in connection.get_fragments()]
            message = pieces[0] if len(pieces) == 1 else None
            if message == "ping me":
                await connection.ping(b"from us")
                await connection.send_message("ping answered")
            elif message == "send fragments":
                await connection.send_fragments(["a", "b", "c"])
            elif message == "close please":
                await connection.aclose(4002, "as requested")
            elif message is None:
                await connection.send_message(json.dumps(pieces))
            else:
                await connection.send_message(message)
    except ConnectionClosed as exc:
        log.seen.append(exc.reason.code if exc.reason else None)
        log.closed.set()


async def serve_ours(
    nursery: trio.Nursery, compression: Compression, log: OurServerLog
) -> str:
    server: WebSocketServer = await nursery.start(
        partial(
            serve_websocket,
            partial(our_handler, log),
            "127.0.0.1",
            0,
            None,
            compression=compression,
        )
    )
    return server_url(server)


@compressions
async def test_their_client_with_our_server(
    nursery: trio.Nursery, ours: Compression, theirs: Compression
) -> None:
    log = OurServerLog()
    url = await serve_ours(nursery, ours, log)
    report = await trio.to_thread.run_sync(run_their_client, url, theirs)
    assert report == {
        "extensions": expected_extensions(ours, theirs),
        "echoes": [True, True, True, True],
        "fragments seen by the server": json.dumps(["frag", "men", "ted"]),
        "after our ping": "ping answered",
        "our fragmented message": "abc",
        "close": [4002, "as requested"],
    }
    with trio.fail_after(TIMEOUT):
        await log.closed.wait()
    assert log.seen == [expected_extensions(ours, theirs), 4002]


async def test_their_client_close_code_reaches_our_server(
    nursery: trio.Nursery,
) -> None:
    log = OurServerLog()
    url = await serve_ours(nursery, "deflate", log)

    async def session() -> None:
        async with connect(url) as ws:
            await ws.close(4003, "their goodbye")

    def run() -> None:
        asyncio.run(asyncio.wait_for(session(), TIMEOUT))

    await trio.to_thread.run_sync(run)
    with trio.fail_after(TIMEOUT):
        await log.closed.wait()
    assert log.seen == [DEFLATE, 4003]
