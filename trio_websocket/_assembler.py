"""Turn data frames into messages and fragments, validating text on arrival.

The engine hands us frames and already enforces the size limits and the
order of continuation frames. What is left for us: decoding text, and
checking that it is UTF-8 fragment by fragment, so that a peer cannot make
us buffer a whole invalid message before we notice (close code 1007).

A message in a single frame becomes a ``str`` or ``bytes``; each frame of a
fragmented message becomes a :class:`~._queue.Fragment`, which the
application either joins (``get_message``) or consumes one by one
(``get_fragments``), so memory stays bounded by the fragment.
"""

from __future__ import annotations

import codecs

from websockets.frames import Frame, Opcode

from ._queue import Fragment, Item

_utf8_decoder = codecs.getincrementaldecoder("utf-8")


class InvalidMessage(Exception):
    """A message the connection must refuse, with the close code to use."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class Assembler:
    """Decode the data frames of one connection, one message at a time.

    ``max_size`` is checked here, exactly, on the decompressed payload; the
    engine's own limit is set a little higher when compression is on,
    because a compressed frame can be slightly larger than its content.
    """

    def __init__(self, max_size: float) -> None:
        self._max_size = max_size
        self._size = 0  # of the message in progress
        # Set while a fragmented text message is in progress.
        self._decoder: codecs.IncrementalDecoder | None = None

    def feed(self, frame: Frame) -> Item:
        """Decode a data frame into a whole message or a fragment.

        Raises :exc:`InvalidMessage` for a message over the size limit (1009)
        and as soon as text cannot be valid UTF-8 (1007).
        """
        opcode = frame.opcode
        if opcode is not Opcode.CONT:
            self._size = 0
        self._size += len(frame.data)
        if self._size > self._max_size:
            raise InvalidMessage(1009, f"message over {self._max_size} bytes")
        if opcode is not Opcode.CONT:
            if frame.fin:
                # The common case: a message in a single frame.
                return _whole(frame)
            self._decoder = _utf8_decoder() if opcode is Opcode.TEXT else None
        if self._decoder is None:
            return Fragment(bytes(frame.data), frame.fin)
        try:
            text = self._decoder.decode(frame.data, frame.fin)
        except UnicodeDecodeError as exc:
            raise _invalid_text(exc) from None
        return Fragment(text, frame.fin)


def _whole(frame: Frame) -> str | bytes:
    if frame.opcode is Opcode.TEXT:
        try:
            return bytes(frame.data).decode()
        except UnicodeDecodeError as exc:
            raise _invalid_text(exc) from None
    return bytes(frame.data)


def _invalid_text(exc: UnicodeDecodeError) -> InvalidMessage:
    return InvalidMessage(1007, f"invalid UTF-8 in text message: {exc.reason}")
