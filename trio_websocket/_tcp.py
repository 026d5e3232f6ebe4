"""Opening a TCP connection to a host name or an IP address.

:func:`trio.open_tcp_stream` resolves the name and races the addresses it
gets ("happy eyeballs"), which takes a nursery, a task and a few cancel
scopes per attempt. For an IP address there is nothing to resolve and only
one address to try, so it is connected directly: on loopback that is a
noticeable share of a whole WebSocket handshake.
"""

from __future__ import annotations

import socket

import trio


async def open_tcp(host: str, port: int) -> trio.SocketStream:
    """A TCP stream to ``host``:``port`` (a name, or an IPv4 or IPv6 address)."""
    family = _address_family(host)
    if family is None:
        return await trio.open_tcp_stream(host, port)
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


def _address_family(host: str) -> socket.AddressFamily | None:
    """The family of an IP address literal; ``None`` for a host name."""
    # inet_pton is C; the ipaddress module costs more than the connect.
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return family
    return None
