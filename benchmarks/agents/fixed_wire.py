"""Wire formats of the fixed peer: WebSocket (RFC 6455 + 7692) and plain frames.

Deliberately minimal and fast: no UTF-8 validation, no size limits; it is a
measuring instrument talking to trusted peers on loopback, never a library.
Messages are ``(opcode, payload)`` pairs; opcode 1 is text and 2 binary, the
same numbers as the plain framing's kind byte.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
import zlib
from typing import Protocol

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - the fixed venv installs websockets

    def apply_mask(
        data: bytes | bytearray | memoryview, mask: bytes | bytearray
    ) -> bytes:
        size = len(data)
        key = int.from_bytes((mask * (size // 4 + 1))[:size], "big")
        return (int.from_bytes(data, "big") ^ key).to_bytes(size, "big")


GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG = 1, 2, 8, 9, 10
_TAIL = b"\x00\x00\xff\xff"
_CONCAT_LIMIT = 16384
Frame = tuple[int, bytes]


class Framer(Protocol):
    def feed(self, data: bytes) -> list[Frame]: ...

    def frame(self, opcode: int, payload: bytes) -> list[bytes]: ...


class PlainFramer:
    """5-byte header: kind (1 text, 2 binary), big-endian length."""

    HEADER = struct.Struct("!BI")

    def __init__(self) -> None:
        self._buffer = bytearray()

    def frame(self, opcode: int, payload: bytes) -> list[bytes]:
        header = self.HEADER.pack(opcode, len(payload))
        if len(payload) < _CONCAT_LIMIT:
            return [header + payload]
        return [header, payload]

    def feed(self, data: bytes) -> list[Frame]:
        buffer = self._buffer
        buffer += data
        frames: list[Frame] = []
        position, size, header = 0, len(buffer), self.HEADER
        while size - position >= 5:
            kind, length = header.unpack_from(buffer, position)
            end = position + 5 + length
            if end > size:
                break
            with memoryview(buffer) as view:
                frames.append((kind, bytes(view[position + 5 : end])))
            position = end
        if position:
            del buffer[:position]
        return frames


class Deflate:
    """permessage-deflate for one direction pair (RFC 7692)."""

    def __init__(self, window_bits: int = 15, reset: bool = False) -> None:
        self._bits = max(window_bits, 9)  # zlib refuses 8 for raw deflate
        self._reset = reset
        self._compressor = self._new_compressor()
        self._decompressor = zlib.decompressobj(-15)

    def _new_compressor(self) -> zlib._Compress:
        return zlib.compressobj(6, zlib.DEFLATED, -self._bits)

    def compress(self, data: bytes) -> bytes:
        if self._reset:
            self._compressor = self._new_compressor()
        out = self._compressor.compress(data) + self._compressor.flush(
            zlib.Z_SYNC_FLUSH
        )
        return out[:-4] if out.endswith(_TAIL) else out

    def decompress(self, data: bytes) -> bytes:
        return self._decompressor.decompress(data + _TAIL)


class WebSocketFramer:
    """Frames for one side of an open WebSocket connection."""

    def __init__(self, *, client: bool, deflate: Deflate | None = None) -> None:
        self._client = client
        self._key = os.urandom(4)  # one key per connection: cheap, still masked
        self._deflate = deflate
        self._buffer = bytearray()
        self._parts: list[bytes] = []
        self._opcode = 0
        self._compressed = False

    def frame(self, opcode: int, payload: bytes) -> list[bytes]:
        first = 0x80 | opcode
        if self._deflate is not None and opcode in (TEXT, BINARY):
            payload = self._deflate.compress(payload)
            first |= 0x40
        size = len(payload)
        mask_bit = 0x80 if self._client else 0
        if size < 126:
            header = bytes((first, mask_bit | size))
        elif size < 65536:
            header = struct.pack("!BBH", first, mask_bit | 126, size)
        else:
            header = struct.pack("!BBQ", first, mask_bit | 127, size)
        if self._client:
            header += self._key
            payload = apply_mask(payload, self._key)
        if size < _CONCAT_LIMIT:
            return [header + payload]
        return [header, payload]

    def feed(self, data: bytes) -> list[Frame]:
        buffer = self._buffer
        buffer += data
        frames: list[Frame] = []
        position, size = 0, len(buffer)
        while size - position >= 2:
            first, second = buffer[position], buffer[position + 1]
            length, start = second & 0x7F, position + 2
            if length == 126:
                if size - position < 4:
                    break
                length, start = (
                    int.from_bytes(buffer[start : start + 2], "big"),
                    start + 2,
                )
            elif length == 127:
                if size - position < 10:
                    break
                length, start = (
                    int.from_bytes(buffer[start : start + 8], "big"),
                    start + 8,
                )
            masked = second & 0x80
            end = start + (4 if masked else 0) + length
            if end > size:
                break
            with memoryview(buffer) as view:
                if masked:
                    key = bytes(view[start : start + 4])
                    payload = apply_mask(view[start + 4 : end], key)
                else:
                    payload = bytes(view[start:end])
            position = end
            self._add_frame(first, payload, frames)
        if position:
            del buffer[:position]
        return frames

    def _add_frame(self, first: int, payload: bytes, frames: list[Frame]) -> None:
        opcode = first & 0x0F
        if opcode >= CLOSE:
            frames.append((opcode, payload))
            return
        if opcode:
            self._opcode, self._compressed, self._parts = opcode, bool(first & 0x40), []
        self._parts.append(payload)
        if first & 0x80:
            message = b"".join(self._parts) if len(self._parts) > 1 else payload
            self._parts = []
            if self._compressed and self._deflate is not None:
                message = self._deflate.decompress(message)
            frames.append((self._opcode, message))


# ---------------------------------------------------------------- handshake


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def parse_head(head: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    """The first line and the (lower-cased) headers of an HTTP head."""
    lines = head.split(b"\r\n")
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        value = value.strip()
        headers[name] = headers[name] + b", " + value if name in headers else value
    return lines[0], headers


def _extension_params(header: bytes) -> dict[str, str] | None:
    """The parameters of the first permessage-deflate offer or answer."""
    for offer in header.decode("latin-1").split(","):
        name, *params = (part.strip() for part in offer.split(";"))
        if name == "permessage-deflate":
            pairs = (param.partition("=") for param in params)
            return {key.strip(): value.strip().strip('"') for key, _, value in pairs}
    return None


def server_response(
    head: bytes, *, deflate_enabled: bool
) -> tuple[bytes, Deflate | None]:
    """The 101 response to a client's upgrade request, and the negotiated deflate.

    With compression on, the fixed server accepts the client's first
    permessage-deflate offer as it is (15-bit windows, context takeover)
    unless the offer asks for less.
    """
    _, headers = parse_head(head)
    lines = [
        b"HTTP/1.1 101 Switching Protocols",
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Accept: " + accept_key(headers[b"sec-websocket-key"]),
    ]
    deflate = None
    offer = _extension_params(headers.get(b"sec-websocket-extensions", b""))
    if deflate_enabled and offer is not None:
        answer = ["permessage-deflate"]
        bits = 15
        if "server_no_context_takeover" in offer:
            answer.append("server_no_context_takeover")
        if "client_no_context_takeover" in offer:
            answer.append("client_no_context_takeover")
        if offer.get("server_max_window_bits"):
            bits = int(offer["server_max_window_bits"])
            answer.append(f"server_max_window_bits={bits}")
        deflate = Deflate(bits, reset="server_no_context_takeover" in offer)
        lines.append(b"Sec-WebSocket-Extensions: " + "; ".join(answer).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n", deflate


def client_request(host: str, port: int, *, deflate: bool) -> tuple[bytes, bytes]:
    """An upgrade request and the Sec-WebSocket-Accept value it expects."""
    key = base64.b64encode(os.urandom(16))
    lines = [
        b"GET / HTTP/1.1",
        f"Host: {host}:{port}".encode(),
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Key: " + key,
        b"Sec-WebSocket-Version: 13",
    ]
    if deflate:
        lines.append(
            b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"
        )
    return b"\r\n".join(lines) + b"\r\n\r\n", accept_key(key)


def client_deflate(head: bytes, expected_accept: bytes) -> tuple[bool, Deflate | None]:
    """Check the server's 101 response; return (ok, negotiated deflate)."""
    status, headers = parse_head(head)
    if (
        b" 101 " not in status + b" "
        or headers.get(b"sec-websocket-accept") != expected_accept
    ):
        return False, None
    answer = _extension_params(headers.get(b"sec-websocket-extensions", b""))
    if answer is None:
        return True, None
    bits = int(answer.get("client_max_window_bits") or 15)
    return True, Deflate(bits, reset="client_no_context_takeover" in answer)
