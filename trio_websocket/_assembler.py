"""Turn data frames into messages, validating text as it arrives.

The engine hands us frames; a message is either one frame with FIN set or a
first frame followed by continuation frames. The engine already enforces the
message size limit and the ordering of continuation frames; what is left for
us is joining payloads and checking that text is UTF-8 fragment by fragment,
so that a peer cannot make us buffer a whole invalid message before noticing.
"""

from __future__ import annotations

import codecs

from websockets.frames import Frame, Opcode

_utf8_decoder = codecs.getincrementaldecoder("utf-8")


class InvalidText(Exception):
    """A text message is not valid UTF-8 (close code 1007)."""


class MessageAssembler:
    """Collect the frames of one message at a time."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._binary: list[bytes] = []
        # Set while a fragmented text message is in progress.
        self._decoder: codecs.IncrementalDecoder | None = None

    def feed(self, frame: Frame) -> str | bytes | None:
        """Add a data frame; return the message once its last frame arrives.

        Raises :exc:`InvalidText` as soon as a text fragment cannot be the
        beginning of valid UTF-8.
        """
        if frame.opcode is not Opcode.CONT:
            if frame.fin:
                # The common case: a message in a single frame.
                return self._whole(frame)
            if frame.opcode is Opcode.TEXT:
                self._decoder = _utf8_decoder()
        if self._decoder is not None:
            self._append_text(frame.data, frame.fin)
        else:
            self._binary.append(bytes(frame.data))
        if not frame.fin:
            return None
        return self._finish()

    @staticmethod
    def _whole(frame: Frame) -> str | bytes:
        if frame.opcode is Opcode.TEXT:
            try:
                return bytes(frame.data).decode()
            except UnicodeDecodeError as exc:
                raise InvalidText(_describe(exc)) from None
        return bytes(frame.data)

    def _append_text(self, data: bytes | bytearray | memoryview, final: bool) -> None:
        assert self._decoder is not None
        try:
            text = self._decoder.decode(data, final)
        except UnicodeDecodeError as exc:
            raise InvalidText(_describe(exc)) from None
        self._text.append(text)

    def _finish(self) -> str | bytes:
        if self._decoder is not None:
            self._decoder = None
            text, self._text = "".join(self._text), []
            return text
        binary, self._binary = b"".join(self._binary), []
        return binary


def _describe(exc: UnicodeDecodeError) -> str:
    return f"invalid UTF-8 in text message: {exc.reason}"
