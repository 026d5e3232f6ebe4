"""An open WebSocket connection: the Trio side of the engine.

The engine (``websockets.protocol.Protocol``) turns bytes into frames and
frames into bytes. This module owns everything that involves time and tasks:

* one background *reader* task per connection reads the network, feeds the
  engine, answers what the engine answers (pings, close frames) and queues
  complete messages;
* senders take a write lock, let the engine frame their data and write it;
* closing runs the closing handshake under a deadline and always ends with
  the transport closed.

The reader stops reading while the message queue is full, so a fast peer is
slowed down by TCP flow control rather than growing our memory.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import random
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import trio
from websockets.exceptions import ProtocolError
from websockets.frames import Close, Opcode
from websockets.protocol import OPEN, SEND_EOF, Protocol, Side

from ._assembler import InvalidText, MessageAssembler
from ._errors import CloseReason, ConnectionClosed
from ._url import Endpoint, stream_endpoint

if TYPE_CHECKING:
    from collections.abc import Sequence

    from websockets.frames import Frame
    from websockets.protocol import Event

logger = logging.getLogger("trio-websocket")

Message = str | bytes
Headers = tuple[tuple[bytes, bytes], ...]

#: Default of ``connect_timeout`` and ``disconnect_timeout``, in seconds.
CONN_TIMEOUT = 60
#: Default of ``message_queue_size``.
MESSAGE_QUEUE_SIZE = 1
#: Default of ``max_message_size``, in bytes.
MAX_MESSAGE_SIZE = 2**20
#: Default of ``receive_buffer_size``, in bytes.
RECEIVE_BYTES = 4 * 2**10

_ABNORMAL = 1006


@dataclass(frozen=True)
class Settings:
    """The per-connection limits every entry point accepts."""

    message_queue_size: float = MESSAGE_QUEUE_SIZE
    max_message_size: float = MAX_MESSAGE_SIZE
    receive_buffer_size: int | None = RECEIVE_BYTES
    disconnect_timeout: float = CONN_TIMEOUT

    @property
    def engine_max_size(self) -> int | None:
        """``max_message_size`` as the engine wants it (``None``: no limit)."""
        if self.max_message_size == math.inf:
            return None
        return int(self.max_message_size)


def _check_close(code: int, reason: str | None) -> None:
    try:
        Close(code, reason or "").serialize()
    except ProtocolError as exc:
        raise ValueError(f"cannot close with code {code}: {exc}") from None
    if len((reason or "").encode()) > 123:
        raise ValueError("a close reason may be at most 123 bytes of UTF-8")


class _WriteLock:
    """A lock for writers that takes no trip through the scheduler when free.

    Every holder writes to the stream, and that write is the checkpoint; a
    contended acquisition parks until the holder hands the lock over.
    """

    def __init__(self) -> None:
        self._held = False
        self._waiters = trio.lowlevel.ParkingLot()

    async def __aenter__(self) -> None:
        if self._held:
            await self._waiters.park()  # release() hands the lock over
        else:
            self._held = True

    async def __aexit__(self, *exc_info: object) -> None:
        if self._waiters:
            self._waiters.unpark()
        else:
            self._held = False


class WebSocketConnection(trio.abc.AsyncResource):
    """An open WebSocket connection, client or server side.

    Obtain one from the client functions (``open_websocket_url`` and
    friends) or from :meth:`WebSocketRequest.accept` on a server; do not
    construct it directly. Send with :meth:`send_message`, receive with
    :meth:`get_message`, and close with :meth:`aclose` (or leave the
    ``async with`` block that opened it).
    """

    CONNECTION_ID = itertools.count()

    def __init__(
        self,
        stream: trio.abc.Stream,
        protocol: Protocol,
        settings: Settings,
        *,
        path: str,
        handshake_headers: Headers,
    ) -> None:
        self._id = next(self.__class__.CONNECTION_ID)
        self._stream = stream
        self._protocol = protocol
        self._path = path
        self._handshake_headers = handshake_headers
        self._queue_size = settings.message_queue_size
        self._receive_size = settings.receive_buffer_size
        self._disconnect_timeout = settings.disconnect_timeout

        self._messages: deque[Message] = deque()
        self._assembler = MessageAssembler()
        self._consumers = trio.lowlevel.ParkingLot()  # tasks in get_message()
        self._waiting_consumers = 0
        self._reader_paused = trio.lowlevel.ParkingLot()  # the reader, when full
        self._write_lock = _WriteLock()
        self._pings: dict[bytes, trio.Event] = {}

        self._close_reason: CloseReason | None = None
        self._closing_locally = False
        self._close_timed_out = False
        self._reader_scope = trio.CancelScope()
        self._reader_done = trio.Event()

    # -- Properties ---------------------------------------------------------

    @property
    def closed(self) -> CloseReason | None:
        """Why the connection closed, or ``None`` while it is open."""
        return self._close_reason

    @property
    def is_client(self) -> bool:
        """True for the client side of the connection."""
        return self._protocol.side is Side.CLIENT

    @property
    def is_server(self) -> bool:
        """True for the server side of the connection."""
        return self._protocol.side is Side.SERVER

    @property
    def local(self) -> Endpoint | str:
        """The local end: an :class:`Endpoint`, or a string for other streams."""
        return stream_endpoint(self._stream, remote=False)

    @property
    def remote(self) -> Endpoint | str:
        """The remote end: an :class:`Endpoint`, or a string for other streams."""
        return stream_endpoint(self._stream, remote=True)

    @property
    def path(self) -> str:
        """The request target (path and query) of the opening handshake."""
        return self._path

    @property
    def subprotocol(self) -> str | None:
        """The negotiated subprotocol, or ``None``."""
        return self._protocol.subprotocol

    @property
    def handshake_headers(self) -> Headers:
        """The peer's handshake headers as ``(name, value)`` byte pairs.

        On a client these are the server's response headers; on a server,
        the client's request headers. Names are lower case.
        """
        return self._handshake_headers

    def __str__(self) -> str:
        return f"{'client' if self.is_client else 'server'}-{self._id}"

    # -- Receiving ----------------------------------------------------------

    async def get_message(self) -> Message:
        """Return the next message: ``str`` for text, ``bytes`` for binary.

        Messages that arrived before the peer closed are still returned; after
        them, and at once after a local close, raises
        :exc:`ConnectionClosed`.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            if self._closing_locally:
                raise ConnectionClosed(self._close_reason)
            if self._messages:
                message = self._messages.popleft()
                self._resume_reader_if_room()
                return message
            if self._reader_done.is_set() or self._close_reason is not None:
                raise ConnectionClosed(self._close_reason)
            await self._wait_as_consumer()

    async def _wait_as_consumer(self) -> None:
        # Count ourselves first: with a queue of size 0, a waiting consumer
        # is what lets the reader read.
        self._waiting_consumers += 1
        try:
            self._resume_reader_if_room()
            await self._consumers.park()
        finally:
            self._waiting_consumers -= 1

    def _has_room(self) -> bool:
        return len(self._messages) < self._queue_size + self._waiting_consumers

    def _resume_reader_if_room(self) -> None:
        if self._reader_paused and self._has_room():
            self._reader_paused.unpark()

    # -- Sending ------------------------------------------------------------

    async def send_message(self, message: Message) -> None:
        """Send a text (``str``) or binary (``bytes``) message.

        Any other type is a :exc:`ValueError`. Raises
        :exc:`ConnectionClosed` if the connection is closed or closing.
        """
        if isinstance(message, str):
            await self._send(self._protocol.send_text, message.encode())
        elif isinstance(message, bytes):
            await self._send(self._protocol.send_binary, message)
        else:
            raise ValueError(f"message must be str or bytes, not {type(message)!r}")

    async def ping(self, payload: bytes | None = None) -> None:
        """Send a ping and wait for the matching pong.

        Without a payload, a random 4-byte one is used. A payload equal to a
        ping still waiting for its pong is a :exc:`ValueError`. A pong also
        answers every ping sent before the one it matches.
        """
        if payload is None:
            payload = self._fresh_ping_payload()
        if payload in self._pings:
            raise ValueError(f"a ping with payload {payload!r} is already in flight")
        answered = self._pings[payload] = trio.Event()
        try:
            await self._send(self._protocol.send_ping, payload)
            await answered.wait()
        finally:
            # Still registered means no pong removed it: the connection closed.
            unanswered = self._pings.get(payload) is answered
            if unanswered:
                del self._pings[payload]
        if unanswered:
            raise ConnectionClosed(self._close_reason)

    def _fresh_ping_payload(self) -> bytes:
        while True:
            payload = struct.pack("!I", random.getrandbits(32))
            if payload not in self._pings:
                return payload

    async def pong(self, payload: bytes | None = None) -> None:
        """Send an unsolicited pong (a heartbeat that expects no answer)."""
        await self._send(self._protocol.send_pong, payload or b"")

    async def _send(self, frame: Callable[[bytes], None], payload: bytes) -> None:
        async with self._write_lock:
            if self._closing_locally or self._protocol.state is not OPEN:
                await trio.lowlevel.checkpoint()
                raise ConnectionClosed(self._close_reason)
            frame(payload)
            await self._write_pending()

    async def _write_pending(self) -> None:
        """Write what the engine has queued; the caller holds the write lock.

        A write that fails or is cancelled part-way may leave half a frame on
        the wire, so the connection is aborted rather than reused.
        """
        chunks = self._protocol.data_to_send()
        if not chunks:
            return
        end_of_stream = chunks[-1] == SEND_EOF
        data = b"".join(chunks)
        try:
            if data:
                await self._stream.send_all(data)
            if end_of_stream:
                await self._finish_sending()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            await self._abort()
            raise ConnectionClosed(self._close_reason) from exc
        except BaseException:
            await self._abort()
            raise

    async def _finish_sending(self) -> None:
        # Half-close where the stream allows it, so the peer still reads our
        # close frame before it sees the end of the stream; else close fully.
        if isinstance(self._stream, trio.abc.HalfCloseableStream):
            await self._stream.send_eof()
        else:
            await self._stream.aclose()

    async def _flush_from_reader(self) -> None:
        async with self._write_lock:
            await self._write_pending()

    # -- Closing ------------------------------------------------------------

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        """Close the connection with a close code and optional reason.

        Starts the closing handshake (or joins one in progress) and waits
        until the connection is closed, at most ``disconnect_timeout``
        seconds, after which the transport is closed anyway. Idempotent.
        Cancelling it still closes the underlying stream. A code that may not
        be sent on the wire, or a reason over 123 bytes, is a
        :exc:`ValueError`.
        """
        _check_close(code, reason)
        try:
            with trio.move_on_after(self._disconnect_timeout) as closing:
                await self._start_closing(code, reason)
                await self._reader_done.wait()
        except BaseException:
            await self._abort()
            raise
        if closing.cancelled_caught:
            self._close_timed_out = True
            await self._abort()

    async def _start_closing(self, code: int, reason: str | None) -> None:
        if self._close_reason is None:
            self._close_reason = CloseReason(code, reason)
        self._closing_locally = True
        self._messages.clear()
        self._wake_everyone()
        async with self._write_lock:
            if self._protocol.state is not OPEN:
                await trio.lowlevel.checkpoint()
                return
            self._protocol.send_close(code, reason or "")
            self._set_close_deadline()
            with contextlib.suppress(ConnectionClosed):  # the peer is gone
                await self._write_pending()

    def _set_close_deadline(self) -> None:
        if self._reader_scope.deadline == math.inf:
            self._reader_scope.deadline = trio.current_time() + self._disconnect_timeout

    async def _abort(self) -> None:
        """Drop the connection without a handshake (close code 1006)."""
        if self._close_reason is None:
            self._close_reason = CloseReason(_ABNORMAL, None)
        self._reader_scope.cancel()
        self._wake_everyone()
        await trio.aclose_forcefully(self._stream)

    def _wake_everyone(self) -> None:
        self._consumers.unpark_all()
        self._reader_paused.unpark_all()
        for answered in self._pings.values():
            answered.set()

    # -- The reader task ----------------------------------------------------

    async def _reader_task(self, early_events: Sequence[Event] = ()) -> None:
        """Read the network until the connection closes, then close it."""
        try:
            with self._reader_scope:
                # Frames that arrived along with the handshake.
                await self._process(early_events)
                while await self._read_once():
                    pass
            self._close_timed_out = (
                self._reader_scope.cancelled_caught
                and trio.current_time() >= self._reader_scope.deadline
            )
        finally:
            self._note_close_reason()
            if self._close_reason is None:  # the reader task was cancelled
                self._close_reason = CloseReason(_ABNORMAL, None)
            self._wake_everyone()
            await trio.aclose_forcefully(self._stream)
            self._reader_done.set()

    async def _read_once(self) -> bool:
        """Read and handle one chunk; return False once the stream ended."""
        while not self._has_room():
            await self._reader_paused.park()
        try:
            data = await self._stream.receive_some(self._receive_size)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if data:
            self._protocol.receive_data(data)
        else:
            self._protocol.receive_eof()
        await self._process(self._protocol.events_received())
        return bool(data)

    async def _process(self, events: Sequence[Event]) -> None:
        for event in events:
            self._handle_frame(cast("Frame", event))
        if self._protocol.state is not OPEN:
            self._note_close_reason()
            self._set_close_deadline()
        try:
            await self._flush_from_reader()
        except ConnectionClosed:
            self._reader_scope.cancel()

    def _handle_frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.PONG:
            self._answer_pings(frame.data)
        elif opcode is Opcode.CLOSE:
            self._note_close_reason()
            self._consumers.unpark_all()
        elif opcode is not Opcode.PING:
            self._receive_data_frame(frame)

    def _receive_data_frame(self, frame: Frame) -> None:
        try:
            message = self._assembler.feed(frame)
        except InvalidText as exc:
            self._protocol.fail(1007, str(exc))
            return
        if message is not None and not self._closing_locally:
            self._messages.append(message)
            if self._consumers:
                self._consumers.unpark()

    def _answer_pings(self, payload: bytes | bytearray | memoryview) -> None:
        key = bytes(payload)
        if key not in self._pings:
            return
        # A pong answers its ping and every ping sent before it.
        for sent in list(self._pings):
            self._pings.pop(sent).set()
            if sent == key:
                break

    def _note_close_reason(self) -> None:
        """Record why the connection closed, unless already known."""
        if self._close_reason is not None:
            return
        received, sent = self._protocol.close_rcvd, self._protocol.close_sent
        if received is not None:
            self._close_reason = CloseReason(received.code, received.reason or None)
        elif sent is not None:
            # We failed the connection (a protocol error, bad UTF-8, ...).
            self._close_reason = CloseReason(sent.code, sent.reason or None)
        elif self._protocol.state is not OPEN:
            self._close_reason = CloseReason(_ABNORMAL, None)
