"""Behaviours of trio-websocket 0.12.2 that code written for it relies on.

Selenium pins ``trio-websocket>=0.12.2,<1.0``, so every upgrade of a
Selenium user lands here without a line of their code changing. Each test
is named after one behaviour that 0.12.2 had and this library keeps.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import pytest
import trio
from conftest import server_url

import trio_websocket
from trio_websocket import (
    ConnectionRejected,
    HandshakeError,
    WebSocketRequest,
    WebSocketServer,
    connect_websocket,
    connect_websocket_url,
    open_websocket,
    open_websocket_pair,
    open_websocket_url,
    serve_websocket,
    wrap_server_stream,
)

HOST = "127.0.0.1"
TIMEOUT = 10


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


async def serve_raw(nursery: trio.Nursery, answer: bytes) -> int:
    """A TCP server that answers every connection with ``answer``; its port."""

    async def handler(stream: trio.SocketStream) -> None:
        await stream.send_all(answer)
        with trio.move_on_after(TIMEOUT):
            await stream.receive_some()

    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host=HOST))
    port: int = listeners[0].socket.getsockname()[1]
    return port


# -- 1. Networking errors -------------------------------------------------------


async def test_unknown_host_is_a_handshake_error_caused_by_the_lookup() -> None:
    with trio.fail_after(TIMEOUT), pytest.raises(HandshakeError) as caught:
        async with open_websocket("nonexistent.invalid", 80, "/", use_ssl=False):
            pass  # pragma: no cover
    assert "nonexistent.invalid:80" in str(caught.value)
    assert isinstance(caught.value.__cause__, socket.gaierror)


async def test_refused_url_is_a_handshake_error_naming_host_and_port() -> None:
    port = closed_port()
    with trio.fail_after(TIMEOUT), pytest.raises(HandshakeError) as caught:
        async with open_websocket_url(f"ws://{HOST}:{port}/"):
            pass  # pragma: no cover
    assert f"{HOST}:{port}" in str(caught.value)
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)


async def test_connect_websocket_lets_the_os_error_through(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TIMEOUT), pytest.raises(ConnectionRefusedError):
        await connect_websocket(nursery, HOST, closed_port(), "/", use_ssl=False)


# -- 2. use_ssl of a wrong type --------------------------------------------------


async def test_use_ssl_of_a_wrong_type_is_a_type_error(nursery: trio.Nursery) -> None:
    wrong: Any = 1
    message = "`use_ssl` argument must be bool or ssl.SSLContext"
    with pytest.raises(TypeError, match=message):
        await connect_websocket(nursery, HOST, closed_port(), "/", use_ssl=wrong)
    with pytest.raises(TypeError, match=message):
        async with open_websocket(HOST, closed_port(), "/", use_ssl=wrong):
            pass  # pragma: no cover


# -- 3. handshake_headers --------------------------------------------------------


async def test_handshake_headers_list_the_applications_headers_first(
    nursery: trio.Nursery,
) -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def handler(request: WebSocketRequest) -> None:
        connection = await request.accept(extra_headers=[(b"X-Test-Header", b"mine")])
        seen.extend(connection.handshake_headers)

    server: WebSocketServer = await nursery.start(
        serve_websocket, handler, HOST, 0, None
    )
    with trio.fail_after(TIMEOUT):
        async with open_websocket_url(
            server_url(server), extra_headers=[(b"X-Client", b"theirs")]
        ) as client:
            assert client.handshake_headers[0] == (b"x-test-header", b"mine")
            client_names = [name for name, _ in client.handshake_headers]
    names = client_names + [name for name, _ in seen]
    assert (b"x-client", b"theirs") in seen
    assert (b"host", f"{HOST}:{server.port}".encode()) in seen
    assert not {b"upgrade", b"connection"} & set(names)
    assert not [name for name in names if name.startswith(b"sec-websocket-")]


# -- 4. ConnectionRejected.body --------------------------------------------------


async def test_informational_answer_is_a_rejection_without_body(
    nursery: trio.Nursery,
) -> None:
    port = await serve_raw(nursery, b"HTTP/1.1 100 Continue\r\n\r\n")
    with trio.fail_after(TIMEOUT), pytest.raises(ConnectionRejected) as caught:
        async with open_websocket(HOST, port, "/", use_ssl=False):
            pass  # pragma: no cover
    assert caught.value.status_code == 100
    assert caught.value.body is None


async def test_rejection_without_a_body_has_an_empty_body(
    nursery: trio.Nursery,
) -> None:
    answer = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"
    port = await serve_raw(nursery, answer)
    with trio.fail_after(TIMEOUT), pytest.raises(ConnectionRejected) as caught:
        async with open_websocket(HOST, port, "/", use_ssl=False):
            pass  # pragma: no cover
    assert caught.value.status_code == 403
    assert caught.value.body == b""


# -- 6. An exception from the body under cancellation ----------------------------


class BodyError(Exception):
    """Raised by the body of ``async with open_websocket(...)``."""


async def test_body_error_raised_while_cancelled_reaches_the_caller(
    echo_server: WebSocketServer,
) -> None:
    with trio.fail_after(TIMEOUT), pytest.raises(BodyError) as caught:
        with trio.move_on_after(0.1):
            async with open_websocket(HOST, echo_server.port, "/", use_ssl=False):
                try:
                    await trio.sleep_forever()
                finally:
                    raise BodyError("from the finally block")
    assert str(caught.value) == "from the finally block"


# -- 9. The 0.12 module path -----------------------------------------------------


def test_private_impl_module_reexports_what_projects_import() -> None:
    from trio_websocket import _impl

    for name in ("wrap_server_stream", "ConnectionClosed", "HandshakeError"):
        assert getattr(_impl, name) is getattr(trio_websocket, name)
    assert _impl._TRIO_EXC_GROUP_TYPE is BaseExceptionGroup
    context = ssl.create_default_context()
    assert _impl._url_to_host("ws://example.com/a?b=1", None) == (
        "example.com",
        80,
        "/a?b=1",
        False,
    )
    assert _impl._url_to_host("wss://[::1]", None) == ("::1", 443, "/", True)
    assert _impl._url_to_host("wss://h:8443/", context)[1:] == (8443, "/", context)
    with pytest.raises(ValueError):
        _impl._url_to_host("http://example.com/", None)


# -- 10. Option errors -----------------------------------------------------------

Call = Callable[[trio.Nursery], Awaitable[None]]


async def _stream_pair_server(nursery: trio.Nursery) -> None:
    client, _ = trio.testing.memory_stream_pair()
    await wrap_server_stream(nursery, client, bogus=1)  # type: ignore[call-arg]


async def _open(nursery: trio.Nursery) -> None:
    async with open_websocket(HOST, 1, "/", use_ssl=False, bogus=1):  # type: ignore[call-arg]
        pass  # pragma: no cover


async def _open_url(nursery: trio.Nursery) -> None:
    async with open_websocket_url("ws://127.0.0.1:1/", bogus=1):  # type: ignore[call-arg]
        pass  # pragma: no cover


async def _connect_url(nursery: trio.Nursery) -> None:
    await connect_websocket_url(nursery, "ws://127.0.0.1:1/", bogus=1)  # type: ignore[call-arg]


async def _serve(nursery: trio.Nursery) -> None:
    await serve_websocket(None, HOST, 0, None, bogus=1)  # type: ignore[arg-type, call-arg]


@pytest.mark.parametrize(
    ("name", "call"),
    [
        ("open_websocket", _open),
        ("open_websocket_url", _open_url),
        ("connect_websocket_url", _connect_url),
        ("wrap_server_stream", _stream_pair_server),
        ("serve_websocket", _serve),
    ],
)
async def test_unknown_keyword_names_the_function_called(
    nursery: trio.Nursery, name: str, call: Call
) -> None:
    expected = f"^{name}\\(\\) got an unexpected keyword argument 'bogus'$"
    with trio.fail_after(TIMEOUT), pytest.raises(TypeError, match=expected):
        await call(nursery)


async def test_bad_option_of_a_pair_is_one_plain_value_error() -> None:
    with pytest.raises(ValueError, match="compression"):
        async with open_websocket_pair(compression=True):  # type: ignore[arg-type]
            pass  # pragma: no cover
