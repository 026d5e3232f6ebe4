"""Reconnecting clients: backoff, jitter, give-up and stop rules.

Most tests run the policy against a scripted server over in-memory streams
with Trio's virtual clock, so delays are exact and cost no real time; one
runs the URL entry point against a real loopback server.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from itertools import pairwise

import pytest
import trio
import trio.testing

from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    HandshakeError,
    ProxyError,
    ReconnectingWebSocket,
    RedirectError,
    WebSocketConnection,
    WebSocketRequest,
    reconnecting_websocket_url,
    wrap_client_stream,
    wrap_server_stream,
)
from trio_websocket._reconnect import Backoff, is_transient, reconnecting

Action = Callable[[WebSocketRequest, trio.abc.Stream], Awaitable[None]]


async def drop(request: WebSocketRequest, stream: trio.abc.Stream) -> None:
    """Accept, greet, then vanish without a closing handshake (1006)."""
    await (await request.accept()).send_message("hello")
    await trio.aclose_forcefully(stream)


async def hold_then_drop(request: WebSocketRequest, stream: trio.abc.Stream) -> None:
    """Stay connected for a healthy while, then vanish."""
    await (await request.accept()).send_message("hello")
    await trio.sleep(100)
    await trio.aclose_forcefully(stream)


def close_with(code: int) -> Action:
    """Accept, greet, then close properly with ``code``."""

    async def close(request: WebSocketRequest, stream: trio.abc.Stream) -> None:
        connection = await request.accept()
        await connection.send_message("hello")
        await connection.aclose(code)

    return close


def reject_with(status: int) -> Action:
    async def reject(request: WebSocketRequest, stream: trio.abc.Stream) -> None:
        await request.reject(status)

    return reject


async def refuse(request: WebSocketRequest, stream: trio.abc.Stream) -> None:
    raise AssertionError("never called: refusal happens before any stream")


async def serve_until_closed(
    request: WebSocketRequest, stream: trio.abc.Stream
) -> None:
    """Accept, greet, and answer until the client closes."""
    connection = await request.accept()
    await connection.send_message("hello")
    try:
        while True:
            await connection.get_message()
    except ConnectionClosed:
        pass


class ScriptedServer:
    """Answers the n-th connection attempt with ``script[n]`` (the last repeats).

    ``refuse`` makes the attempt fail like a closed port. Attempts are
    recorded with their (virtual) time.
    """

    def __init__(self, nursery: trio.Nursery, script: Sequence[Action]) -> None:
        self.nursery = nursery
        self.script = script
        self.attempt_times: list[float] = []
        self.finished = 0  # server sessions that have ended

    @property
    def gaps(self) -> list[float]:
        times = self.attempt_times
        return [round(later - earlier, 6) for earlier, later in pairwise(times)]

    async def connect(self, nursery: trio.Nursery) -> WebSocketConnection:
        self.attempt_times.append(trio.current_time())
        index = min(len(self.attempt_times), len(self.script)) - 1
        action = self.script[index]
        if action is refuse:
            raise ConnectionRefusedError("connection refused")
        client_stream, server_stream = trio.testing.memory_stream_pair()
        self.nursery.start_soon(self._serve, server_stream, action)
        return await wrap_client_stream(nursery, client_stream, "test", "/")

    async def _serve(self, stream: trio.abc.Stream, action: Action) -> None:
        request = await wrap_server_stream(self.nursery, stream)
        await action(request, stream)
        self.finished += 1


async def consume(client: ReconnectingWebSocket, limit: int) -> list[str | int]:
    """The usual client loop; returns greetings and abnormal close codes."""
    seen: list[str | int] = []
    async for connection in client:
        try:
            async for message in connection:
                assert isinstance(message, str)
                seen.append(message)
        except ConnectionClosed as closed:
            assert closed.reason is not None
            seen.append(closed.reason.code)
        if len(seen) >= limit:
            break
    return seen


async def run_client(
    server: ScriptedServer,
    backoff: Backoff,
    *,
    limit: int = 20,
    reconnect_after_normal_close: bool = False,
) -> list[str | int]:
    """Run :func:`consume` against a scripted server (virtual time)."""
    with trio.fail_after(10_000):
        async with reconnecting(
            server.connect,
            backoff,
            reconnect_after_normal_close=reconnect_after_normal_close,
        ) as client:
            return await consume(client, limit)


EXACT = Backoff(initial_delay=1, max_delay=60, factor=2, jitter=0)


async def test_reconnects_after_drops_with_growing_delays(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    server = ScriptedServer(nursery, [drop, drop, drop, close_with(1000)])
    seen = await run_client(server, EXACT)
    assert seen == ["hello", 1006] * 3 + ["hello"]
    assert server.gaps == [1, 2, 4]


async def test_failed_attempts_back_off_up_to_max_delay(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    script = [refuse] * 6 + [close_with(1000)]
    server = ScriptedServer(nursery, script)
    backoff = Backoff(initial_delay=1, max_delay=10, factor=3, jitter=0)
    assert await run_client(server, backoff) == ["hello"]
    assert server.gaps == [1, 3, 9, 10, 10, 10]


async def test_max_attempts_raises_the_last_error(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    server = ScriptedServer(nursery, [refuse])
    backoff = Backoff(initial_delay=1, factor=2, jitter=0, max_attempts=3)
    with pytest.raises(ConnectionRefusedError):
        await run_client(server, backoff)
    assert server.gaps == [1, 2]


async def test_a_successful_handshake_resets_the_attempt_count(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    script = [refuse, drop, refuse, drop, refuse, close_with(1000)]
    server = ScriptedServer(nursery, script)
    backoff = Backoff(initial_delay=1, factor=2, jitter=0, max_attempts=2)
    assert await run_client(server, backoff) == ["hello", 1006] * 2 + ["hello"]
    # Drops sooner than healthy_after keep the delay growing.
    assert server.gaps == [1, 2, 4, 8, 16]


async def test_a_healthy_connection_resets_the_delay(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    script = [refuse, refuse, hold_then_drop, refuse, close_with(1000)]
    server = ScriptedServer(nursery, script)
    assert await run_client(server, EXACT) == ["hello", 1006, "hello"]
    # 100 s connected (over healthy_after): back to 1 s, then 2 s.
    assert server.gaps == [1, 2, 100 + 1, 2]


@pytest.mark.parametrize("code", [1000, 1001])
async def test_a_normal_close_ends_the_loop(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, code: int
) -> None:
    server = ScriptedServer(nursery, [close_with(code)])
    assert await run_client(server, EXACT) == ["hello"]
    assert len(server.attempt_times) == 1


async def test_reconnect_after_normal_close_on_request(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    server = ScriptedServer(nursery, [close_with(1001)])
    seen = await run_client(server, EXACT, limit=3, reconnect_after_normal_close=True)
    assert seen == ["hello"] * 3
    assert server.gaps == [1, 2]


@pytest.mark.parametrize("code", [1011, 1012, 1013, 4000])
async def test_other_close_codes_reconnect(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, code: int
) -> None:
    server = ScriptedServer(nursery, [close_with(code), close_with(1000)])
    assert await run_client(server, EXACT) == ["hello", code, "hello"]


async def test_transient_rejections_are_retried(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    script = [reject_with(503), reject_with(429), close_with(1000)]
    server = ScriptedServer(nursery, script)
    assert await run_client(server, EXACT) == ["hello"]
    assert server.gaps == [1, 2]


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_permanent_rejections_are_raised_at_once(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, status: int
) -> None:
    server = ScriptedServer(nursery, [reject_with(status)])
    with pytest.raises(ConnectionRejected) as caught:
        await run_client(server, EXACT)
    assert caught.value.status_code == status
    assert len(server.attempt_times) == 1


async def test_jitter_shortens_each_delay_within_bounds(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    server = ScriptedServer(nursery, [refuse] * 8 + [close_with(1000)])
    backoff = Backoff(initial_delay=1, max_delay=1000, factor=2, jitter=0.5)
    await run_client(server, backoff)
    bases = [2.0**n for n in range(8)]
    assert all(
        base / 2 <= gap <= base for gap, base in zip(server.gaps, bases, strict=True)
    )
    assert server.gaps != bases


async def test_slow_attempts_time_out_and_are_retried(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    async def never_answer(request: WebSocketRequest, stream: trio.abc.Stream) -> None:
        await trio.sleep_forever()

    server = ScriptedServer(nursery, [never_answer, close_with(1000)])
    async with reconnecting(server.connect, EXACT, connect_timeout=5) as client:
        async for connection in client:
            assert await connection.get_message() == "hello"
    assert server.gaps == [5 + 1]


async def test_leaving_the_body_with_the_connection_open_ends_the_loop(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    server = ScriptedServer(nursery, [serve_until_closed])
    connections: list[WebSocketConnection] = []
    async with reconnecting(server.connect, EXACT) as client:
        async for connection in client:
            connections.append(connection)
    [connection] = connections
    assert connection.closed is not None
    assert connection.closed.code == 1000
    assert len(server.attempt_times) == 1


async def test_break_closes_the_connection(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    server = ScriptedServer(nursery, [serve_until_closed])
    async with reconnecting(server.connect, EXACT) as client:
        async for connection in client:  # noqa: B007
            break
    assert connection.closed is not None
    assert client.connection is None


@pytest.mark.parametrize(
    "script", [[serve_until_closed], [refuse]], ids=["connected", "waiting"]
)
async def test_cancellation_leaves_nothing_behind(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    script: list[Action],
) -> None:
    server = ScriptedServer(nursery, script)
    connections: list[WebSocketConnection] = []
    with trio.move_on_after(30) as scope:
        async with reconnecting(server.connect, EXACT) as client:
            async for connection in client:
                connections.append(connection)
                await trio.sleep_forever()
    assert scope.cancelled_caught
    assert client.connection is None
    await trio.testing.wait_all_tasks_blocked()
    if connections:
        [connection] = connections
        assert connection.closed is not None
        assert server.finished == 1  # the server saw the connection end
    else:  # cancelled while waiting after attempts at 0, 1, 3, 7 and 15 s
        assert server.gaps == [1, 2, 4, 8]


async def test_reconnecting_websocket_url_over_loopback(nursery: trio.Nursery) -> None:
    attempts = 0

    async def handler(stream: trio.SocketStream) -> None:
        nonlocal attempts
        attempts += 1
        action = drop if attempts <= 2 else close_with(1000)
        async with trio.open_nursery() as connection_nursery:
            await action(await wrap_server_stream(connection_nursery, stream), stream)

    serve = partial(trio.serve_tcp, host="127.0.0.1")
    listeners = await nursery.start(serve, handler, 0)
    port = listeners[0].socket.getsockname()[1]
    url = f"ws://user:secret@127.0.0.1:{port}/"
    with trio.fail_after(10):
        async with reconnecting_websocket_url(
            url, initial_delay=0.001, jitter=0, proxy=False
        ) as client:
            seen = await consume(client, limit=20)
    assert seen == ["hello", 1006, "hello", 1006, "hello"]
    assert attempts == 3


@pytest.mark.parametrize(
    ("url", "options"),
    [("http://example.com/", {}), ("ws://example.com/", {"factor": 0.5})],
)
async def test_bad_arguments_fail_before_connecting(
    url: str, options: dict[str, float]
) -> None:
    with pytest.raises(ValueError):
        async with reconnecting_websocket_url(url, **options):  # type: ignore[arg-type]
            raise AssertionError("not reached")  # pragma: no cover


def test_transient_errors() -> None:
    cert_error = HandshakeError("TLS failed")
    cert_error.__cause__ = ssl.SSLCertVerificationError("untrusted")
    assert is_transient(ConnectionRefusedError())
    assert is_transient(ConnectionTimeout("slow"))
    assert is_transient(HandshakeError("connection lost during the handshake"))
    assert is_transient(ConnectionRejected(502, [], b""))
    assert is_transient(ConnectionRejected(408, [], b""))
    assert is_transient(ProxyError("SOCKS5: host unreachable"))
    assert is_transient(ProxyError("bad gateway", 502))
    assert not is_transient(ProxyError("wants credentials", 407))
    assert not is_transient(ConnectionRejected(404, [], b""))
    assert not is_transient(ConnectionRejected(302, [], b""))
    assert not is_transient(RedirectError("downgrade", "ws://x/"))
    assert not is_transient(cert_error)
    assert not is_transient(ValueError("bad option"))


@pytest.mark.parametrize(
    "options",
    [
        {"initial_delay": 0},
        {"initial_delay": 5, "max_delay": 1},
        {"factor": 0.5},
        {"jitter": 1.5},
        {"max_attempts": 0},
    ],
)
def test_backoff_checks_its_parameters(options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**options)  # type: ignore[arg-type]
