"""Log levels: quiet like 0.12 and like a library, whatever a peer sends.

Per-connection events (open, close) are DEBUG, as in trio-websocket 0.12.
Nothing a remote peer can cause is logged above INFO: a hostile client must
not be able to fill an application's warnings, or reach standard error
through Python's last-resort handler when no logging is configured.
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import struct
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
import trio
import trio.testing
from conftest import TIMEOUT, server_url
from log_records import LOGGER, about, ours
from raw_http import HOST, exchange, plain_request, read_until, upgraded

from trio_websocket import (
    Admission,
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    open_websocket_url,
    serve_websocket,
)

#: The message size limit of the servers and clients that refuse messages.
LIMIT = 16


@pytest.fixture(autouse=True)
def debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Capture everything the library logs, down to DEBUG."""
    caplog.set_level(logging.DEBUG, LOGGER)


def above(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        f"{record.levelname} {record.name}: {record.getMessage()}"
        for record in ours(caplog)
        if record.levelno > level
    ]


class Holder:
    """A handler that accepts, hands over the connection and reads until closed."""

    def __init__(self) -> None:
        self.connections: list[WebSocketConnection] = []
        self.done = trio.Event()

    async def __call__(self, request: WebSocketRequest) -> None:
        connection = await request.accept()
        self.connections.append(connection)
        try:
            while True:
                await connection.get_message()
        except ConnectionClosed:
            pass
        finally:
            self.done.set()


async def start(
    nursery: trio.Nursery, holder: Holder, max_message_size: int = 2**20
) -> WebSocketServer:
    server: WebSocketServer = await nursery.start(
        lambda task_status: serve_websocket(
            holder,
            HOST,
            0,
            None,
            max_message_size=max_message_size,
            task_status=task_status,
        )
    )
    return server


@pytest.fixture
def no_last_resort() -> Iterator[None]:
    """Fail if a record reaches Python's last-resort handler."""
    saved = logging.lastResort
    reached: list[logging.LogRecord] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            reached.append(record)

    logging.lastResort = Catch(logging.WARNING)
    try:
        yield
    finally:
        logging.lastResort = saved
    assert [record.getMessage() for record in reached] == []


# -- Open and close -------------------------------------------------------------


async def test_open_and_close_are_debug(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    holder = Holder()
    server = await start(nursery, holder)
    async with open_websocket_url(server_url(server, "/quiet")) as client:
        await client.send_message("hello")
    with trio.fail_after(TIMEOUT):
        await holder.done.wait()
    await trio.testing.wait_all_tasks_blocked()
    (there,) = holder.connections
    for connection in (client, there):
        records = about(caplog, connection)
        texts = [record.getMessage() for record in records]
        assert any(": open, " in text for text in texts), texts
        assert any(": closed by " in text for text in texts), texts
        assert {record.levelno for record in records} == {logging.DEBUG}, texts
    assert above(caplog, logging.DEBUG) == []


# -- What a peer can do ----------------------------------------------------------


async def test_oversized_message_from_a_client(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, no_last_resort: None
) -> None:
    holder = Holder()
    server = await start(nursery, holder, max_message_size=LIMIT)
    async with open_websocket_url(server_url(server)) as client:
        await client.send_message("x" * (LIMIT * 10))
        with trio.fail_after(TIMEOUT), pytest.raises(ConnectionClosed) as closed:
            await client.get_message()
    reason = closed.value.reason
    assert reason is not None and reason.code == 1009
    with trio.fail_after(TIMEOUT):
        await holder.done.wait()
    await trio.testing.wait_all_tasks_blocked()
    (there,) = holder.connections
    texts = [record.getMessage() for record in about(caplog, there)]
    assert any("closed by us, 1009" in text for text in texts), texts
    assert above(caplog, logging.INFO) == []


async def test_oversized_message_from_a_server(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, no_last_resort: None
) -> None:
    async def shout(request: WebSocketRequest) -> None:
        connection = await request.accept()
        await connection.send_message(b"x" * (LIMIT * 10))
        await trio.sleep_forever()

    server: WebSocketServer = await nursery.start(serve_websocket, shout, HOST, 0, None)
    async with open_websocket_url(server_url(server), max_message_size=LIMIT) as client:
        with trio.fail_after(TIMEOUT), pytest.raises(ConnectionClosed) as closed:
            await client.get_message()
    reason = closed.value.reason
    assert reason is not None and reason.code == 1009
    await trio.testing.wait_all_tasks_blocked()
    assert above(caplog, logging.INFO) == []


def masked_frame(first_byte: int, payload: bytes) -> bytes:
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", first_byte, 0x80 | len(payload)) + key + masked


BAD_FRAMES = {
    "garbage": b"\x00\xff" * 40,
    "reserved-opcode": masked_frame(0x83, b""),
    "unmasked": struct.pack("!BB", 0x81, 0),
    "rsv-bits": masked_frame(0xF1, b"hi"),
    "bad-utf8": masked_frame(0x81, b"\xff\xfe"),
    "bad-utf8-fragments": masked_frame(0x01, b"\xc3") + masked_frame(0x80, b"\x28"),
    "bad-close-code": masked_frame(0x88, struct.pack("!H", 999)),
    "bad-close-reason": masked_frame(0x88, struct.pack("!H", 1000) + b"\xff"),
    "oversized": masked_frame(0x82, b"x" * (LIMIT + 1)),
    "oversized-fragments": masked_frame(0x02, b"x" * LIMIT) + masked_frame(0x80, b"y"),
    "huge-length": struct.pack("!BBQ", 0x82, 0xFF, 2**62),
}


@pytest.mark.parametrize("data", BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
async def test_bad_frames_from_a_client(
    nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
    no_last_resort: None,
    data: bytes,
) -> None:
    holder = Holder()
    server = await start(nursery, holder, max_message_size=LIMIT)
    async with upgraded(server.port) as raw:
        await raw.send_all(data)
        with trio.fail_after(TIMEOUT):
            received = await read_until(raw, None)  # the server hangs up
    with trio.fail_after(TIMEOUT):
        await holder.done.wait()
    assert received[:1] == b"\x88", received  # a close frame
    await trio.testing.wait_all_tasks_blocked()
    (there,) = holder.connections
    assert there.closed is not None and there.closed.code != 1000
    assert any(": closed by " in r.getMessage() for r in about(caplog, there))
    assert above(caplog, logging.INFO) == []


BAD_REQUESTS = {
    "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    "not-http": b"HELLO THERE\r\n\r\n",
    "bad-key": plain_request(
        "/",
        [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "\xff\xfe not base64"),
            ("Sec-WebSocket-Version", "13"),
        ],
    ),
    "bad-extensions": plain_request(
        "/",
        [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Extensions", "permessage-deflate; ;;= \xe9"),
        ],
    ),
    "bad-version": plain_request(
        "/",
        [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "8"),
        ],
    ),
}


