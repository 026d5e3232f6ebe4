"""Hostile peers over real loopback sockets: the proof that nothing leaks.

Raw peers (hand-built HTTP and frames; the frame helpers come from
``raw_peer``) hang up at every stage of the handshake and of a message,
never read what they are sent, inflate a small compressed frame past the
message limit, or flood pings without reading the pongs. Against our echo
server and our client, over TCP, TLS and IPv6, every test checks that:

- tasks and file descriptors come back to what they were before a bounded
  batch of attacks (counts settle within a bounded wait);
- the process under attack buffers a bounded amount: what a peer sends
  faster than we handle stays in the kernel, because we stop reading
  (TCP backpressure), checked through ``connection.stats`` or tracemalloc;
- the server still serves a normal client afterwards, or even during;
- nothing is logged at ERROR.

Every loop is bounded in count and every wait in time; no test asserts a
duration or a speed.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import socket
import ssl
import struct
import tracemalloc
import weakref
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
import trio
from conftest import echo_handler, needs_ipv6
from raw_http import MAX_READS, upgrade_request
from raw_peer import (
    BINARY,
    CLOSE,
    CONT,
    PING,
    TEXT,
    close_payload,
    frame,
    no_errors_logged,  # noqa: F401  (an autouse fixture)
    status_of,
    upgrade_response,
)

from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketServer,
    open_websocket_url,
    serve_websocket,
)

#: Bound on every test's duration: a bug fails, never hangs.
TEST_BOUND = 30
#: Attacks per stage and transport.
BATCH = 20
#: Bounded wait for task and descriptor counts to come back: steps of 20 ms.
SETTLE_STEPS = 250
#: A flood is taken as stuck when neither the sender nor the server made
#: progress for this many checks this many seconds apart. Too short only ends
#: a flood early (the bounds checked then still hold); too long only slows a
#: test down.
BLOCKED_AFTER, STALLED_CHECKS = 0.5, 2


# -- What the process holds ---------------------------------------------------


def count_tasks() -> int:
    """Every task of this Trio run: the root task and its descendants."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    count, todo = 0, [root]
    while todo:
        task = todo.pop()
        count += 1
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return count


def count_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@dataclass(frozen=True)
class Snapshot:
    tasks: int
    fds: int

    @classmethod
    def take(cls) -> Snapshot:
        return cls(count_tasks(), count_fds())

    def within(self, baseline: Snapshot) -> bool:
        return self.tasks <= baseline.tasks and self.fds <= baseline.fds


async def settled(baseline: Snapshot) -> Snapshot:
    """The counts once they are back to ``baseline``, or after a bounded wait."""
    for _ in range(SETTLE_STEPS):
        now = Snapshot.take()
        if now.within(baseline):
            return now
        await trio.sleep(0.02)
    return Snapshot.take()


# -- Transports ---------------------------------------------------------------


@dataclass(frozen=True)
class Transport:
    """Where and how to connect: an address, and TLS or not."""

    host: str
    server_ssl: ssl.SSLContext | None
    client_ssl: ssl.SSLContext | None

    def url(self, port: int, resource: str = "/") -> str:
        scheme = "ws" if self.client_ssl is None else "wss"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{port}{resource}"


@pytest.fixture(params=["tcp", "tls", pytest.param("ipv6", marks=needs_ipv6)])
def transport(
    request: pytest.FixtureRequest,
    server_ssl_context: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
) -> Transport:
    if request.param == "tls":
        return Transport("127.0.0.1", server_ssl_context, client_ssl_context)
    if request.param == "ipv6":
        return Transport("::1", None, None)
    return Transport("127.0.0.1", None, None)


async def start_echo_server(
    nursery: trio.Nursery, transport: Transport, **kwargs: object
) -> WebSocketServer:
    server: WebSocketServer = await nursery.start(
        partial(
            serve_websocket,
            echo_handler,
            transport.host,
            0,
            transport.server_ssl,
            **kwargs,  # type: ignore[arg-type]
        )
    )
    return server


async def serves_a_normal_client(transport: Transport, port: int) -> None:
    async with open_websocket_url(transport.url(port), transport.client_ssl) as ws:
        await ws.send_message("still here")
        assert await ws.get_message() == "still here"


