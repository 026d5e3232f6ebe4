"""Hostile peers against a server's limits, over real loopback sockets.

Each test puts raw peers (hand-built HTTP and frames) against our server and
checks that a limit holds while honest clients are still served: messages
in many tiny fragments, control frames under small size limits, slow
handshakes, shutdown with requests still coming, running out of file
descriptors. Every wait is bounded; deadlines run on a virtual clock.
"""

from __future__ import annotations

import math
import socket
import subprocess
import sys
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from conftest import echo_handler, server_url
from raw_http import (
    exchange,
    plain_request,
    read_until,
    send_and_read_answer,
    upgrade_request,
)
from raw_peer import (
    BINARY,
    CONT,
    PING,
    PONG,
    TEST_BOUND,
    TEXT,
    Outcome,
    frame,
    upgraded_raw_client,
)

from trio_websocket import (
    Admission,
    ConnectionClosed,
    Router,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
    static_response,
)
from trio_websocket._server import HANDSHAKE_TIMEOUT

HOST = "127.0.0.1"


async def start_recording_server(
    nursery: trio.Nursery, **options: Any
) -> tuple[int, trio.MemoryReceiveChannel[Outcome]]:
    """A server whose handler reports one message, or the close reason."""
    send, receive = trio.open_memory_channel[Outcome](math.inf)

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            send.send_nowait(await ws.get_message())
        except ConnectionClosed as exc:
            send.send_nowait(exc.reason)

    server = await nursery.start(
        partial(serve_websocket, handler, HOST, 0, None, **options)
    )
    return server.port, receive


def fragmented(opcode: int, pieces: list[bytes]) -> bytes:
    """One message as one frame per piece."""
    frames = [frame(opcode, pieces[0], fin=False)]
    frames += [frame(CONT, piece, fin=False) for piece in pieces[1:-1]]
    frames.append(frame(CONT, pieces[-1]))
    return b"".join(frames)


# -- Messages in many tiny fragments -----------------------------------------


@pytest.mark.parametrize(
    ("opcode", "message"),
    [
        pytest.param(BINARY, bytes(range(256)) * 40, id="binary"),
        # Two-byte characters split between fragments.
        pytest.param(TEXT, "é€x" * 2000, id="text"),
    ],
)
async def test_a_message_in_one_byte_fragments_arrives_intact(
    nursery: trio.Nursery, opcode: int, message: str | bytes
) -> None:
    payload = message.encode() if isinstance(message, str) else message
    port, outcomes = await start_recording_server(nursery)
    pieces = [payload[i : i + 1] for i in range(len(payload))]
    with trio.fail_after(TEST_BOUND):
        async with upgraded_raw_client(port) as peer:
            await peer.stream.send_all(fragmented(opcode, pieces))
            assert await outcomes.receive() == message


async def test_a_message_in_too_many_fragments_gets_1009(
    nursery: trio.Nursery,
) -> None:
    port, outcomes = await start_recording_server(nursery, max_message_fragments=10)
    with trio.fail_after(TEST_BOUND):
        async with upgraded_raw_client(port) as peer:
            await peer.stream.send_all(fragmented(BINARY, [b"x"] * 10))
            assert await outcomes.receive() == b"x" * 10
        async with upgraded_raw_client(port) as peer:
            # Empty frames add nothing to the size, but they count.
            await peer.stream.send_all(
                frame(BINARY, b"", fin=False) + frame(CONT, b"", fin=False) * 10
            )
            assert await peer.read_close_code(masked=False) == 1009
        reason = await outcomes.receive()
    assert reason is not None and not isinstance(reason, (str, bytes))
    assert reason.code == 1009


# -- Control frames under small size limits ----------------------------------


