"""Observability: per-connection stats and log lines with connection ids."""

from __future__ import annotations

import logging
import math
import os
import struct

import pytest
import trio
import trio.testing
from conftest import TIMEOUT, server_url
from log_records import LOGGER, lines_about, messages
from raw_http import HOST, exchange, read_until, upgrade_request, upgraded

from trio_websocket import (
    Admission,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    open_websocket_url,
    serve_websocket,
)
from trio_websocket._settings import Compression


class Holder:
    """A handler that accepts, hands over the connection, and stays open."""

    def __init__(self) -> None:
        self.connections: list[WebSocketConnection] = []

    async def __call__(self, request: WebSocketRequest) -> None:
        connection = await request.accept()
        self.connections.append(connection)
        await trio.sleep_forever()

    async def only(self) -> WebSocketConnection:
        """The single connection accepted so far."""
        await trio.testing.wait_all_tasks_blocked()
        (connection,) = self.connections
        return connection


async def start(
    nursery: trio.Nursery, holder: Holder, compression: Compression = None
) -> WebSocketServer:
    server: WebSocketServer = await nursery.start(
        lambda task_status: serve_websocket(
            holder,
            HOST,
            0,
            None,
            compression=compression,
            admission=Admission(max_connections=0) if holder is REFUSE else None,
            task_status=task_status,
        )
    )
    return server


REFUSE = Holder()  # a server started with it refuses everyone


# -- Stats --------------------------------------------------------------------

MESSAGES: list[str | bytes] = ["h\u00e9llo", b"\x00" * 300, "x" * 70_000]
PAYLOAD = sum(len(m.encode() if isinstance(m, str) else m) for m in MESSAGES)
# Frame headers: 2 bytes, +2 from 126 bytes, +8 from 65536; +4 mask from a client.
HEADERS = 2 + (2 + 2) + (2 + 8)
MASKS = 4 * len(MESSAGES)


async def test_messages_and_bytes_are_counted_each_way(nursery: trio.Nursery) -> None:
    holder = Holder()
    server = await start(nursery, holder)
    async with open_websocket_url(
        server_url(server), compression=None, max_message_size=math.inf
    ) as client:
        there = await holder.only()
        with trio.fail_after(TIMEOUT):
            for message in MESSAGES:
                await client.send_message(message)
                assert await there.get_message() == message
                await there.send_message(message)
                assert await client.get_message() == message
        for side in (client.stats, there.stats):
            assert (side.messages_sent, side.messages_received) == (3, 3)
            assert (side.bytes_sent, side.bytes_received) == (PAYLOAD, PAYLOAD)
        assert client.stats.wire_bytes_sent == PAYLOAD + HEADERS + MASKS
        assert client.stats.wire_bytes_received == PAYLOAD + HEADERS
        assert there.stats.wire_bytes_received == PAYLOAD + HEADERS + MASKS


async def test_queue_depth_counts_unread_messages(nursery: trio.Nursery) -> None:
    holder = Holder()
    server = await start(nursery, holder)
    async with open_websocket_url(server_url(server), message_queue_size=10) as client:
        there = await holder.only()
        assert (client.stats.queue_depth, client.stats.queued_bytes) == (0, 0)
        for message in ("one", "two", "three"):
            await there.send_message(message)
        await trio.testing.wait_all_tasks_blocked()
        assert (client.stats.queue_depth, client.stats.queued_bytes) == (3, 11)
        assert await client.get_message() == "one"
        assert (client.stats.queue_depth, client.stats.queued_bytes) == (2, 8)


async def test_last_ping_round_trip(nursery: trio.Nursery) -> None:
    holder = Holder()
    server = await start(nursery, holder)
    async with open_websocket_url(server_url(server)) as client:
        there = await holder.only()
        assert client.stats.last_ping_rtt is None
        with trio.fail_after(TIMEOUT):
            await client.ping()
        rtt = client.stats.last_ping_rtt
        assert rtt is not None and 0 <= rtt < TIMEOUT
        assert there.stats.last_ping_rtt is None  # it only answered


@pytest.mark.parametrize("compression", ["deflate", None])
async def test_compression_ratio(
    nursery: trio.Nursery, compression: Compression
) -> None:
    holder = Holder()
    server = await start(nursery, holder, compression)
    async with open_websocket_url(
        server_url(server), compression=compression
    ) as client:
        there = await holder.only()
        with trio.fail_after(TIMEOUT):
            await client.send_message('{"price": 100, "qty": 5}' * 200)
            await there.get_message()
        assert client.stats.compression_ratio is not None
        if compression is None:  # frame headers cost a little
            assert client.stats.compression_ratio < 1
        else:
            assert client.stats.compression_ratio > 10
            assert there.stats.compression_ratio is not None
            assert there.stats.compression_ratio > 10


# -- Log lines ----------------------------------------------------------------


async def test_open_and_close_are_logged_with_the_connection_id(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    holder = Holder()
    server = await start(nursery, holder)
    async with open_websocket_url(server_url(server, "/logged")) as client:
        there = await holder.only()
        with trio.fail_after(TIMEOUT):
            await client.aclose(4000, "done here")
    await trio.testing.wait_all_tasks_blocked()
    assert str(client).startswith("client-") and str(there).startswith("server-")
    for connection, closer in ((client, "us"), (there, "the peer")):
        opened, closed = lines_about(caplog, connection)
        assert "open" in opened
        assert f"closed by {closer}, 4000 PRIVATE_RESERVED" in closed
        assert "done here" in closed
    assert "/logged" in lines_about(caplog, there)[0]


def masked_frame(first_byte: int, payload: bytes) -> bytes:
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", first_byte, 0x80 | len(payload)) + key + masked


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (masked_frame(0x83, b""), 1002),  # a reserved opcode
        (masked_frame(0x81, b"\xff\xfe"), 1007),  # text that is not UTF-8
        (struct.pack("!BB", 0x81, 0), 1002),  # a client frame without a mask
    ],
    ids=["reserved-opcode", "bad-utf8", "unmasked"],
)
async def test_protocol_errors_are_logged_with_the_connection_id(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, frame: bytes, code: int
) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    holder = Holder()
    server = await start(nursery, holder)
    async with upgraded(server.port) as raw:
        there = await holder.only()
        await raw.send_all(frame)
        with trio.fail_after(TIMEOUT):
            received = await read_until(raw, None)  # the server hangs up
    assert int.from_bytes(received[2:4], "big") == code
    await trio.testing.wait_all_tasks_blocked()
    # A peer's mistake is not the operator's problem: DEBUG, like 0.12.
    assert messages(caplog, logging.INFO) == []
    said = "refusing a message" if code == 1007 else "protocol error from the peer"
    assert any(said in line for line in lines_about(caplog, there)), messages(caplog)
    assert f"closed by us, {code}" in lines_about(caplog, there)[-1]


async def test_refusals_are_logged_with_the_client_address(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    server = await start(nursery, REFUSE)
    with trio.fail_after(TIMEOUT):
        answer = await exchange(server.port, upgrade_request())
    assert answer.status == 503
    assert any(
        "refused a client from" in line and HOST in line and "503" in line
        for line in messages(caplog)
    )