async def connect_raw(
    transport: Transport,
    port: int,
    *,
    handshake: bool = True,
) -> trio.abc.Stream:
    """A TCP connection to ``port``, and its TLS handshake when there is TLS."""
    tcp = await trio.open_tcp_stream(transport.host, port)
    if transport.client_ssl is None or not handshake:
        return tcp
    tls = trio.SSLStream(tcp, transport.client_ssl, server_hostname=transport.host)
    try:
        await tls.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(tcp)
        raise
    return tls


def tcp_of(stream: trio.abc.Stream) -> trio.SocketStream:
    tcp = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    assert isinstance(tcp, trio.SocketStream)
    return tcp


async def hang_up(stream: trio.abc.Stream, *, reset: bool) -> None:
    """Close the TCP connection at once: FIN, or RST when ``reset``.

    Over TLS, without a close_notify: the peer sees a truncated stream.
    """
    tcp = tcp_of(stream)
    if reset:
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await trio.aclose_forcefully(tcp)


async def read_head(stream: trio.abc.Stream) -> bytes:
    """Read an HTTP head up to its blank line (nothing is sent after it)."""
    data = b""
    for _ in range(MAX_READS):
        if b"\r\n\r\n" in data:
            return data
        chunk = await stream.receive_some()
        if not chunk:
            raise EOFError(f"end of stream; received {data!r}")
        data += chunk
    raise AssertionError("the head never ended")


# -- Our server: a client hangs up at every stage -----------------------------