@pytest.mark.parametrize(
    ("options", "started"),
    [
        pytest.param(
            {"max_message_size": 100, "compression": None}, b"", id="message-limit"
        ),
        pytest.param({"max_fragment_size": 50}, b"", id="fragment-limit"),
        # The engine counts a ping against what is left of the message.
        pytest.param({"max_message_size": 200}, b"m" * 190, id="mid-message"),
    ],
)
async def test_a_125_byte_ping_is_answered_under_small_limits(
    nursery: trio.Nursery, options: dict[str, Any], started: bytes
) -> None:
    """A ping in the middle of the message ``started``, if not empty."""
    port, outcomes = await start_recording_server(nursery, **options)
    before = frame(BINARY, started, fin=False) if started else b""
    with trio.fail_after(TEST_BOUND):
        async with upgraded_raw_client(port) as peer:
            await peer.stream.send_all(before + frame(PING, b"p" * 125))
            assert await peer.read_frame(masked=False) == (PONG, b"p" * 125)
            await peer.stream.send_all(frame(CONT if started else BINARY, b"ok"))
            assert await outcomes.receive() == started + b"ok"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"max_message_size": 100}, frame(BINARY, b"x" * 101), id="msg"),
        pytest.param({"max_fragment_size": 50}, frame(BINARY, b"x" * 51), id="frame"),
    ],
)
async def test_data_frames_are_still_held_to_small_limits(
    nursery: trio.Nursery, options: dict[str, Any], message: bytes
) -> None:
    port, _ = await start_recording_server(nursery, **options)
    with trio.fail_after(TEST_BOUND):
        async with upgraded_raw_client(port) as peer:
            await peer.stream.send_all(message)
            assert await peer.read_close_code(masked=False) == 1009


# -- HEAD requests -----------------------------------------------------------


async def test_head_gets_the_headers_of_get_without_the_body(
    nursery: trio.Nursery,
) -> None:
    router = Router()
    router.http("/page", static_response(b"<p>hello</p>\n", content_type="text/html"))
    server = await nursery.start(
        partial(serve_websocket, router, HOST, 0, None, http_handler=router)
    )
    with trio.fail_after(TEST_BOUND):
        get = await exchange(server.port, plain_request("/page"))
        head = await exchange(
            server.port, plain_request("/page").replace(b"GET", b"HEAD", 1)
        )
    assert (get.status, get.body) == (200, b"<p>hello</p>\n")
    assert head.status == 200
    assert head.headers["content-length"] == "13"
    assert head.headers["content-type"] == "text/html"
    assert head.body == b""


# -- Slow handshakes ---------------------------------------------------------

PARTIAL_REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n"


async def wait_until_dropped(stream: trio.SocketStream) -> None:
    """Read until the server closes the connection (it must not answer)."""
    assert await read_until(stream, None) == b""


@pytest.mark.parametrize(
    ("options", "deadline"),
    [
        pytest.param({}, HANDSHAKE_TIMEOUT, id="default"),
        pytest.param({"handshake_timeout": 3}, 3, id="handshake_timeout"),
        pytest.param({"connect_timeout": 2}, 2, id="smaller-connect_timeout"),
    ],
)
async def test_a_request_sent_slowly_is_dropped_at_the_handshake_deadline(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    options: dict[str, Any],
    deadline: float,
) -> None:
    port, _ = await start_recording_server(nursery, **options)
    async with await trio.open_tcp_stream(HOST, port) as stream:
        start = trio.current_time()
        with trio.fail_after(deadline + 1):
            for byte in PARTIAL_REQUEST:  # a byte a second, forever
                await stream.send_all(bytes([byte]))
                with trio.move_on_after(1):
                    await wait_until_dropped(stream)
                    break
    assert trio.current_time() - start >= deadline


