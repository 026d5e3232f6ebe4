"""WebSocket URLs, the ``Host`` header, and the addresses of endpoints."""

from __future__ import annotations

import ipaddress
import socket
from typing import NamedTuple
from urllib.parse import urlsplit

import trio

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_DEFAULT_PORTS = {"ws": 80, "wss": 443}


class WebSocketURL(NamedTuple):
    """The parts of a ``ws://`` or ``wss://`` URL that a client needs."""

    secure: bool
    host: str
    port: int
    resource: str
    user_info: tuple[str, str] | None


def parse_url(url: object) -> WebSocketURL:
    """Split a WebSocket URL (any object whose ``str()`` is the URL).

    An empty path becomes ``/`` and the query string is kept; IPv6 literals
    lose their brackets. Any scheme other than ``ws`` or ``wss`` is a
    :exc:`ValueError`.
    """
    parts = urlsplit(str(url))
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"WebSocket URL scheme must be ws or wss, not {scheme!r}")
    if not parts.hostname:
        raise ValueError(f"WebSocket URL has no host: {url}")
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    user_info = None
    if parts.username is not None:
        user_info = (parts.username, parts.password or "")
    return WebSocketURL(
        secure=scheme == "wss",
        host=parts.hostname,
        port=parts.port or _DEFAULT_PORTS[scheme],
        resource=resource,
        user_info=user_info,
    )


def _is_ipv6(host: str) -> bool:
    # No host name or IPv4 address contains a colon.
    return ":" in host


def host_header(host: str, port: int, secure: bool) -> str:
    """Build a ``Host`` value: IPv6 literals in brackets, default port omitted."""
    if _is_ipv6(host):
        host = f"[{host}]"
    if port != (443 if secure else 80):
        host = f"{host}:{port}"
    return host


class Endpoint:
    """One end of a TCP connection: an IP address, a port, and TLS or not."""

    def __init__(self, address: str | IPAddress, port: int, is_ssl: bool) -> None:
        self.address: IPAddress = ipaddress.ip_address(address)
        self.port = port
        self.is_ssl = is_ssl

    @property
    def url(self) -> str:
        """The ``ws://`` or ``wss://`` URL of this endpoint."""
        scheme = "wss" if self.is_ssl else "ws"
        return f"{scheme}://{host_header(str(self.address), self.port, self.is_ssl)}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Endpoint):
            return NotImplemented
        return (self.address, self.port, self.is_ssl) == (
            other.address,
            other.port,
            other.is_ssl,
        )

    def __hash__(self) -> int:
        return hash((self.address, self.port, self.is_ssl))

    def __repr__(self) -> str:
        return (
            f'Endpoint(address="{self.address}", port={self.port}, '
            f"is_ssl={self.is_ssl})"
        )


def _socket_endpoint(
    sock: trio.socket.SocketType, is_ssl: bool, remote: bool
) -> Endpoint | str:
    address = sock.getpeername() if remote else sock.getsockname()
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        return Endpoint(address[0], address[1], is_ssl)
    # A Unix socket: its path (the peer of a listening socket has none).
    return address if isinstance(address, str) else address.decode()


def stream_endpoint(stream: trio.abc.Stream, *, remote: bool) -> Endpoint | str:
    """Describe the local or remote end of a stream.

    Socket streams (plain or under TLS) give an :class:`Endpoint`, or the path
    for a Unix socket; any other stream gives a short text description.
    """
    is_ssl = isinstance(stream, trio.SSLStream)
    transport = (
        stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    )
    if isinstance(transport, trio.SocketStream):
        try:
            return _socket_endpoint(transport.socket, is_ssl, remote)
        except OSError:
            return "(disconnected socket)"
    return repr(stream)


def listener_endpoint(listener: trio.abc.Listener[trio.abc.Stream]) -> Endpoint | str:
    """Describe where a listener listens: an :class:`Endpoint`, a path, or text."""
    is_ssl = isinstance(listener, trio.SSLListener)
    transport = (
        listener.transport_listener
        if isinstance(listener, trio.SSLListener)
        else listener
    )
    if isinstance(transport, trio.SocketListener):
        try:
            return _socket_endpoint(transport.socket, is_ssl, remote=False)
        except OSError:
            return "(closed listener)"
    return repr(listener)