REQUEST = upgrade_request(path="/attack")
#: What a raw client sends after its handshake, before hanging up.
AFTER_UPGRADE = {
    "after-101": b"",
    "mid-frame-header": frame(BINARY, b"x" * 300)[:3],
    "mid-payload": frame(BINARY, b"x" * 3000)[:1500],
    "mid-fragmented-message": frame(TEXT, b"first ", fin=False)
    + frame(CONT, b"second ", fin=False),
    "after-close": frame(CLOSE, close_payload(1000, b"bye")),
}
BEFORE_UPGRADE = {
    "after-connect": b"",
    "mid-request-line": REQUEST[:7],
    "mid-headers": REQUEST[: len(REQUEST) // 2],
    "after-request": REQUEST,
}
SERVER_STAGES = [*BEFORE_UPGRADE, *AFTER_UPGRADE]


async def hang_up_on_server(
    transport: Transport, port: int, stage: str, reset: bool
) -> None:
    stream = await connect_raw(transport, port)
    try:
        if stage in BEFORE_UPGRADE:
            await stream.send_all(BEFORE_UPGRADE[stage])
        else:
            await stream.send_all(REQUEST)
            assert status_of(await read_head(stream)) == 101
            await stream.send_all(AFTER_UPGRADE[stage])
    finally:
        await hang_up(stream, reset=reset)


async def hang_up_mid_tls_handshake(
    transport: Transport, port: int, stage: str, reset: bool
) -> None:
    stream = await connect_raw(transport, port, handshake=False)
    # The first bytes of a TLS ClientHello record.
    await stream.send_all(b"\x16\x03\x01\x02\x00\x01\x00\x01")
    await hang_up(stream, reset=reset)


ServerAttack = Callable[[Transport, int, str, bool], Awaitable[None]]


async def assert_server_keeps_nothing(
    nursery: trio.Nursery, transport: Transport, attack: ServerAttack, stage: str
) -> None:
    """A batch of clients runs ``attack``; the server is back where it was."""
    server = await start_echo_server(nursery, transport)
    with trio.fail_after(TEST_BOUND):
        await serves_a_normal_client(transport, server.port)  # warm up
        before = await settled(Snapshot.take())
        async with trio.open_nursery() as attackers:
            for number in range(BATCH):
                # Half hang up with FIN, half with RST.
                attackers.start_soon(
                    attack, transport, server.port, stage, number % 2 == 1
                )
        after = await settled(before)
        assert after.tasks <= before.tasks, "tasks left behind"
        assert after.fds <= before.fds, "descriptors left behind"
        assert server.connections == []
        await serves_a_normal_client(transport, server.port)


@pytest.mark.parametrize("stage", SERVER_STAGES)
async def test_server_keeps_nothing_of_clients_that_hang_up(
    nursery: trio.Nursery, transport: Transport, stage: str
) -> None:
    await assert_server_keeps_nothing(nursery, transport, hang_up_on_server, stage)


async def test_server_keeps_nothing_of_clients_that_hang_up_mid_tls_handshake(
    nursery: trio.Nursery,
    server_ssl_context: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
) -> None:
    transport = Transport("127.0.0.1", server_ssl_context, client_ssl_context)
    await assert_server_keeps_nothing(
        nursery, transport, hang_up_mid_tls_handshake, "mid-tls-handshake"
    )


# -- Our client: a server hangs up at every stage -----------------------------

RawBehaviour = Callable[[trio.abc.Stream], Awaitable[None]]


async def start_raw_server(
    nursery: trio.Nursery, transport: Transport, behaviour: RawBehaviour
) -> int:
    """Serve ``behaviour`` (over TLS if the transport has it); return the port."""

    async def serve(stream: trio.abc.Stream) -> None:
        try:
            await behaviour(stream)
        except (trio.BrokenResourceError, EOFError):
            pass  # the client left first
        finally:
            await hang_up(stream, reset=False)

    listeners: list[trio.abc.Listener[Any]]
    if transport.server_ssl is None:
        listeners = await nursery.start(
            partial(trio.serve_tcp, serve, 0, host=transport.host)
        )
    else:
        listeners = await nursery.start(
            partial(
                trio.serve_ssl_over_tcp,
                serve,
                0,
                transport.server_ssl,
                host=transport.host,
            )
        )
    port: int = tcp_listener_port(listeners[0])
    return port


def tcp_listener_port(listener: object) -> int:
    if isinstance(listener, trio.SSLListener):
        listener = listener.transport_listener
    assert isinstance(listener, trio.SocketListener)
    port: int = listener.socket.getsockname()[1]
    return port


#: What a raw server sends after its 101, before hanging up (frames unmasked).
SERVER_AFTER_UPGRADE = {
    "after-101": b"",
    "mid-frame-header": frame(BINARY, b"x" * 300, masked=False)[:3],
    "mid-payload": frame(BINARY, b"x" * 3000, masked=False)[:1500],
    "mid-fragmented-message": frame(TEXT, b"first ", fin=False, masked=False)
    + frame(CONT, b"second ", fin=False, masked=False),
    "after-close": frame(CLOSE, close_payload(1000, b"bye"), masked=False),
}
CLIENT_STAGES = [
    "after-connect",
    "after-request",
    "mid-status-line",
    "mid-headers",
    *SERVER_AFTER_UPGRADE,
]


async def hang_up_on_client(stage: str, stream: trio.abc.Stream) -> None:
    if stage == "after-connect":
        return
    head = await read_head(stream)
    response = upgrade_response(head)
    if stage == "mid-status-line":
        await stream.send_all(response[:11])
    elif stage == "mid-headers":
        await stream.send_all(response[: len(response) // 2])
    elif stage != "after-request":
        await stream.send_all(response + SERVER_AFTER_UPGRADE[stage])


async def client_outcome(transport: Transport, port: int) -> str:
    """Connect, read one message; what ended it."""
    try:
        async with open_websocket_url(transport.url(port), transport.client_ssl) as ws:
            await ws.get_message()
    except HandshakeError:
        return "handshake error"
    except ConnectionClosed:
        return "closed"
    return "message"  # pragma: no cover (a failure)


@pytest.mark.parametrize("stage", CLIENT_STAGES)
async def test_client_keeps_nothing_of_servers_that_hang_up(
    nursery: trio.Nursery, transport: Transport, stage: str
) -> None:
    port = await start_raw_server(nursery, transport, partial(hang_up_on_client, stage))
    expected = "closed" if stage in SERVER_AFTER_UPGRADE else "handshake error"
    outcomes: list[str] = []

    async def one_client() -> None:
        outcomes.append(await client_outcome(transport, port))

    with trio.fail_after(TEST_BOUND):
        before = await settled(Snapshot.take())
        async with trio.open_nursery() as clients:
            for _ in range(BATCH):
                clients.start_soon(one_client)
        after = await settled(before)
    assert outcomes == [expected] * BATCH
    assert after.tasks <= before.tasks, "tasks left behind"
    assert after.fds <= before.fds, "descriptors left behind"


async def flood_until_stalled(
    nursery: trio.Nursery,
    send: Callable[[], Awaitable[None]],
    limit: int,
    server: WebSocketServer,
) -> int:
    """Start calling ``send`` up to ``limit`` times; return once it is stuck.

    Stuck means that for ``STALLED_CHECKS`` intervals in a row, neither did a
    call complete nor did the server read anything (its connections'
    ``wire_bytes_received``): it has stopped reading. The sender stays stuck
    in ``nursery`` (cancel it to end the flood): a cancelled write would
    break the stream. Returns the number of calls that completed.
    """
    done = 0

    async def flood() -> None:
        nonlocal done
        for _ in range(limit):
            await send()
            done += 1

    def progress() -> tuple[int, list[int]]:
        return done, [c.stats.wire_bytes_received for c in server.connections]

    nursery.start_soon(flood)
    last, still = progress(), 0
    for _ in range(limit * STALLED_CHECKS + 1):
        await trio.sleep(BLOCKED_AFTER)
        now = progress()
        still = still + 1 if now == last else 0
        if still == STALLED_CHECKS:
            return done
        assert done < limit, "the peer took the whole flood"
        last = now
    raise AssertionError("unreachable")  # pragma: no cover


# -- A reader that never reads ------------------------------------------------

FLOOD_SIZE = 64 * 2**10
#: Bound on a flood: far more than loopback's kernel buffers can hold.
FLOOD_MESSAGES = 4000


@pytest.mark.parametrize("transport", ["tcp", "tls"], indirect=True)
async def test_server_buffers_little_for_a_client_that_never_reads(
    nursery: trio.Nursery, transport: Transport
) -> None:
    server = await start_echo_server(nursery, transport)
    message = os.urandom(FLOOD_SIZE)
    with trio.fail_after(TEST_BOUND), trio.CancelScope() as flood:
        async with (
            open_websocket_url(
                transport.url(server.port), transport.client_ssl, compression=None
            ) as ws,
            trio.open_nursery() as sending,
        ):
            await flood_until_stalled(
                sending, partial(ws.send_message, message), FLOOD_MESSAGES, server
            )
            (connection,) = server.connections
            stats = connection.stats
            # Of what it has read, the server holds one message in the
            # echo handler (blocked in send_message), one in the queue
            # (message_queue_size=1) and the reader part of the next one:
            # all the rest of the flood waits in the kernel (which, with
            # small socket buffers, may hold only the message being sent).
            assert stats.messages_received - stats.messages_sent <= 2
            assert stats.queue_depth <= 1
            assert stats.queued_bytes <= FLOOD_SIZE
            wire_size = FLOOD_SIZE + 14  # masked, with a 64-bit length
            assert stats.wire_bytes_received < (
                (stats.messages_received + 1) * wire_size
            )
            # Others are served while this client stays stuck.
            await serves_a_normal_client(transport, server.port)
            flood.cancel()  # leave without the closing handshake


# -- A decompression bomb -----------------------------------------------------

BOMB_LIMIT = 2**20  # the server's default max_message_size
BOMB_SIZE = 64 * BOMB_LIMIT
OFFER = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"


@functools.cache
def bomb() -> bytes:
    """64 MiB of zeros deflated (12-bit window, as negotiated) to 64 KiB."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -12)
    chunk = bytes(2**20)
    data = b"".join(compressor.compress(chunk) for _ in range(BOMB_SIZE // 2**20))
    data += compressor.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(b"\x00\x00\xff\xff")
    return data[:-4]


def bomb_frames(fragmented: bool) -> bytes:
    data = bomb()
    if not fragmented:
        return frame(BINARY, data, rsv=0b100)
    # Each fragment inflates to a part of the message only: the limit is
    # on the message, not the frame.
    step = 2**10
    pieces = [data[i : i + step] for i in range(0, len(data), step)]
    frames = [frame(BINARY, pieces[0], fin=False, rsv=0b100)]
    frames += [frame(CONT, piece, fin=False) for piece in pieces[1:-1]]
    frames.append(frame(CONT, pieces[-1]))
    return b"".join(frames)


async def read_frame(stream: trio.abc.Stream, buffer: bytearray) -> tuple[int, bytes]:
    """One unmasked frame from the server (buffer keeps what follows it)."""

    async def need(size: int) -> None:
        for _ in range(MAX_READS):
            if len(buffer) >= size:
                return
            chunk = await stream.receive_some()
            if not chunk:
                raise EOFError(f"end of stream; received {bytes(buffer)!r}")
            buffer.extend(chunk)
        raise AssertionError("the frame never ended")

    await need(2)
    opcode, size, start = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
    assert not buffer[1] & 0x80, "a server frame is masked"
    if size == 126:
        await need(4)
        (size,) = struct.unpack("!H", buffer[2:4])
        start = 4
    elif size == 127:
        await need(10)
        (size,) = struct.unpack("!Q", buffer[2:10])
        start = 10
    await need(start + size)
    payload = bytes(buffer[start : start + size])
    del buffer[: start + size]
    return opcode, payload


async def send_ignoring_hang_up(stream: trio.abc.Stream, data: bytes) -> None:
    with contextlib.suppress(trio.BrokenResourceError):
        await stream.send_all(data)


@pytest.mark.parametrize("fragmented", [False, True], ids=["frame", "fragments"])
@pytest.mark.parametrize("transport", ["tcp", "tls"], indirect=True)
async def test_server_refuses_a_decompression_bomb_with_1009(
    nursery: trio.Nursery, transport: Transport, fragmented: bool
) -> None:
    server = await start_echo_server(nursery, transport)
    attack = bomb_frames(fragmented)
    assert len(attack) < BOMB_SIZE // 256
    with trio.fail_after(TEST_BOUND):
        stream = await connect_raw(transport, server.port)
        try:
            await stream.send_all(upgrade_request(path="/bomb", extra=OFFER))
            head = await read_head(stream)
            assert status_of(head) == 101
            assert b"permessage-deflate" in head.lower()
            tracemalloc.start()
            try:
                tracemalloc.reset_peak()
                async with trio.open_nursery() as sending:
                    # The server may fail the connection before it has all.
                    sending.start_soon(send_ignoring_hang_up, stream, attack)
                    opcode, payload = await read_frame(stream, bytearray())
                    sending.cancel_scope.cancel()
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
        finally:
            await hang_up(stream, reset=False)
        assert opcode == CLOSE
        assert struct.unpack("!H", payload[:2])[0] == 1009
        # A few times the limit at most, far from the 64 MiB inflated.
        assert peak < 4 * BOMB_LIMIT, f"peak {peak} bytes"
        await serves_a_normal_client(transport, server.port)


# -- A ping flood -------------------------------------------------------------

PING_PAYLOAD = b"p" * 125  # the largest a control frame may carry
PINGS_PER_SEND = 100
#: Bound on a flood: 40 MB of pings, far more than the kernel buffers hold.
MAX_PINGS = 300_000


@pytest.mark.parametrize("transport", ["tcp", "tls"], indirect=True)
async def test_server_stops_reading_pings_it_cannot_answer(
    nursery: trio.Nursery, transport: Transport
) -> None:
    server = await start_echo_server(nursery, transport)
    pings = b"".join(frame(PING, PING_PAYLOAD) for _ in range(PINGS_PER_SEND))
    ping_size = len(pings) // PINGS_PER_SEND
    pong_size = 2 + len(PING_PAYLOAD)
    with trio.fail_after(TEST_BOUND):
        baseline = await settled(Snapshot.take())
        stream = await connect_raw(transport, server.port)
        try:
            await stream.send_all(REQUEST)
            assert status_of(await read_head(stream)) == 101
            async with trio.open_nursery() as sending:
                sent = PINGS_PER_SEND * await flood_until_stalled(
                    sending,
                    partial(stream.send_all, pings),
                    MAX_PINGS // PINGS_PER_SEND,
                    server,
                )
                (connection,) = server.connections
                stats = connection.stats
                pings_read = stats.wire_bytes_received // ping_size
                pongs_written = stats.wire_bytes_sent // pong_size
                assert pings_read < sent  # the rest waits in the kernel
                # The pongs the server owes but has not written (or is writing)
                # are those of about one read (4 KiB, 31 pings).
                assert pings_read - pongs_written <= 64
                await serves_a_normal_client(transport, server.port)
                sending.cancel_scope.cancel()
        finally:
            await hang_up(stream, reset=True)
        after = await settled(baseline)
    assert after.within(baseline), f"{after} after the flood, {baseline} before"
    assert server.connections == []


# -- What a closed connection keeps -------------------------------------------


async def test_a_closed_connection_is_freed_without_the_garbage_collector(
    nursery: trio.Nursery,
) -> None:
    transport = Transport("127.0.0.1", None, None)
    server = await start_echo_server(nursery, transport)
    gc.collect()
    gc.disable()
    try:
        with trio.fail_after(TEST_BOUND):
            baseline = await settled(Snapshot.take())
            async with open_websocket_url(transport.url(server.port)) as ws:
                await ws.send_message("hello")
                assert await ws.get_message() == "hello"
                (connection,) = server.connections
                client, served = weakref.ref(ws), weakref.ref(connection)
                del connection
            del ws
            assert (await settled(baseline)).within(baseline)
        assert client() is None, "the closed client connection is alive"
        assert served() is None, "the closed server connection is alive"
    finally:
        gc.enable()
