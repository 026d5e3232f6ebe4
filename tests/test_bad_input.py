"""Bad input on both sides, over real loopback sockets.

Every test puts a raw peer (hand-built HTTP and frames, from ``raw_peer``) against
our server or our client, and checks that bad input is refused the way RFC
6455 says: HTTP errors before the upgrade, close codes 1002/1007/1009 after
it, ``HandshakeError`` on the client before the upgrade, and that nothing
hangs or leaks (every raw socket is closed, every wait is bounded).
"""

from __future__ import annotations

import math
import ssl
from functools import partial

import pytest
import trio
import trustme
from raw_http import HOST, upgrade_request
from raw_peer import (
    BINARY,
    CLOSE,
    CONT,
    LIMIT,
    PING,
    SERVER_BAD_FRAMES,
    TEST_BOUND,
    TEXT,
    RawPeer,
    Recorder,
    accept_key,
    close_payload,
    frame,
    no_errors_logged,  # noqa: F401  (an autouse fixture)
    raw_client,
    raw_upgrade,
    start_raw_server,
    start_server,
    status_of,
    upgraded_raw_client,
)

from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    HandshakeError,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)


@pytest.fixture
async def recorder(nursery: trio.Nursery) -> Recorder:
    return await start_server(nursery)


# -- Server side: bad HTTP ---------------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "half_close", "status"),
    [
        pytest.param(b"\x16\x03\x01\x02\x00 garbage\r\n\r\n", False, 400, id="garbage"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n", True, 400, id="incomplete"),
        pytest.param(
            b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\n\r\n", False, 414, id="long-line"
        ),
        pytest.param(
            upgrade_request(extra=f"X-Big: {'b' * 10_000}\r\n"),
            False,
            431,
            id="long-header",
        ),
        pytest.param(
            upgrade_request(extra="X-Many: m\r\n" * 200), False, 431, id="many-headers"
        ),
        # RFC 6455 section 4.2.2 and 0.12: a malformed upgrade gets 400, an
        # unsupported version 426 (with the supported one, checked below).
        pytest.param(
            f"GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode(), False, 400, id="plain"
        ),
        pytest.param(upgrade_request(omit="Upgrade"), False, 400, id="no-upgrade"),
        pytest.param(
            upgrade_request(omit="Connection"), False, 400, id="no-connection"
        ),
        pytest.param(
            upgrade_request(omit="Sec-WebSocket-Key"), False, 400, id="no-key"
        ),
        pytest.param(upgrade_request(version="8"), False, 426, id="bad-version"),
        pytest.param(
            upgrade_request(omit="Sec-WebSocket-Version"), False, 426, id="no-version"
        ),
    ],
)
async def test_server_answers_bad_http_with_an_error(
    recorder: Recorder, request_bytes: bytes, half_close: bool, status: int
) -> None:
    with trio.fail_after(TEST_BOUND):
        async with raw_client(recorder.port) as peer:
            await peer.stream.send_all(request_bytes)
            if half_close:
                await peer.stream.send_eof()
            response = await peer.read_to_eof()
        assert status_of(response) == status
        await recorder.serves_a_normal_client()
    assert recorder.paths == ["/ok"]  # the handler never saw the bad request


async def test_non_ascii_header_value_is_accepted_with_its_bytes(
    nursery: trio.Nursery,
) -> None:
    # RFC 9110 allows bytes 0x80-0xFF in a field value (obs-text).
    seen: list[bytes] = []

    async def handler(request: WebSocketRequest) -> None:
        seen.extend(value for name, value in request.headers if name == b"x-name")
        await request.accept()

    server = await nursery.start(serve_websocket, handler, HOST, 0, None)
    with trio.fail_after(TEST_BOUND):
        async with raw_client(server.port) as peer:
            await peer.stream.send_all(upgrade_request(extra="X-Name: café\r\n"))
            assert status_of(await peer.read_head()) == 101
    assert seen == ["café".encode()]


async def test_unsupported_version_is_told_the_supported_one(
    recorder: Recorder,
) -> None:
    with trio.fail_after(TEST_BOUND):
        async with raw_client(recorder.port) as peer:
            await peer.stream.send_all(upgrade_request(version="8"))
            response = await peer.read_to_eof()
    assert status_of(response) == 426
    assert b"\r\nSec-WebSocket-Version: 13\r\n" in response


