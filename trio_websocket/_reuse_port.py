"""Listening sockets that several processes share, with ``SO_REUSEPORT``.

The kernel spreads incoming connections over every socket bound to the same
address with ``SO_REUSEPORT`` (Linux's load balancing). Both
:func:`~trio_websocket.serve_websocket` (``reuse_port=True``) and the worker
supervisor open their sockets here.
"""

from __future__ import annotations

import socket
import ssl
import sys
from typing import Any

import trio

BACKLOG = 0xFFFF  # the kernel caps it at net.core.somaxconn


def reuse_port_supported() -> bool:
    """Whether this platform has ``SO_REUSEPORT`` with Linux's load balancing."""
    return hasattr(socket, "SO_REUSEPORT") and sys.platform.startswith("linux")


async def bind_reuse_port(
    host: str | bytes | None, port: int
) -> list[trio.socket.SocketType]:
    """Sockets bound with SO_REUSEADDR and SO_REUSEPORT, one per address.

    The addresses are those ``getaddrinfo`` gives for ``host`` (``None``:
    every interface, as :func:`trio.open_tcp_listeners` does). With
    ``port=0`` the first socket picks a free port and the others share it.
    The sockets are not listening yet.
    """
    if not reuse_port_supported():
        raise OSError("SO_REUSEPORT load balancing is only available on Linux")
    addresses = await trio.socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[trio.socket.SocketType] = []
    try:
        for family, kind, proto, _, sockaddr in addresses:
            sock = trio.socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                sockaddr = (sockaddr[0], sockets[0].getsockname()[1], *sockaddr[2:])
            await sock.bind(sockaddr)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


async def open_reuse_port_listeners(
    host: str | bytes | None, port: int, ssl_context: ssl.SSLContext | None
) -> list[trio.abc.Listener[Any]]:
    """Listeners on ``host``:``port`` that other processes may share (SO_REUSEPORT)."""
    sockets = await bind_reuse_port(host, port)
    try:
        for sock in sockets:
            sock.listen(BACKLOG)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return [listener_on(sock, ssl_context) for sock in sockets]


def listener_on(
    sock: trio.socket.SocketType, ssl_context: ssl.SSLContext | None
) -> trio.abc.Listener[Any]:
    """A listener on the listening socket ``sock``; TLS with ``ssl_context``."""
    listener: trio.abc.Listener[Any] = trio.SocketListener(sock)
    if ssl_context is not None:
        listener = trio.SSLListener(listener, ssl_context, https_compatible=True)
    return listener