@pytest.mark.parametrize("data", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
async def test_bad_handshakes_from_a_client(
    nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
    no_last_resort: None,
    data: bytes,
) -> None:
    holder = Holder()
    server = await start(nursery, holder)
    # The answer may not parse at all: the server may just hang up.
    with trio.fail_after(TIMEOUT), contextlib.suppress(Exception):
        await exchange(server.port, data)
    await trio.testing.wait_all_tasks_blocked()
    assert holder.connections == []
    assert above(caplog, logging.INFO) == []


def reset(stream: trio.SocketStream) -> None:
    """Make closing ``stream`` send a TCP reset."""
    stream.socket.setsockopt(
        trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, struct.pack("ii", 1, 0)
    )


@pytest.mark.parametrize(
    ("tls", "full", "data"),
    [
        (True, False, b"GET / HTTP/1.1\r\n\r\n"),  # plain text to a TLS server
        (True, False, b"\x16\x03\x01\x00\x05hello"),  # a broken ClientHello
        (False, True, b""),  # refused before the request, already gone
        (False, False, b"GET / HTTP/1.1\r\nHost"),  # gone mid-request
    ],
    ids=["tls-plain-text", "tls-garbage", "refused-reset", "request-reset"],
)
async def test_clients_that_hang_up(
    nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
    no_last_resort: None,
    server_ssl_context: ssl.SSLContext,
    tls: bool,
    full: bool,
    data: bytes,
) -> None:
    holder = Holder()
    server: WebSocketServer = await nursery.start(
        lambda task_status: serve_websocket(
            holder,
            HOST,
            0,
            server_ssl_context if tls else None,
            admission=Admission(max_connections=0) if full else None,
            task_status=task_status,
        )
    )
    stream = await trio.open_tcp_stream(HOST, server.port)
    if data:
        await stream.send_all(data)
    await trio.testing.wait_all_tasks_blocked()
    reset(stream)
    await stream.aclose()
    await trio.testing.wait_all_tasks_blocked(cushion=0.05)  # the server noticed
    assert holder.connections == []
    assert above(caplog, logging.INFO) == []


# -- With no logging configured at all ---------------------------------------------

SCRIPT = textwrap.dedent(
    """
    import sys

    import trio

    from trio_websocket import (
        ConnectionClosed, open_websocket_url, serve_websocket,
    )

    LIMIT = 16


    async def shout(request):
        connection = await request.accept()
        try:
            while True:
                await connection.get_message()
                await connection.send_message(b"x" * (LIMIT * 10))
        except ConnectionClosed:
            pass


    async def main():
        async with trio.open_nursery() as nursery:
            # The server refuses a big message; then the client does.
            server = await nursery.start(
                lambda task_status: serve_websocket(
                    shout, "127.0.0.1", 0, None,
                    max_message_size=LIMIT, task_status=task_status,
                )
            )
            url = f"ws://127.0.0.1:{server.port}/"
            for limit in (2**20, LIMIT):
                async with open_websocket_url(url, max_message_size=limit) as ws:
                    # Too big for the server, or answered too big for us.
                    await ws.send_message("y" * (LIMIT * 10 if limit > LIMIT else 1))
                    try:
                        while True:
                            await ws.get_message()
                    except ConnectionClosed as exc:
                        assert exc.reason.code == 1009, exc.reason
            nursery.cancel_scope.cancel()
        print("done")


    trio.run(main)
    """
)


def test_nothing_reaches_stderr_without_logging_configured() -> None:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "done\n", "")


# -- Credentials ------------------------------------------------------------------


async def test_debug_logs_show_no_credentials(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    holder = Holder()
    server = await start(nursery, holder)
    secrets = [
        ("Authorization", "Bearer s3cret-token"),
        ("Cookie", "session=s3cret-cookie"),
        ("X-Trace", "visible-value"),
    ]
    async with open_websocket_url(server_url(server, "/"), extra_headers=secrets):
        pass
    with trio.fail_after(TIMEOUT):
        await holder.done.wait()
    logged = "\n".join(record.getMessage() for record in ours(caplog))
    assert "Authorization: [redacted]" in logged  # the engine logged headers
    assert "visible-value" in logged  # others as they are
    assert "s3cret" not in logged


def test_importing_logs_nothing_even_at_debug() -> None:
    # The engine is probed at import; those probe engines must stay silent.
    code = (
        "import logging\n"
        "logging.basicConfig(level=logging.DEBUG, format='%(name)s %(message)s')\n"
        "import trio_websocket, trio_websocket._engine\n"
        "trio_websocket.open_websocket_url, trio_websocket.PubSub\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