async def test_server_drops_a_client_that_never_finishes_its_request(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    timeout = 5
    recorder = await start_server(nursery, connect_timeout=timeout)
    with trio.fail_after(timeout * 4):
        async with raw_client(recorder.port) as peer:
            await peer.stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            with trio.move_on_after(timeout - 1) as waiting:
                await peer.stream.receive_some()
            assert waiting.cancelled_caught, "dropped before connect_timeout"
            assert await peer.read_to_eof() == b""  # dropped without an answer
        await recorder.serves_a_normal_client()
    assert recorder.paths == ["/ok"]


# -- Server side: bad frames after the handshake -----------------------------


@pytest.mark.parametrize(("bad_bytes", "code"), SERVER_BAD_FRAMES)
async def test_server_fails_the_connection_on_bad_frames(
    recorder: Recorder, bad_bytes: bytes, code: int
) -> None:
    with trio.fail_after(TEST_BOUND):
        async with upgraded_raw_client(recorder.port) as peer:
            # Nothing completes a fragmented message: the server must not
            # wait for the rest before failing the connection.
            await peer.stream.send_all(bad_bytes)
            assert await peer.read_close_code(masked=False) == code
            assert await peer.read_to_eof() == b""
        outcome = await recorder.next_outcome()
        assert isinstance(outcome, CloseReason)
        assert outcome.code == code
        await recorder.serves_a_normal_client()
    assert recorder.paths == ["/raw", "/ok"]


async def test_server_accepts_a_message_of_exactly_the_limit(
    recorder: Recorder,
) -> None:
    # The counterpart of the 1009 cases: the limit is inclusive, in bytes.
    text = "é" * (LIMIT // 2)
    with trio.fail_after(TEST_BOUND):
        async with upgraded_raw_client(recorder.port) as peer:
            await peer.stream.send_all(frame(TEXT, text.encode()))
            assert await peer.read_frame(masked=False) == (TEXT, text.encode())
            assert await recorder.next_outcome() == text


# -- Client side: bad handshake responses ------------------------------------


async def answer_and_wait(answer: bytes, keep_open: bool, peer: RawPeer) -> None:
    """Read the request, send ``answer``, then wait for the client to leave."""
    await peer.read_head()
    await peer.stream.send_all(answer)
    if keep_open:
        await peer.read_to_eof()


@pytest.mark.parametrize(
    ("answer", "keep_open"),
    [
        pytest.param(b"this is not HTTP\r\n\r\n", True, id="garbage"),
        pytest.param(b"HTTP/1.1 101 Switching\r\nUpgrade: web", False, id="cut-short"),
        pytest.param(b"", False, id="closed"),
        pytest.param(
            b"HTTP/1.1 101 Switching Protocols\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(b"wrong") + b"\r\n\r\n",
            True,
            id="wrong-accept",
        ),
        pytest.param(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n",
            True,
            id="no-upgrade-header",
        ),
    ],
)
async def test_client_raises_handshake_error_at_once(
    nursery: trio.Nursery, answer: bytes, keep_open: bool
) -> None:
    port = await start_raw_server(nursery, partial(answer_and_wait, answer, keep_open))
    # A bound far below connect_timeout: raising only after the timeout fails.
    with trio.fail_after(TEST_BOUND), pytest.raises(HandshakeError) as info:
        async with open_websocket_url(f"ws://{HOST}:{port}/", connect_timeout=3600):
            pytest.fail("the handshake should have failed")
    assert not isinstance(info.value, ConnectionRejected | ConnectionTimeout)


async def test_client_raises_connection_rejected_with_the_response(
    nursery: trio.Nursery,
) -> None:
    body = b"go away, please"
    answer = (
        b"HTTP/1.1 403 Forbidden\r\nX-Reason: nope\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    port = await start_raw_server(nursery, partial(answer_and_wait, answer, True))
    with trio.fail_after(TEST_BOUND), pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(f"ws://{HOST}:{port}/", connect_timeout=3600):
            pytest.fail("the handshake should have failed")
    assert info.value.status_code == 403
    assert (b"x-reason", b"nope") in info.value.headers
    assert info.value.body == body


async def test_client_raises_handshake_error_caused_by_tls_failure(
    nursery: trio.Nursery,
) -> None:
    server_ca, other_ca = trustme.CA(), trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ca.issue_cert(HOST).configure_cert(server_context)
    client_context = ssl.create_default_context()
    other_ca.configure_trust(client_context)
    send, receive = trio.open_memory_channel[str](math.inf)

    async def handler(request: WebSocketRequest) -> None:  # pragma: no cover
        send.send_nowait("called")

    server = await nursery.start(
        partial(serve_websocket, handler, HOST, 0, server_context)
    )
    url = f"wss://{HOST}:{server.port}/"
    with trio.fail_after(TEST_BOUND), pytest.raises(HandshakeError) as info:
        async with open_websocket_url(url, client_context, connect_timeout=3600):
            pytest.fail("the TLS handshake should have failed")
    assert isinstance(info.value.__cause__, ssl.SSLError)
    with pytest.raises(trio.WouldBlock):
        receive.receive_nowait()


# -- Client side: bad frames after the handshake -----------------------------


async def send_then_expect_close(
    bad_bytes: bytes, received: list[int], peer: RawPeer
) -> None:
    """Upgrade, send ``bad_bytes``, record the client's close code, hang up."""
    await raw_upgrade(peer)
    await peer.stream.send_all(bad_bytes)
    received.append(await peer.read_close_code(masked=True))


CLIENT_BAD_FRAMES = [
    pytest.param(frame(BINARY, b"hi", masked=True), 1002, id="masked"),
    pytest.param(frame(BINARY, b"hi", rsv=0b010, masked=False), 1002, id="rsv2"),
    pytest.param(frame(0x3, b"hi", masked=False), 1002, id="opcode-3"),
    pytest.param(frame(CONT, b"hi", masked=False), 1002, id="continuation-first"),
    pytest.param(frame(PING, b"p" * 126, masked=False), 1002, id="long-ping"),
    pytest.param(frame(CLOSE, close_payload(999), masked=False), 1002, id="close-999"),
    pytest.param(
        frame(CLOSE, close_payload(1005), masked=False), 1002, id="close-1005"
    ),
    pytest.param(frame(TEXT, b"bad \xff", masked=False), 1007, id="invalid-utf8"),
    pytest.param(
        frame(TEXT, b"\xff", fin=False, masked=False), 1007, id="first-fragment-invalid"
    ),
    pytest.param(frame(BINARY, b"x" * (LIMIT + 1), masked=False), 1009, id="too-big"),
    pytest.param(
        frame(TEXT, ("é" * (LIMIT * 3 // 4)).encode(), masked=False),
        1009,
        id="too-big-utf8",
    ),
]


@pytest.mark.parametrize(("bad_bytes", "code"), CLIENT_BAD_FRAMES)
async def test_client_fails_the_connection_on_bad_frames(
    nursery: trio.Nursery, bad_bytes: bytes, code: int
) -> None:
    received: list[int] = []
    port = await start_raw_server(
        nursery, partial(send_then_expect_close, bad_bytes, received)
    )
    with trio.fail_after(TEST_BOUND):
        async with open_websocket_url(
            f"ws://{HOST}:{port}/", max_message_size=LIMIT
        ) as ws:
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
    assert info.value.reason is not None
    assert info.value.reason.code == code
    assert received == [code]


async def drop_mid_message(peer: RawPeer) -> None:
    await raw_upgrade(peer)
    await peer.stream.send_all(frame(TEXT, b"half of a ", fin=False, masked=False))


async def test_client_reports_1006_when_tcp_drops_mid_message(
    nursery: trio.Nursery,
) -> None:
    port = await start_raw_server(nursery, drop_mid_message)
    with trio.fail_after(TEST_BOUND):
        async with open_websocket_url(f"ws://{HOST}:{port}/") as ws:
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
            assert ws.closed is not None
            assert ws.closed.code == 1006
    assert info.value.reason is not None
    assert info.value.reason.code == 1006
