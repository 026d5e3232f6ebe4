"""Where ``trio-websocket connect`` reads lines and shows messages.

:class:`PipeConsole` is for scripts: one stdin line is one message, one
received message is one stdout line (binary as hexadecimal). ``TtyConsole``
is for people: a ``> `` prompt with a small line editor in a terminal put in
non-canonical mode, received messages printed above the line being typed
without garbling it, and ``#`` notes for pings, pongs and the close.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import re
import termios
from collections import deque
from collections.abc import Iterator
from typing import BinaryIO

import trio

Message = str | bytes

#: Longest binary payload shown in full on a terminal, in bytes.
_TTY_HEX_BYTES = 32
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_CLEAR_LINE = "\r\x1b[K"


class PipeConsole:
    """Lines in, messages out, nothing else on stdout."""

    interactive = False

    def __init__(self, stdin_fd: int, stdout: BinaryIO) -> None:
        self._fd = stdin_fd
        self._stdout = stdout
        self._pending = b""
        self._at_end = False

    async def read_line(self) -> str | None:
        """The next stdin line without its line ending, ``None`` at the end."""
        while b"\n" not in self._pending and not self._at_end:
            # os.read in a thread, not sys.stdin: an abandoned thread blocked
            # in a buffered reader would hold its lock and abort the exit.
            data = await _read(self._fd)
            self._pending += data
            self._at_end = not data
        line, newline, self._pending = self._pending.partition(b"\n")
        if not (line or newline):
            return None
        return line.removesuffix(b"\r").decode("utf-8", "replace")

    def message(self, message: Message) -> None:
        """Write a received message as one line: text as is, binary as hex."""
        data = message.encode() if isinstance(message, str) else message.hex().encode()
        with contextlib.suppress(BrokenPipeError):
            self._stdout.write(data + b"\n")
            self._stdout.flush()

    def note(self, text: str) -> None:
        """Notes are for people at a terminal; a pipe gets only messages."""


class TtyConsole:
    """A prompt and a line editor on a terminal in non-canonical mode."""

    interactive = True
    prompt = "> "

    def __init__(self, fd: int, out: BinaryIO) -> None:
        self._fd = fd
        self._out = out
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._buffer = ""
        self._lines: deque[str | None] = deque()
        self._in_escape = False

    async def read_line(self) -> str | None:
        """The next line typed, ``None`` after Ctrl-D or Ctrl-C."""
        while not self._lines:
            data = await _read(self._fd)
            if not data:
                self._lines.append(None)
            self._feed(self._decoder.decode(data))
        return self._lines.popleft()

    def message(self, message: Message) -> None:
        """Show a received message above the line being typed."""
        if isinstance(message, str):
            self.show("< " + _CONTROL.sub(_escape_control, message))
            return
        shown = message[:_TTY_HEX_BYTES].hex()
        if len(message) > _TTY_HEX_BYTES:
            shown += "..."
        self.show(f"< [binary {len(message)} bytes] {shown}".rstrip())

    def note(self, text: str) -> None:
        """Show a note (a ping, a pong, the close) above the line being typed."""
        self.show("# " + text)

    def show(self, line: str) -> None:
        """Print ``line``, then redraw the prompt and the unfinished input."""
        self._write(f"{_CLEAR_LINE}{line}\n{self.prompt}{self._buffer}")

    def finish(self) -> None:
        """Leave the cursor on a fresh line with no prompt."""
        self._write(_CLEAR_LINE)

    def _write(self, text: str) -> None:
        self._out.write(text.encode("utf-8", "replace"))
        self._out.flush()

    def _feed(self, text: str) -> None:
        for char in text:
            self._key(char)

    def _key(self, char: str) -> None:
        if self._in_escape:  # skip ESC [ ... final byte (arrow keys and such)
            self._in_escape = char == "[" or not ("@" <= char <= "~")
        elif char == "\x1b":
            self._in_escape = True
        elif char in "\r\n":
            self._lines.append(self._buffer)
            self._buffer = ""
            self._write("\n" + self.prompt)
        elif char in "\x7f\x08":
            self._buffer = self._buffer[:-1]
            self._redraw()
        elif char == "\x15":  # Ctrl-U
            self._buffer = ""
            self._redraw()
        elif char == "\x17":  # Ctrl-W
            self._buffer = self._buffer.rstrip().rpartition(" ")[0]
            self._buffer += " " if self._buffer else ""
            self._redraw()
        elif char == "\x03" or (char == "\x04" and not self._buffer):
            self._lines.append(None)
        elif char >= " ":
            self._buffer += char
            self._write(char)

    def _redraw(self) -> None:
        self._write(f"{_CLEAR_LINE}{self.prompt}{self._buffer}")


async def _read(fd: int) -> bytes:
    """Read from a blocking file descriptor without blocking Trio."""
    return await trio.to_thread.run_sync(os.read, fd, 2**16, abandon_on_cancel=True)


def _escape_control(match: re.Match[str]) -> str:
    """Keep a server's control characters from driving our terminal."""
    return f"\\x{ord(match.group()):02x}"


@contextlib.contextmanager
def terminal_mode(fd: int) -> Iterator[None]:
    """Character-at-a-time input without echo or signal keys, then restore."""
    saved = termios.tcgetattr(fd)
    mode = termios.tcgetattr(fd)
    mode[3] &= ~(termios.ICANON | termios.ECHO | termios.ISIG | termios.IEXTEN)
    mode[6][termios.VMIN] = 1
    mode[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, mode)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)
