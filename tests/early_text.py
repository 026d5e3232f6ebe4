"""The tests' model of text checked as it arrives (our codec's path).

The engine hands over complete frames only. Our connection, parsing frames
itself, also decodes the start of a text frame that is still arriving and
fails the connection with 1007 as soon as it cannot be valid UTF-8 -- but
only for a frame whose header passes every check the engine makes on the
whole frame (reserved bits, the order of fragments, the size limits): the
engine's close codes win. This model, built on the engine's frame
boundaries and not on our codec, tells the oracles when that happens.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

from raw_peer import CONT, TEXT
from websockets.protocol import Protocol

from trio_websocket._engine import between_frames

_decoder = codecs.getincrementaldecoder("utf-8")


@dataclass
class InProgress:
    """A fragmented message the peer is sending."""

    decoder: codecs.IncrementalDecoder | None  # None for binary
    size: int = 0


class ArrivingFrame:
    """What arrived of the frame an engine is reading.

    Feed the engine one byte at a time and :meth:`track` each byte.
    """

    def __init__(self) -> None:
        self.data = bytearray()

    def track(self, engine: Protocol, byte: bytes) -> None:
        if not engine.reader.buffer and between_frames(engine.parser):
            self.data.clear()  # the byte ended a frame (or was discarded)
        else:
            self.data += byte


def refused_early(
    arriving: bytes | bytearray, message: InProgress | None, limit: float
) -> str | None:
    """The close reason (1007) for the unfinished frame ``arriving``, when
    what arrived of it is already invalid UTF-8; None otherwise.

    ``message`` is the fragmented message in progress, ``limit`` the size
    limit on messages.
    """
    parsed = _parse_start(arriving)
    if parsed is None:
        return None
    first, length, payload = parsed
    opcode = first & 0x0F
    if first & 0x70 or not payload:
        return None
    if opcode == TEXT and message is None:
        decoder, size = _decoder(), length
    elif opcode == CONT and message is not None and message.decoder is not None:
        decoder = _decoder()
        decoder.setstate(message.decoder.getstate())
        size = message.size + length
    else:
        return None
    if size > limit:
        return None  # refused once complete, with 1009
    try:
        decoder.decode(payload, False)
    except UnicodeDecodeError as exc:
        return f"invalid UTF-8 in text message: {exc.reason}"
    return None


def _parse_start(data: bytes | bytearray) -> tuple[int, int, bytes] | None:
    """The first byte, the length and the arrived payload (unmasked) of an
    unfinished frame; None while its header is incomplete."""
    if len(data) < 2:
        return None
    length = data[1] & 0x7F
    head = 2 if length < 126 else 4 if length == 126 else 10
    if length >= 126:
        if len(data) < head:
            return None
        length = int.from_bytes(data[2:head], "big")
    key = bytes(data[head : head + 4]) if data[1] & 0x80 else b"\0\0\0\0"
    head += 4 if data[1] & 0x80 else 0
    if len(data) < head:
        return None
    payload = bytes(b ^ key[i % 4] for i, b in enumerate(data[head:]))
    return data[0], length, payload
