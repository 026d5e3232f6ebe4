"""Our own frame codec for the hot path: data frames without the engine.

The engine (``websockets.protocol.Protocol``) parses frames with a chain of
generators and makes a ``Frame`` object of each, which costs several times
what a plain parser costs for a small frame. On a connection without
extensions, :class:`FrameReader` parses the receive buffer by offset
instead, validates data frames exactly as the engine would, and hands them
over as ``(opcode, payload, fin)``; :func:`encode_frame` frames outgoing
data. The engine stays the reference and keeps everything else: the
handshake, extensions, control frames (our reader hands it each one as raw
bytes, so it answers pings and does the closing handshake's bookkeeping)
and the input after a close frame or a failure.

Validation follows the engine's order, so a peer's input fails the
connection with the engine's close code at the same byte:

* from the first two bytes: an unknown opcode, or the wrong mask bit
  (1002);
* from the length: a frame over the engine's size limit, which counts a
  message's earlier fragments (1009);
* once the frame is complete: reserved bits set, a continuation without a
  message, or a new message inside a fragmented one (1002). Control frames
  are checked by the engine itself.

While a data frame arrives over several reads, :meth:`FrameReader.new_payload`
hands over its payload as it comes, so that text is checked early (see
:mod:`._assembler`) -- only once its header has passed all of the above,
so that the engine's close code still wins over ours (1007).

``tests/test_frame_codec.py`` feeds the same byte streams to this codec and
to the engine and requires the same frames and the same failures.

Setting the environment variable ``TRIO_WEBSOCKET_ENGINE_FRAMES=1`` before
import (or :data:`ENGINE_FRAMES` to true before a connection opens) leaves
every frame to the engine, for comparisons and benchmarks.

The module is kept to plain typed code (ints, bytes, small classes with
``__slots__``, no generators or closures) so that it can be compiled.
"""

from __future__ import annotations

import os

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - the engine ships without its C part
    from websockets.utils import apply_mask

#: Leave every frame to the engine (see the module's docstring).
ENGINE_FRAMES = os.environ.get("TRIO_WEBSOCKET_ENGINE_FRAMES", "") == "1"

CONT = 0
TEXT = 1
BINARY = 2
CLOSE = 8
PING = 9
PONG = 10

# What FrameReader.next_frame() found.
NEED_DATA = 0
DATA = 1
CONTROL = 2
FAILED = 3

PROTOCOL_ERROR = 1002
TOO_BIG = 1009

# Below this size a frame goes out as one bytes object (header and payload
# joined); above it, the payload is written as it is, without a copy.
JOIN_BELOW = 65536