async def test_a_client_connects_at_once_among_200_slow_ones(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await nursery.start(serve_websocket, echo_handler, HOST, 0, None)
    slow: list[trio.SocketStream] = []
    try:
        for _ in range(200):
            slow.append(await trio.open_tcp_stream(HOST, server.port))
            await slow[-1].send_all(PARTIAL_REQUEST)
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(1):  # no waiting on any timer
            async with open_websocket_url(server_url(server)) as ws:
                await ws.send_message("hi")
                assert await ws.get_message() == "hi"
        with trio.fail_after(HANDSHAKE_TIMEOUT + 1):
            async with trio.open_nursery() as readers:
                for stream in slow:
                    readers.start_soon(wait_until_dropped, stream)
    finally:
        for stream in slow:
            await trio.aclose_forcefully(stream)


async def test_connections_wait_while_max_handshakes_are_in_progress(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await nursery.start(
        partial(
            serve_websocket,
            echo_handler,
            HOST,
            0,
            None,
            admission=Admission(max_handshakes=3),
        )
    )
    url = server_url(server)
    streams = [await trio.open_tcp_stream(HOST, server.port) for _ in range(3)]
    try:
        for stream in streams:
            await stream.send_all(PARTIAL_REQUEST)
        with trio.move_on_after(HANDSHAKE_TIMEOUT / 2) as waiting:
            async with open_websocket_url(url):
                pass
        assert waiting.cancelled_caught, "served while the handshake cap was full"
        # One slow client finishes its request: its slot goes to the next.
        await streams[0].send_all(upgrade_request()[len(b"GET / HTTP/1.1\r\n") :])
        with trio.fail_after(1):
            async with open_websocket_url(url) as ws:
                await ws.send_message("hi")
                assert await ws.get_message() == "hi"
    finally:
        for stream in streams:
            await trio.aclose_forcefully(stream)


# -- Graceful shutdown -------------------------------------------------------


async def test_clients_in_the_backlog_at_shutdown_get_503(
    nursery: trio.Nursery,
) -> None:
    server = await nursery.start(serve_websocket, echo_handler, HOST, 0, None)
    await trio.testing.wait_all_tasks_blocked()
    # Blocking connects: complete in the kernel's backlog, not yet accepted.
    sockets = [socket.create_connection((HOST, server.port)) for _ in range(5)]
    streams = [trio.SocketStream(trio.socket.from_stdlib_socket(s)) for s in sockets]
    nursery.start_soon(server.aclose)
    await trio.testing.wait_all_tasks_blocked()
    try:
        with trio.fail_after(TEST_BOUND):
            for stream in streams:
                # The request comes after the shutdown began.
                answer = await send_and_read_answer(stream, upgrade_request())
                assert answer.status == 503
    finally:
        for stream in streams:
            await trio.aclose_forcefully(stream)


# -- Out of file descriptors -------------------------------------------------

#: A server that can open ``sys.argv[1]`` more descriptors; prints its port.
LOW_LIMIT_SERVER = """
import logging, os, resource, sys, trio
from trio_websocket import serve_websocket

async def echo(request):
    ws = await request.accept()
    async for message in ws:
        await ws.send_message(message)

async def main():
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, echo, "127.0.0.1", 0, None)
        in_use = len(os.listdir("/proc/self/fd")) - 1  # listdir's own, closed
        limit = in_use + int(sys.argv[1])
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
        print(server.port, flush=True)

trio.run(main)
"""


async def echoes(ws: WebSocketConnection) -> bool:
    await ws.send_message("ping")
    return await ws.get_message() == "ping"


@pytest.mark.skipif(sys.platform != "linux", reason="counts /proc/self/fd")
async def test_out_of_descriptors_pauses_accepting_until_some_free_up() -> None:
    room = 3
    with trio.fail_after(TEST_BOUND):
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", LOW_LIMIT_SERVER, str(room)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert process.stdout is not None and process.stderr is not None
            port = int(await read_until(process.stdout, b"\n"))
            await serve_past_the_limit(f"ws://{HOST}:{port}/", room)
        finally:
            process.kill()
            await process.wait()
        log = (await read_until(process.stderr, None)).decode()
    assert log.count("WARNING cannot accept connections") == 1, log
    assert "ERROR" not in log, log
    assert "INFO accepting connections again" in log, log


async def serve_past_the_limit(url: str, room: int) -> None:
    """Fill the server's descriptors; one client more waits until one leaves."""
    late_served = trio.Event()

    async def late_client() -> None:
        async with open_websocket_url(url) as ws:
            assert await echoes(ws)
        late_served.set()

    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(open_websocket_url(url))
            for _ in range(room)
        ]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(late_client)
            await trio.sleep(0.5)  # real time: a few accept() attempts fail
            assert not late_served.is_set()
            for ws in clients:  # served all the while
                assert await echoes(ws)
            await clients[0].aclose()
    assert late_served.is_set()
