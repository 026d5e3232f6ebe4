"""Turn data frames into messages and fragments, validating text on arrival.

Our codec (:mod:`._frames`) or the engine hands us data frames and already
enforces the order of continuation frames. What is left for us: the exact
size limits (the engine's leave room for control frames, see
:attr:`Settings.engine_max_size`), the cap on frames per message, decoding
text, and checking that it is UTF-8 fragment by fragment, so that a peer
cannot make us buffer a whole invalid message before we notice (close code
1007). A text frame that arrives over several reads is decoded as it comes
(:meth:`Assembler.start_early`), so that invalid bytes fail the connection
when they arrive, not when the rest of the frame does; each byte goes
through the message's decoder once, and the end of the message still
catches a truncated character.

A message in a single frame becomes a ``str`` or ``bytes``; each frame of a
fragmented message becomes a :class:`~._queue.Fragment`, which the
application either joins (``get_message``) or consumes one by one
(``get_fragments``), so memory stays bounded by the fragment.
:class:`MessageBuffer` joins them into one growing buffer, so a message
costs about its own size however many frames it came in.
"""

from __future__ import annotations

import codecs
import io
import math
from collections.abc import Callable
from typing import cast

from ._frames import CONT, TEXT
from ._iterators import BytesLike
from ._queue import Fragment, Item, Message
from ._settings import Settings

_utf8_decoder = codecs.getincrementaldecoder("utf-8")


class InvalidMessage(Exception):
    """A message the connection must refuse, with the close code to use."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class Assembler:
    """Decode the data frames of one connection, one message at a time.

    The message and frame size limits are checked here, exactly, on the
    decompressed payload; the engine's own limits are a little higher (see
    :attr:`Settings.engine_max_size`).
    """

    __slots__ = (
        "_decoder",
        "_early",
        "_early_size",
        "_frames",
        "_max_frame",
        "_max_frames",
        "_max_size",
        "_size",
    )

    def __init__(self, settings: Settings) -> None:
        self._max_size = settings.max_message_size
        self._max_frame = settings.max_fragment_size or math.inf
        self._max_frames = settings.max_message_fragments or math.inf
        self._size = 0  # of the message in progress
        self._frames = 0  # of the message in progress
        # Set while a fragmented text message is in progress.
        self._decoder: codecs.IncrementalDecoder | None = None
        # The text decoded early of the unfinished frame, and its size in bytes.
        self._early: list[str] | None = None
        self._early_size = 0

    def feed(self, opcode: int, data: BytesLike, fin: bool) -> Item:
        """Decode a data frame (its opcode, payload and FIN bit) into a whole
        message or a fragment.

        Raises :exc:`InvalidMessage` for a message or frame over the size
        limits or a message in too many frames (1009), and as soon as text
        cannot be valid UTF-8 (1007).
        """
        if opcode != CONT:
            self._size = self._frames = 0
        self._check_limits(len(data))
        if self._early is not None:
            text = self._finish_early(data, fin)
            return text if opcode == TEXT and fin else Fragment(text, fin)
        if opcode != CONT:
            if fin:
                # The common case: a message in a single frame.
                return _whole(opcode, data)
            self._decoder = _utf8_decoder() if opcode == TEXT else None
        if self._decoder is None:
            return Fragment(bytes(data), fin)
        return Fragment(self._decode(data, fin), fin)

    def start_early(self, opcode: int, length: int) -> bool:
        """Whether to decode a frame of ``length`` bytes while it arrives,
        with :meth:`feed_early`: a text frame that will pass the size limits
        (else they fail the connection first, once it is complete)."""
        if self._early is not None:
            return True
        if opcode == TEXT:
            size, frames = length, 1
        elif opcode == CONT and self._decoder is not None:
            size, frames = self._size + length, self._frames + 1
        else:
            return False
        if size > self._max_size or length > self._max_frame:
            return False
        if frames > self._max_frames:
            return False
        if opcode == TEXT:
            self._decoder = _utf8_decoder()
        self._early = []
        return True

    def feed_early(self, data: BytesLike) -> None:
        """Decode the part of the frame that just arrived (see
        :meth:`start_early`); raises :exc:`InvalidMessage` (1007) as soon as
        the text cannot be valid UTF-8."""
        assert self._early is not None
        self._early.append(self._decode(data, False))
        self._early_size += len(data)

    def _finish_early(self, data: BytesLike, fin: bool) -> str:
        """The text of a frame decoded early, from its complete payload."""
        assert self._early is not None
        pieces, self._early = self._early, None
        pieces.append(self._decode(memoryview(data)[self._early_size :], fin))
        self._early_size = 0
        return "".join(pieces)

    def _decode(self, data: BytesLike, final: bool) -> str:
        assert self._decoder is not None
        try:
            return self._decoder.decode(data, final)
        except UnicodeDecodeError as exc:
            raise _invalid_text(exc) from None

    def _check_limits(self, size: int) -> None:
        self._size += size
        self._frames += 1
        if self._size > self._max_size:
            raise InvalidMessage(1009, f"message over {self._max_size} bytes")
        if size > self._max_frame:
            raise InvalidMessage(1009, f"frame over {self._max_frame} bytes")
        if self._frames > self._max_frames:
            raise InvalidMessage(1009, f"message in over {self._max_frames} frames")


class MessageBuffer:
    """Joins the fragments of one message as they come.

    One growing buffer rather than a list of pieces: a list costs a pointer
    and an object header per piece, and ``b"".join`` another 80 bytes each,
    which for one-byte fragments is over a hundred times the payload.
    """

    def __init__(self, first: Message) -> None:
        buffer = io.StringIO() if isinstance(first, str) else io.BytesIO()
        # Every fragment of a message has the type of the first.
        self._write = cast("Callable[[Message], object]", buffer.write)
        self._value = cast("Callable[[], Message]", buffer.getvalue)
        self._write(first)

    def add(self, piece: Message) -> None:
        """Append the next fragment (of the same type as the first)."""
        self._write(piece)

    def message(self) -> Message:
        """The whole message."""
        return self._value()


def _whole(opcode: int, data: BytesLike) -> str | bytes:
    if opcode == TEXT:
        try:
            return str(data, "utf-8")
        except UnicodeDecodeError as exc:
            raise _invalid_text(exc) from None
    return bytes(data)


def _invalid_text(exc: UnicodeDecodeError) -> InvalidMessage:
    return InvalidMessage(1007, f"invalid UTF-8 in text message: {exc.reason}")