class FrameReader:
    """Parses the frames of one connection's input, by offset in a buffer.

    :meth:`feed` a chunk read from the network, then call :meth:`next_frame`
    until it returns :data:`NEED_DATA` or :data:`FAILED`. Each result sets
    the matching attributes: ``opcode``, ``payload`` (unmasked) and ``fin``
    for :data:`DATA`; ``frame`` (the whole frame, still masked) for
    :data:`CONTROL`; ``error_code`` and ``error_reason`` for :data:`FAILED`,
    after which the reader is done. ``missing`` is how many bytes the frame
    being read still lacks, once its header is in (0 otherwise); then
    ``opcode`` and ``length`` (of its payload) are set too.

    ``max_message`` and ``max_fragment`` are the engine's limits (-1 for
    none); ``masked`` is true on the server side, where every frame must be.
    """

    __slots__ = (
        "_buffer",
        "_mask_bit",
        "_max_fragment",
        "_max_message",
        "_message_size",
        "_pending",
        "_pos",
        "_reported",
        "error_code",
        "error_reason",
        "fin",
        "frame",
        "length",
        "missing",
        "opcode",
        "payload",
    )

    def __init__(self, *, masked: bool, max_message: int, max_fragment: int) -> None:
        self._buffer: bytes | bytearray = b""
        self._pending = bytearray()  # the unparsed rest, across reads
        self._pos = 0
        self._mask_bit = 1 if masked else 0
        self._max_message = max_message
        self._max_fragment = max_fragment
        # Wire size of the fragmented message in progress; -1 between messages.
        self._message_size = -1
        self._reported = 0  # payload of the unfinished frame handed over
        self.opcode = 0
        self.length = 0
        self.fin = False
        self.payload = b""
        self.frame = b""
        self.missing = 0
        self.error_code = 0
        self.error_reason = ""

    def feed(self, chunk: bytes | bytearray) -> None:
        """Add bytes read from the network."""
        data = self._buffer
        pos = self._pos
        pending = self._pending
        if pos >= len(data):  # everything parsed: parse the chunk in place
            self._buffer = chunk
            self._pos = 0
            if pending:
                pending.clear()  # let a large frame's buffer go
            return
        if data is pending:
            if pos:
                del pending[:pos]
        else:
            pending.clear()
            with memoryview(data) as view, view[pos:] as rest:
                pending += rest  # one copy, where a slice makes two
        pending += chunk
        self._buffer = pending
        self._pos = 0

    def take_rest(self) -> bytes:
        """The bytes not parsed yet, removed: for the engine to take over."""
        rest = bytes(self._buffer[self._pos :])
        self._buffer = b""
        self._pos = 0
        self._pending.clear()
        return rest

    def next_frame(self) -> int:
        """Parse the next frame: :data:`NEED_DATA`, :data:`DATA`, ..."""
        data = self._buffer
        pos = self._pos
        available = len(data) - pos
        self.missing = 0
        if available < 2:
            return NEED_DATA
        first = data[pos]
        second = data[pos + 1]
        opcode = first & 0x0F
        if opcode > BINARY and (opcode < CLOSE or opcode > PONG):
            return self._fail(PROTOCOL_ERROR, "invalid opcode")
        if second >> 7 != self._mask_bit:
            return self._fail(PROTOCOL_ERROR, "incorrect masking")
        length = second & 0x7F
        head = 2
        if length >= 126:
            head = 4 if length == 126 else 10
            if available < head:
                return NEED_DATA
            length = int.from_bytes(data[pos + 2 : pos + head], "big")
        limit = self._limit()
        if limit >= 0 and length > limit:
            return self._fail(TOO_BIG, self._too_big(length, limit))
        head += 4 * self._mask_bit
        end = pos + head + length
        self.opcode = opcode
        if end > len(data):
            self.missing = end - len(data)
            self.length = length
            return NEED_DATA
        self._pos = end
        self._reported = 0
        if opcode >= CLOSE:
            self.frame = bytes(data[pos:end])
            return CONTROL
        failure = self._check_data_frame(first)
        if failure:
            return self._fail(PROTOCOL_ERROR, failure)
        fin = first >= 0x80
        self.fin = fin
        self.payload = self._unmask(data, pos + head, end, 0)
        if fin:
            self._message_size = -1
        elif opcode == CONT:
            self._message_size += length
        else:
            self._message_size = length
        return DATA

    def unfinished_data_frame(self) -> bool:
        """After :data:`NEED_DATA`: whether a data frame is arriving that
        passes every check the engine makes on the complete frame."""
        if not self.missing or self.opcode >= CLOSE:
            return False
        return not self._check_data_frame(self._buffer[self._pos])

    def new_payload(self) -> bytes:
        """The payload of the :meth:`unfinished_data_frame` that arrived
        since the last call, unmasked."""
        data = self._buffer
        done = self._reported
        start = self._pos + self._header_size() + done
        if start >= len(data):
            return b""
        self._reported = done + len(data) - start
        return self._unmask(data, start, len(data), done)

    def _header_size(self) -> int:
        """The header size of the frame at ``_pos``, mask key included."""
        length = self._buffer[self._pos + 1] & 0x7F
        head = 2 if length < 126 else 4 if length == 126 else 10
        return head + 4 * self._mask_bit

    def _check_data_frame(self, first: int) -> str:
        """Why a complete data frame fails the connection, or ``""``."""
        if first & 0x70:
            return "reserved bits must be 0"
        if first & 0x0F == CONT:
            if self._message_size < 0:
                return "unexpected continuation frame"
        elif self._message_size >= 0:
            return "expected a continuation frame"
        return ""

    def _limit(self) -> int:
        """The engine's size limit for the next frame, -1 for none."""
        limit = self._max_message
        if limit >= 0 and self._message_size >= 0:
            limit -= self._message_size
        fragment = self._max_fragment
        if fragment >= 0 and (limit < 0 or fragment < limit):
            limit = fragment
        return limit

    def _too_big(self, length: int, limit: int) -> str:
        """The engine's reason for a frame over its limit."""
        done = self._message_size
        if done < 0:
            return f"frame with {length} bytes exceeds limit of {limit} bytes"
        return (
            f"frame with {length} bytes after reading {done} bytes"
            f" exceeds limit of {limit + done} bytes"
        )

    def _unmask(
        self, data: bytes | bytearray, start: int, end: int, done: int
    ) -> bytes:
        """The payload bytes ``data[start:end]``, unmasked; ``done`` bytes of
        the payload come before ``start``, after the key."""
        if not self._mask_bit:
            if isinstance(data, bytes):
                return data[start:end]
            with memoryview(data) as view, view[start:end] as payload:
                return bytes(payload)  # one copy, where a slice makes two
        key_at = start - done - 4
        key = bytes(data[key_at : key_at + 4])
        turn = done % 4
        if turn:
            key = key[turn:] + key[:turn]
        with memoryview(data) as view, view[start:end] as payload:
            return apply_mask(payload, key)

    def _fail(self, code: int, reason: str) -> int:
        self.error_code = code
        self.error_reason = reason
        self._buffer = b""
        self._pos = 0
        self._pending.clear()
        return FAILED


def encode_frame(
    opcode: int, payload: bytes | bytearray | memoryview, mask: bool
) -> tuple[bytes, bytes | bytearray | memoryview]:
    """One final frame as ``(head, body)``, to be written in that order.

    ``mask`` on the client side, with a fresh random key. A small frame
    comes whole in ``head`` (``body`` is empty): one write of a joined
    frame is cheaper than two. A large one keeps its payload apart, so it
    is not copied (unless masking makes a copy anyway).
    """
    length = len(payload)
    first = 0x80 | opcode
    second = 0x80 if mask else 0
    if length < 126:
        header = bytes((first, second | length))
    elif length < 65536:
        header = bytes((first, second | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((first, second | 127)) + length.to_bytes(8, "big")
    body: bytes | bytearray | memoryview = payload
    if mask:
        key = os.urandom(4)
        header += key
        body = apply_mask(payload, key)
    if length < JOIN_BELOW:
        return header + body, b""
    return header, body
