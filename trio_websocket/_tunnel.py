"""Opening a tunnel through a proxy: HTTP ``CONNECT`` and SOCKS5 (RFC 1928).

Both handshakes are short exchanges at the start of a TCP connection to the
proxy; once they succeed, the same connection carries the bytes of the
WebSocket connection (or of the TLS connection inside which it runs) to and
from the server, untouched. A refusal raises :exc:`ProxyError` at once.
"""

from __future__ import annotations

import ipaddress
import socket

import trio

from ._errors import ProxyError
from ._proxy import Proxy, authority, basic_auth
from ._tcp import open_tcp

# Largest CONNECT response head we read before giving up on the proxy.
_MAX_RESPONSE_HEAD = 16 * 2**10

_SOCKS_VERSION = 5
_NO_AUTH, _USER_PASSWORD, _NO_METHOD = 0x00, 0x02, 0xFF
_CONNECT, _IPV4, _DOMAIN, _IPV6 = 0x01, 0x01, 0x03, 0x04
_SOCKS_REPLIES = {
    1: "general SOCKS server failure",
    2: "connection not allowed by ruleset",
    3: "network unreachable",
    4: "host unreachable",
    5: "connection refused",
    6: "TTL expired",
    7: "command not supported",
    8: "address type not supported",
}


async def open_tunnel(proxy: Proxy, host: str, port: int) -> trio.SocketStream:
    """Connect to ``proxy`` and have it open a tunnel to ``host``:``port``.

    Returns the TCP stream to the proxy, which now carries the tunnel. If the
    proxy refuses, the stream is closed and :exc:`ProxyError` raised.
    """
    stream = await open_tcp(proxy.host, proxy.port)
    try:
        reader = _Reader(stream, proxy)
        if proxy.scheme == "http":
            await _http_connect(reader, host, port)
        else:
            await _socks5_connect(reader, host, port)
        reader.check_drained()
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream


class _Reader:
    """Exact-size and delimited reads from the proxy, for the handshakes."""

    def __init__(self, stream: trio.SocketStream, proxy: Proxy) -> None:
        self.stream = stream
        self.proxy = proxy
        self._buffer = bytearray()

    def error(self, message: str, status_code: int | None = None) -> ProxyError:
        return ProxyError(f"proxy {self.proxy}: {message}", status_code)

    async def _fill(self) -> None:
        try:
            data = await self.stream.receive_some()
        except trio.BrokenResourceError as exc:
            raise self.error(f"connection lost: {exc.__cause__}") from exc
        if not data:
            raise self.error("closed the connection during the handshake")
        self._buffer += data

    async def exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            await self._fill()
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def until(self, delimiter: bytes, limit: int) -> bytes:
        while (end := self._buffer.find(delimiter)) < 0:
            if len(self._buffer) > limit:
                raise self.error(f"response longer than {limit} bytes")
            await self._fill()
        return await self.exactly(end + len(delimiter))

    def check_drained(self) -> None:
        if self._buffer:
            raise self.error("sent data before the tunnel was used")


async def _http_connect(reader: _Reader, host: str, port: int) -> None:
    target = authority(host, port)
    request = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
    if reader.proxy.credentials is not None:
        request += f"Proxy-Authorization: {basic_auth(reader.proxy.credentials)}\r\n"
    await reader.stream.send_all(f"{request}\r\n".encode())
    head = await reader.until(b"\r\n\r\n", _MAX_RESPONSE_HEAD)
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    version, _, rest = status_line.partition(" ")
    code, _, phrase = rest.partition(" ")
    if not (version.startswith("HTTP/1.") and code.isdigit() and len(code) == 3):
        raise reader.error(f"not an HTTP response: {status_line!r}")
    if not code.startswith("2"):
        refusal = f"refused the tunnel to {target}: HTTP {code} {phrase}".rstrip()
        raise reader.error(refusal, int(code))


async def _socks5_connect(reader: _Reader, host: str, port: int) -> None:
    credentials = reader.proxy.credentials
    methods = bytes([_NO_AUTH, _USER_PASSWORD] if credentials else [_NO_AUTH])
    await reader.stream.send_all(bytes([_SOCKS_VERSION, len(methods)]) + methods)
    version, method = await reader.exactly(2)
    if version != _SOCKS_VERSION:
        raise reader.error("is not a SOCKS5 proxy")
    if method == _USER_PASSWORD and credentials is not None:
        await _socks5_login(reader, credentials)
    elif method != _NO_AUTH:
        hint = "" if credentials else " (put user:password@ in the proxy URL)"
        raise reader.error(f"accepts none of the authentication methods offered{hint}")
    address = await _socks5_address(reader.proxy, host, port)
    request = bytes([_SOCKS_VERSION, _CONNECT, 0]) + address + port.to_bytes(2, "big")
    await reader.stream.send_all(request)
    _, reply, _, address_type = await reader.exactly(4)
    if reply:
        problem = _SOCKS_REPLIES.get(reply, f"error {reply}")
        raise reader.error(f"refused the tunnel to {authority(host, port)}: {problem}")
    await _skip_bound_address(reader, address_type)


async def _socks5_login(reader: _Reader, credentials: tuple[str, str]) -> None:
    fields = [field.encode() for field in credentials]
    if any(len(field) > 255 for field in fields):
        raise reader.error("SOCKS5 user names and passwords are 255 bytes at most")
    message = b"\x01" + b"".join(bytes([len(field)]) + field for field in fields)
    await reader.stream.send_all(message)
    _, status = await reader.exactly(2)
    if status != 0:
        raise reader.error("rejected the user name or password")


async def _socks5_address(proxy: Proxy, host: str, port: int) -> bytes:
    """The destination as SOCKS5 encodes it; ``socks5://`` resolves it here."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if proxy.scheme == "socks5h":
            name = host.encode("idna")
            return bytes([_DOMAIN, len(name)]) + name
        results = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        address = ipaddress.ip_address(results[0][4][0])
    kind = _IPV4 if address.version == 4 else _IPV6
    return bytes([kind]) + address.packed


async def _skip_bound_address(reader: _Reader, address_type: int) -> None:
    if address_type == _DOMAIN:
        (length,) = await reader.exactly(1)
    elif address_type in (_IPV4, _IPV6):
        length = 4 if address_type == _IPV4 else 16
    else:
        raise reader.error(f"sent an unknown address type {address_type}")
    await reader.exactly(length + 2)
