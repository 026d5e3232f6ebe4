"""Graceful server shutdown: ``await server.aclose()`` and ``server.connections``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from conftest import echo_handler, echo_messages, server_url
from raw_http import HOST, read_until, send_and_read_answer, upgrade_request, upgraded

from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketRequest,
    WebSocketServer,
    open_websocket_url,
    serve_websocket,
)

#: Upper bound for any wait that should end promptly; only reached on a bug.
TIMEOUT = 10

Handler = Callable[[WebSocketRequest], Awaitable[object]]


class Served:
    """A server started with ``serve_websocket``, and whether it returned."""

    def __init__(self) -> None:
        self.returned = trio.Event()
        self.server: WebSocketServer | None = None

    async def run(
        self,
        handler: Handler,
        options: dict[str, Any],
        task_status: trio.TaskStatus[WebSocketServer] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        await serve_websocket(
            handler, HOST, 0, None, task_status=task_status, **options
        )
        self.returned.set()

    async def wait_returned(self) -> None:
        with trio.fail_after(TIMEOUT):
            await self.returned.wait()


async def start(
    nursery: trio.Nursery, handler: Handler, **options: Any
) -> tuple[WebSocketServer, Served]:
    served = Served()
    server: WebSocketServer = await nursery.start(served.run, handler, options)
    served.server = server
    return server, served


async def close_reason_seen_by_client(url: str) -> CloseReason | None:
    """Connect, wait for the server to close, return the reason it gave."""
    async with open_websocket_url(url) as client:
        with pytest.raises(ConnectionClosed) as closed:
            await client.get_message()
    return closed.value.reason


@pytest.mark.parametrize(
    "own_nursery", [False, True], ids=["default", "handler_nursery"]
)
async def test_clients_get_1001_and_the_reason(
    nursery: trio.Nursery, own_nursery: bool
) -> None:
    options = {"handler_nursery": nursery} if own_nursery else {}
    server, served = await start(nursery, echo_handler, **options)
    url = server_url(server)
    async with open_websocket_url(url) as first, open_websocket_url(url) as second:
        await trio.testing.wait_all_tasks_blocked()
        assert len(server.connections) == 2
        assert all(connection.is_server for connection in server.connections)
        with trio.fail_after(TIMEOUT):
            await server.aclose(reason="maintenance")
        for client in (first, second):
            assert client.closed == CloseReason(1001, "maintenance")
    assert server.connections == []
    await served.wait_returned()
    await server.aclose()  # idempotent
    with pytest.raises(RuntimeError):
        await server.run()


async def test_connections_lists_only_open_ones(nursery: trio.Nursery) -> None:
    server, _ = await start(nursery, echo_handler)
    async with open_websocket_url(server_url(server)) as client:
        await client.send_message("hello")
        assert await client.get_message() == "hello"
        assert [str(c.remote) for c in server.connections] == [str(client.local)]
    await trio.testing.wait_all_tasks_blocked()
    assert server.connections == []


async def test_peer_that_never_answers_is_cut_off_after_the_grace_period(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server, served = await start(nursery, echo_handler, disconnect_timeout=60)
    done = trio.Event()

    async def shut_down() -> None:
        await server.aclose(grace_period=5)
        done.set()

    async with upgraded(server.port) as deaf:
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(shut_down)
        await trio.sleep(4)
        assert not done.is_set(), "gave up before the grace period"
        with trio.fail_after(2):  # far less than disconnect_timeout
            await done.wait()
        received = await read_until(deaf, None)  # ends: the server hung up
    assert received[:1] == b"\x88"  # our close frame came first
    assert int.from_bytes(received[2:4], "big") == 1001
    await served.wait_returned()


@pytest.mark.parametrize("accept", [True, False], ids=["accepted", "unanswered"])
async def test_handlers_still_running_after_the_grace_period_are_cancelled(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, accept: bool
) -> None:
    cancelled: list[str] = []

    async def stubborn(request: WebSocketRequest) -> None:
        if accept:
            await request.accept()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.append(request.path)
            raise

    server, served = await start(nursery, stubborn)
    async with trio.open_nursery() as clients:
        if accept:
            clients.start_soon(close_reason_seen_by_client, server_url(server, "/a"))
        else:
            clients.start_soon(refused_during_handshake, server_url(server, "/u"))
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(TIMEOUT):
            await server.aclose(grace_period=5)
    assert cancelled == ["/a" if accept else "/u"]
    await served.wait_returned()


async def refused_during_handshake(url: str) -> None:
    with pytest.raises(HandshakeError):
        async with open_websocket_url(url):
            pass  # pragma: no cover


async def test_new_clients_are_refused_once_shutdown_begins(
    nursery: trio.Nursery,
) -> None:
    server, served = await start(nursery, echo_handler)
    port = server.port
    async with await trio.open_tcp_stream(HOST, port) as early:
        # Connected before the shutdown; its request comes during it.
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(server.aclose)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(OSError):
            await trio.open_tcp_stream(HOST, port)
        with trio.fail_after(TIMEOUT):
            answer = await send_and_read_answer(early, upgrade_request())
    assert answer.status == 503
    assert answer.headers["connection"] == "close"
    await served.wait_returned()


async def test_stop_accepting_serves_a_client_in_its_handshake(
    nursery: trio.Nursery,
) -> None:
    server, _ = await start(nursery, echo_handler)
    port = server.port
    async with await trio.open_tcp_stream(HOST, port) as early:
        # Accepted before the listeners close; its request comes after.
        await trio.testing.wait_all_tasks_blocked()
        stopping = trio.Event()

        async def stop() -> None:
            await server.stop_accepting(handshake_grace=TIMEOUT)
            stopping.set()

        nursery.start_soon(stop)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(OSError):
            await trio.open_tcp_stream(HOST, port)
        assert not stopping.is_set()  # waiting for the early client
        with trio.fail_after(TIMEOUT):
            await early.send_all(upgrade_request())
            head = await read_until(early, b"\r\n\r\n")
            await stopping.wait()
    assert head.startswith(b"HTTP/1.1 101 ")


async def test_a_connection_accepted_during_shutdown_is_closed_too(
    nursery: trio.Nursery,
) -> None:
    go = trio.Event()
    seen: list[CloseReason | None] = []

    async def slow_to_accept(request: WebSocketRequest) -> None:
        await go.wait()
        await echo_messages(await request.accept())

    async def client(url: str) -> None:
        seen.append(await close_reason_seen_by_client(url))

    server, served = await start(nursery, slow_to_accept)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as clients:
            clients.start_soon(client, server_url(server))
            await trio.testing.wait_all_tasks_blocked()
            clients.start_soon(partial(server.aclose, reason="bye"))
            await trio.testing.wait_all_tasks_blocked()
            go.set()
    assert seen == [CloseReason(1001, "bye")]
    await served.wait_returned()


async def test_a_handler_can_shut_the_server_down(nursery: trio.Nursery) -> None:
    async def handler(request: WebSocketRequest) -> None:
        if request.path != "/stop":
            await echo_handler(request)
            return
        assert served.server is not None
        await served.server.aclose(code=1012, reason="restarting")
        await request.reject(202)

    server, served = await start(nursery, handler)
    async with open_websocket_url(server_url(server)) as bystander:
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(ConnectionRejected) as rejected, trio.fail_after(TIMEOUT):
            async with open_websocket_url(server_url(server, "/stop")):
                pass  # pragma: no cover
    assert rejected.value.status_code == 202
    assert bystander.closed == CloseReason(1012, "restarting")
    await served.wait_returned()


async def test_an_invalid_close_code_is_refused_before_anything_happens(
    nursery: trio.Nursery,
) -> None:
    server, _ = await start(nursery, echo_handler)
    with pytest.raises(ValueError):
        await server.aclose(code=1006)
    async with open_websocket_url(server_url(server)) as client:
        await client.send_message("still serving")
        assert await client.get_message() == "still serving"


async def test_a_server_that_never_ran_can_be_shut_down() -> None:
    listeners = await trio.open_tcp_listeners(0, host=HOST)
    server = WebSocketServer(echo_handler, listeners)
    port = server.port
    await server.aclose()
    with pytest.raises(OSError):
        await trio.open_tcp_stream(HOST, port)
    with pytest.raises(RuntimeError):
        await server.run()
