"""Shared fixtures: TLS material, an echo server, and URL helpers."""

from __future__ import annotations

import socket
import ssl

import pytest
import trio
import trustme

from trio_websocket import (
    ConnectionClosed,
    Endpoint,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    serve_websocket,
)

#: Upper bound for any wait that should end promptly; only reached on a bug.
TIMEOUT = 10

#: Host names and addresses the test server certificate is valid for.
CERT_HOSTS = ("127.0.0.1", "::1", "localhost")


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A throwaway certificate authority."""
    return trustme.CA()


@pytest.fixture(scope="session")
def server_ssl_context(ca: trustme.CA) -> ssl.SSLContext:
    """A server TLS context with a certificate for the loopback addresses."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*CERT_HOSTS).configure_cert(context)
    return context


@pytest.fixture(scope="session")
def client_ssl_context(ca: trustme.CA) -> ssl.SSLContext:
    """A client TLS context that trusts the test certificate authority."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(context)
    return context


async def echo_messages(connection: WebSocketConnection) -> None:
    """Send every message back until the connection closes."""
    try:
        while True:
            await connection.send_message(await connection.get_message())
    except ConnectionClosed:
        pass


async def echo_handler(request: WebSocketRequest) -> None:
    """A server handler: accept, then echo until the connection closes."""
    await echo_messages(await request.accept())


@pytest.fixture
async def echo_server(nursery: trio.Nursery) -> WebSocketServer:
    """A plain echo server on 127.0.0.1 and a free port, for the test's length."""
    server: WebSocketServer = await nursery.start(
        serve_websocket, echo_handler, "127.0.0.1", 0, None
    )
    return server


@pytest.fixture
async def tls_echo_server(
    nursery: trio.Nursery, server_ssl_context: ssl.SSLContext
) -> WebSocketServer:
    """A TLS echo server on 127.0.0.1 and a free port, for the test's length."""
    server: WebSocketServer = await nursery.start(
        serve_websocket, echo_handler, "127.0.0.1", 0, server_ssl_context
    )
    return server


def server_url(server: WebSocketServer, resource: str = "/") -> str:
    """The ``ws://`` (or ``wss://``) URL of ``resource`` on a server's listener."""
    endpoint = server.listeners[0]
    assert isinstance(endpoint, Endpoint)
    return endpoint.url + resource


@pytest.fixture
def echo_url(echo_server: WebSocketServer) -> str:
    """The ``ws://`` URL of the root resource on :func:`echo_server`."""
    return server_url(echo_server)


@pytest.fixture
async def unix_listener(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, trio.SocketListener]:
    """A listening Unix socket in a short temporary directory, and its path."""
    # Unix socket paths are limited to about 100 bytes.
    path = str(tmp_path_factory.mktemp("unix") / "ws.sock")
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(path)
    sock.listen()
    return path, trio.SocketListener(sock)


def _has_ipv6_loopback() -> bool:
    """Whether this machine can listen on the IPv6 loopback address."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:  # pragma: no cover - depends on the machine
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")


PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test without proxy variables.

    Clients take their proxy from the environment, so a machine with, say,
    ``http_proxy`` set would otherwise send the suite's loopback connections
    through its proxy. Tests about proxies set the variables they need.
    """
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
