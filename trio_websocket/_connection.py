"""An open WebSocket connection: the Trio side of the engine.

The engine (``websockets.protocol.Protocol``) turns bytes into frames and
frames into bytes. On a connection without extensions our own codec
(:mod:`._frames`) does that for data frames, the hot path: it parses the
input and hands the engine each control frame as raw bytes, and frames
single-frame messages itself. The engine keeps the rest: control frames,
the closing handshake, compression, and all the input once a close frame
came or the connection failed. This module owns everything that involves
time and tasks:

* one background *reader* task per connection reads the network, feeds the
  engine, writes what the engine answers (pongs, close frames) and queues
  messages for the application;
* senders take a write lock, let the engine frame their data and write it;
* closing runs the closing handshake under a deadline and always ends with
  the transport closed.

The reader stops reading while the message queue is full, so a fast peer is
slowed down by TCP flow control rather than growing our memory.

States
------

The engine keeps the protocol's own state (``protocol.state``: OPEN, then
CLOSING once a close frame went either way, then CLOSED) and the close
frames sent and received. A connection adds these facts; each starts false
and, once true, stays true:

``_closing_locally``
    The application closed the connection (:meth:`aclose`). Unread messages
    are dropped, receiving raises :exc:`ConnectionClosed` (iteration ends
    quietly) and sending is refused.
``_refused_peer``
    We failed the connection over the peer's input: a protocol error the
    engine found, or a message we refuse. Nothing after it is processed, and
    once our close frame is out nobody waits for the peer's answer.
``_input_ended``
    The transport reached its end (or broke): the reader has nothing left
    to read, and the reader task takes the socket back from consumers.
``_close_timed_out``
    The closing handshake did not finish within ``disconnect_timeout``, so
    the transport was closed anyway.
``_reader_finished``
    The reader task is over: the transport is closed and
    :attr:`closed` is final. Only now does :meth:`wait_until_closed` return.

:attr:`closed` (``_close_reason``) is set once, by whichever of these comes
first: a close frame from the peer, our own close (:meth:`aclose`,
:meth:`fail`), the engine failing the connection, an abort (1006), or the
end of the reader task.

The transitions, from OPEN::

    aclose()              -> _closing_locally; close frame sent; the reader
                             waits for the peer's close, EOF or the deadline
                             (-> _close_timed_out) -> _reader_finished
    the peer's close      -> engine CLOSING, answered by the engine; queued
                             messages are still delivered -> EOF
                             -> _input_ended -> _reader_finished
    input we refuse       -> _refused_peer; close frame sent -> EOF or the
                             deadline -> _reader_finished
    fail() (keepalive),   -> close frame if possible, then the transport is
    abort (a broken send)    closed -> _reader_finished
    EOF without a close   -> _input_ended (1006) -> _reader_finished

Two more flags are not about the lifecycle: ``_mid_message`` (the consumer
stopped inside a fragmented message, whose rest is skipped) and
``_pong_due`` (the engine answered a ping and the reader task must write
the pong; see :mod:`._turns`).

Internal interface
------------------

Other modules of this package use only these members, none of them part of
the public API: :meth:`start_background_tasks` (client and server, after the
handshake), :meth:`next_item` and :attr:`closing_locally` (iterators and
the stream adapter), :meth:`start_closing` (the stream adapter's
half-close), :meth:`wait_until_closed` and :meth:`fail` (keepalive),
:attr:`close_timed_out` (``open_websocket``), :attr:`takes_shared_frames`
and :meth:`send_shared_frame` (broadcast), and :func:`check_close` (the
server's shutdown).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import random
import struct
from collections.abc import (
    AsyncIterator,
    Callable,
)
from typing import TYPE_CHECKING, cast

import trio
from websockets.exceptions import ProtocolError
from websockets.frames import Close, Opcode
from websockets.protocol import OPEN, SEND_EOF, Protocol, Side

from . import _frames
from ._assembler import Assembler, InvalidMessage, MessageBuffer
from ._codec import codec
from ._engine import (
    CAN_QUEUE_FRAMES,
    parser_failure,
    queue_frame,
    release_handshake,
    send_uncompressed,
    track_frame_sizes,
)
from ._errors import CloseReason, ConnectionClosed
from ._frames import BINARY, CONTROL, DATA, FAILED, NEED_DATA, TEXT, FrameReader
from ._handshake import PackedHeaders
from ._idle import REST_AFTER, SocketWatcher, socket_watcher
from ._iterators import BytesLike, Chunks, Fragments, Messages, chunk_iterator
from ._keepalive import keep_alive
from ._locks import WriteLock
from ._outbox import Outbox
from ._queue import Fragment, Item, Message, MessageQueue
from ._settings import Settings
from ._stats import ConnectionStats, Counters
from ._transport import DEFAULT_READ_SIZE, SocketTransport, transport_for
from ._turns import ReadTurns
from ._url import Endpoint, stream_endpoint

if TYPE_CHECKING:
    from collections.abc import Sequence

    from websockets.frames import Frame
    from websockets.protocol import Event

Headers = tuple[tuple[bytes, bytes], ...]

_ABNORMAL = 1006
_DATA_OPCODES = frozenset({Opcode.TEXT, Opcode.BINARY, Opcode.CONT})
# The most a connection reads at once while a large frame is arriving (when
# receive_buffer_size is None, reads are of the transport's default size).
_LARGEST_READ = 2**20

logger = logging.getLogger("trio-websocket")


class WebSocketConnection(trio.abc.AsyncResource):
    """An open WebSocket connection, client or server side.

    Obtain one from the client functions (``open_websocket_url`` and
    friends) or from :meth:`WebSocketRequest.accept` on a server; do not
    construct it directly. Send with :meth:`send_message`, receive with
    :meth:`get_message` (or ``async for message in connection``), and close
    with :meth:`aclose` or by leaving the ``async with`` block that opened
    it.
    """

    CONNECTION_ID = itertools.count()

    # Slots: a server holds thousands of these, and past 30 attributes an
    # instance's attributes move into a dictionary of their own (1.5 KB).
    # "__dict__" keeps the attributes applications set on a connection.
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_assembler",
        "_close_reason",
        "_close_timed_out",
        "_closing_locally",
        "_counters",
        "_engine_input",
        "_frames",
        "_frames_own_messages",
        "_handshake_headers",
        "_id",
        "_input_ended",
        "_message_lock",
        "_mid_message",
        "_outbox",
        "_path",
        "_pings",
        "_pong_due",
        "_protocol",
        "_queue",
        "_read_size",
        "_reader_done",
        "_reader_errors_logged",
        "_reader_finished",
        "_reader_nursery",
        "_reader_scope",
        "_refused_peer",
        "_rest_after",
        "_resting_on",
        "_sending_text",
        "_settings",
        "_stream",
        "_transport",
        "_turns",
        "_watcher",
        "_write_lock",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        protocol: Protocol,
        settings: Settings,
        *,
        path: str,
        handshake_headers: PackedHeaders,
    ) -> None:
        self._id = next(self.__class__.CONNECTION_ID)
        self._stream = stream
        self._transport = transport_for(stream)
        self._read_size = settings.receive_buffer_size or DEFAULT_READ_SIZE
        between_frames = release_handshake(protocol)
        self._engine_input = track_frame_sizes(protocol)
        # Our codec parses the input while it can (see _frames); None when
        # the engine frames everything, or has taken over.
        self._frames = _frame_reader(protocol, settings) if between_frames else None
        # Whether send_message() frames messages itself (see _frames).
        self._frames_own_messages = _codec_applies(protocol)
        self._protocol = protocol
        self._settings = settings
        self._path = path
        self._handshake_headers = handshake_headers

        self._queue = MessageQueue(
            settings.message_queue_size, settings.message_queue_bytes
        )
        self._assembler = Assembler(settings)
        self._mid_message = False
        self._outbox = Outbox()  # small frames waiting for the write lock
        self._write_lock = WriteLock(self._outbox)
        self._message_lock = WriteLock()  # one outgoing message at a time
        self._sending_text = False  # the kind of the fragmented message being sent
        self._pings: dict[bytes, trio.Event] = {}
        self._pong_due = False
        self._counters = Counters()

        self._close_reason: CloseReason | None = None
        self._closing_locally = False
        self._refused_peer = False
        self._close_timed_out = False
        self._reader_scope = trio.CancelScope()  # a new one each time it starts
        self._reader_nursery: trio.Nursery | None = None
        self._reader_errors_logged = False  # see start_background_tasks()
        self._rest_after: float | None = None  # see let_reader_rest()
        self._watcher: SocketWatcher | None = None  # these two while it rests
        self._resting_on: int | None = None
        self._reader_finished = False
        self._reader_done: trio.Event | None = None  # made for the first waiter
        self._input_ended = False
        self._turns = (
            ReadTurns(self._reader_needed, self._resume_reader)
            if self._transport.receive_is_cancel_safe
            else None
        )

    def start_background_tasks(
        self,
        nursery: trio.Nursery,
        early_events: Sequence[Event] = (),
        early_data: bytes = b"",
        *,
        contain_errors: bool = False,
    ) -> None:
        """Start the reader (and keepalive) tasks, once the handshake is done.

        What arrived along with the handshake is either ``early_events``,
        frames the engine already parsed, or ``early_data``, bytes nobody
        parsed yet, which are handled as if they were the first read.
        With ``contain_errors`` (a server, whose nurseries serve other
        clients too) an unexpected error in the reader is logged and ends
        this connection only, instead of reaching the nursery.

        :meta private:
        """
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s: open, %s %s", self, self.remote, self._path)
        if _ends_inside_a_message(early_events):
            self._frames = None  # the engine is counting that message
        self._reader_nursery = nursery
        self._reader_errors_logged = contain_errors
        nursery.start_soon(self._reader_task, early_events, early_data)
        if self._settings.ping_interval is not None:
            timeout = self._settings.ping_timeout or self._settings.ping_interval
            nursery.start_soon(keep_alive, self, self._settings.ping_interval, timeout)

    def let_reader_rest(self) -> None:
        """Let the reader end while the socket is quiet (see :mod:`._idle`).

        Only for an owner whose nursery stays open as long as the connection
        does (``open_websocket``, a server's nursery for its clients): a
        resting reader is started again in that nursery.

        :meta private:
        """
        if isinstance(self._transport, SocketTransport):
            self._rest_after = REST_AFTER

    async def abandon(self) -> None:
        """Drop the connection (1006) unless it is closed already; for an owner
        whose nursery ended, which a resting reader cannot notice.

        :meta private:
        """
        if not self._reader_finished:
            await self._abort()

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
    def extensions(self) -> list[str]:
        """The names of the negotiated extensions, e.g. permessage-deflate."""
        return [extension.name for extension in self._protocol.extensions]

    @property
    def stats(self) -> ConnectionStats:
        """Messages and bytes each way, queue depth and last ping round trip."""
        counters = self._counters
        return ConnectionStats(
            messages_sent=counters.messages_sent,
            messages_received=counters.messages_received,
            bytes_sent=counters.bytes_sent,
            bytes_received=counters.bytes_received,
            wire_bytes_sent=counters.wire_bytes_sent,
            wire_bytes_received=counters.wire_bytes_received,
            queue_depth=len(self._queue),
            queued_bytes=self._queue.queued_bytes,
            last_ping_rtt=counters.last_ping_rtt,
        )

    @property
    def handshake_headers(self) -> Headers:
        """The peer's handshake headers as ``(name, value)`` byte pairs.

        On a client these are the server's response headers; on a server,
        the client's request headers. Names are lower case.
        """
        return self._handshake_headers.pairs()

    @property
    def closing_locally(self) -> bool:
        """True once this side closed the connection (see the module's states).

        :meta private:
        """
        return self._closing_locally

    @property
    def close_timed_out(self) -> bool:
        """True if the closing handshake did not finish before its deadline.

        :meta private:
        """
        return self._close_timed_out

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
        item = await self.next_item(start=True)
        if not isinstance(item, Fragment):
            return item
        buffer = MessageBuffer(item.data)
        while not item.last:
            item = cast(Fragment, await self.next_item(start=False))
            buffer.add(item.data)
        return buffer.message()

    def get_fragments(self) -> AsyncIterator[Message]:
        """Iterate over the next message fragment by fragment, as it arrives.

        Yields ``str`` pieces for a text message and ``bytes`` for binary; a
        message sent in one frame is one piece. Memory is bounded by the
        fragment rather than the message, so with ``max_message_size=
        math.inf`` a message of any size can be processed. If you stop
        early, the rest of the message is skipped.
        """
        return Fragments(self)

    async def next_item(self, *, start: bool) -> Message | Fragment:
        """The next whole message or fragment; ``start`` at a message's start.

        At a message's start, what the consumer left of the previous message
        is skipped first. Raises :exc:`ConnectionClosed` when none will come.

        :meta private:
        """
        if start and self._mid_message:
            await self._skip_unfinished_message()
        item = self._queue.get_nowait()
        if item is None and not self._closing_locally:
            turns = self._turns
            if turns is not None and turns.consumer_may_read:
                item = await self._read_for_item(turns)
            else:
                item = await self._queue.get()
        if item is None or self._closing_locally:
            raise ConnectionClosed(self._close_reason)
        if isinstance(item, Fragment):
            self._mid_message = not item.last
        return item

    async def _read_for_item(self, turns: ReadTurns) -> Item | None:
        """Read the network in the consumer's own task until an item arrives.

        See :mod:`._turns`: this saves the reader task's wake-up per message.
        """
        turns.start_consumer_turn()
        try:
            while not self._reader_needed():
                await self._receive(yield_first=True)
                item = self._queue.get_nowait()
                if item is not None:
                    return item
        finally:
            turns.end_consumer_turn()
        return await self._queue.get()

    async def _skip_unfinished_message(self) -> None:
        # A consumer that stopped iterating get_fragments() left the rest of
        # its message in the queue; it belongs to nobody now.
        while self._mid_message:
            await self.next_item(start=False)

    def __aiter__(self) -> AsyncIterator[Message]:
        """Iterate over incoming messages until the connection closes.

        Ends quietly after a normal close (1000, 1001, or no status) and
        after a local close; raises :exc:`ConnectionClosed` otherwise.
        """
        return Messages(self)

    # -- Sending ------------------------------------------------------------

    async def send_message(
        self, message: str | BytesLike, *, compress: bool = True
    ) -> None:
        """Send a text (``str``) or binary (bytes-like) message.

        ``bytes``, ``bytearray`` and ``memoryview`` are sent as binary without
        a copy; any other type is a :exc:`ValueError`. With
        ``compress=False`` the message is sent uncompressed even when
        permessage-deflate is on (for data that is already compressed).
        Raises :exc:`ConnectionClosed` if the connection is closed or
        closing.
        """
        payload: BytesLike
        if isinstance(message, str):
            opcode, payload = TEXT, message.encode()
        elif isinstance(message, bytes | bytearray | memoryview):
            opcode, payload = BINARY, _byte_view(message)
        else:
            raise ValueError(f"cannot send a message of type {type(message)!r}")
        if self._message_lock.locked():  # wait for the end of a fragmented one
            async with self._message_lock:
                await self._send_message(opcode, payload, compress)
        else:  # a single frame cannot land inside another message
            await self._send_message(opcode, payload, compress)
        counters = self._counters
        counters.messages_sent += 1
        counters.bytes_sent += len(payload)

    async def _send_message(
        self, opcode: int, payload: BytesLike, compress: bool
    ) -> None:
        if self._frames_own_messages:
            await self._send_own_frame(opcode, payload)
            return
        protocol = self._protocol
        send = protocol.send_text if opcode == TEXT else protocol.send_binary
        await self._send(self._frame_data, send, payload, True, compress)

    async def send_fragments(self, chunks: Chunks, *, compress: bool = True) -> None:
        """Send one message made of the given chunks, each as a fragment.

        ``chunks`` is an iterable or async iterable of all ``str`` (a text
        message) or all bytes-like (binary). Fragments go out as they are
        produced, so memory is bounded by the chunk. Cancelling this part-way
        aborts the connection (close code 1006): a message cut short must not
        look complete to the peer.
        """
        async with self._message_lock:
            first = True
            try:
                async for chunk in chunk_iterator(chunks):
                    send, payload = self._fragment(chunk, first)
                    await self._send(self._frame_data, send, payload, False, compress)
                    self._counters.bytes_sent += len(payload)
                    first = False
                if first:
                    raise ValueError("a message needs at least one fragment")
                end = self._protocol.send_continuation
                await self._send(self._frame_data, end, b"", True, compress)
                self._counters.messages_sent += 1
            except BaseException:
                if not first and self._protocol.state is OPEN:
                    await self._abort()
                raise

    def _fragment(
        self, chunk: str | BytesLike, first: bool
    ) -> tuple[Callable[[BytesLike, bool], None], BytesLike]:
        text = isinstance(chunk, str)
        if not text and not isinstance(chunk, bytes | bytearray | memoryview):
            raise ValueError(f"cannot send a fragment of type {type(chunk)!r}")
        payload = chunk.encode() if isinstance(chunk, str) else _byte_view(chunk)
        if not first:
            if text != self._sending_text:
                raise ValueError("all fragments of a message must be str, or all bytes")
            return self._protocol.send_continuation, payload
        self._sending_text = text
        return (
            self._protocol.send_text if text else self._protocol.send_binary
        ), payload

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
            self._wake_reader()  # the pong must be read even if nobody reads
            sent_at = trio.current_time()
            await answered.wait()
            if self._pings.get(payload) is not answered:
                self._counters.last_ping_rtt = trio.current_time() - sent_at
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

    async def _send(self, frame: Callable[..., object], *args: object) -> None:
        """Call ``frame(*args)`` to queue a frame in the engine, then write it.

        Both happen under the write lock, so frames reach the wire in the
        order the engine produced them.
        """
        # The lock without `async with`: this is every message's path.
        lock = self._write_lock
        if not lock.try_acquire():
            await lock.wait_for_handover()
        try:
            self._check_can_send()
            frame(*args)
            await self._write_chunks(self._protocol.data_to_send())
        finally:
            lock.release()

    async def _send_own_frame(self, opcode: int, payload: BytesLike) -> None:
        """Frame a whole message with our codec and write it, under the lock
        (a small frame may be written by the holder instead: see _outbox)."""
        head, body = codec.encode_frame(opcode, payload, self.is_client)
        lock = self._write_lock
        sent = 0
        if not lock.try_acquire():
            if body:  # a large frame: worth a system call of its own
                await lock.wait_for_handover()
            else:
                sent = await self._outbox.wait(head)
                if sent == len(head):
                    return
        try:
            if sent:  # the rest of a frame partly written: it must go out
                head = head[sent:]
            else:
                self._check_can_send()
                queued = self._protocol.data_to_send()  # e.g. a pong: first
                if queued:
                    head = b"".join(queued) + head
            await self._write(head, body)
            if self._outbox.waiting:
                self._write_waiting_frames()
        finally:
            lock.release()

    def _write_waiting_frames(self) -> None:
        """After our own frame: write the frames waiting in the outbox, as far
        as the kernel takes them without waiting (see _outbox)."""
        transport = self._transport
        if not isinstance(transport, SocketTransport):
            return
        try:
            self._check_can_send()
            written = self._outbox.write_waiting(transport.write_nowait)
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            return  # each waiting sender meets it too, with its own frame
        self._counters.wire_bytes_sent += written

    def _frame_data(
        self,
        send: Callable[[BytesLike, bool], None],
        payload: BytesLike,
        fin: bool,
        compress: bool,
    ) -> None:
        if compress or not self._protocol.extensions:
            send(payload, fin)
        else:
            send_uncompressed(self._protocol, send, payload, fin)

    def _check_can_send(self) -> None:
        # A known close reason with the engine still OPEN means we aborted or
        # are failing the connection (e.g. a cancelled send_fragments()).
        if (
            self._closing_locally
            or self._close_reason is not None
            or self._protocol.state is not OPEN
        ):
            raise ConnectionClosed(self._close_reason)

    async def _write_pending(self) -> None:
        """Write what the engine has queued; the caller holds the write lock.

        A write that fails or is cancelled part-way may leave half a frame on
        the wire, so the connection is aborted rather than reused.
        """
        await self._write_chunks(self._protocol.data_to_send())

    async def _write_chunks(self, chunks: list[bytes]) -> None:
        if not chunks:
            await trio.lowlevel.checkpoint()
            return
        end_of_stream = chunks[-1] == SEND_EOF
        data = b"".join(chunks) if len(chunks) > 1 else chunks[0]
        await self._write(data, b"", end_of_stream=end_of_stream)

    async def _write(
        self, data: BytesLike, more: BytesLike, *, end_of_stream: bool = False
    ) -> None:
        """Write ``data`` then ``more``; then half-close if ``end_of_stream``."""
        try:
            for part in (data, more):
                if part:
                    self._counters.wire_bytes_sent += len(part)
                    await self._transport.send_all(part)
            if end_of_stream:
                await self._finish_sending()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            await self._abort()
            raise ConnectionClosed(self._close_reason) from exc
        except BaseException:
            await self._abort()
            raise

    async def _finish_sending(self) -> None:
        # Once the peer's close frame is in, it has nothing more to send, and
        # closing outright ends the connection without another round trip.
        # When we fail the connection instead, the peer may still be sending:
        # closing a socket with unread data resets it, which could destroy our
        # close frame, so half-close and let the reader drain until its EOF.
        if self._protocol.close_rcvd is None and isinstance(
            self._stream, trio.abc.HalfCloseableStream
        ):
            await self._stream.send_eof()
        else:
            await self._transport.aclose()

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
        check_close(code, reason)
        if self._reader_finished:  # already closed: nothing to wait for
            self._closing_locally = True
            self._queue.close(discard=True)
            await trio.lowlevel.checkpoint()  # still a checkpoint, as Trio expects
            return
        try:
            with trio.move_on_after(self._settings.disconnect_timeout) as closing:
                await self.start_closing(code, reason, discard=True)
                await self.wait_until_closed()
        except BaseException:
            await self._abort()
            raise
        if closing.cancelled_caught:
            self._close_timed_out = True
            self._close_reason = CloseReason(_ABNORMAL, "closing handshake timed out")
            await self._abort()

    async def start_closing(
        self, code: int, reason: str | None, *, discard: bool
    ) -> None:
        """Send a close frame; ``discard`` also drops what was not yet read.

        Without ``discard`` (a half-close), messages the peer sent before its
        own close frame are still delivered.

        :meta private:
        """
        if discard:
            if self._close_reason is None:
                self._close_reason = CloseReason(code, reason)
            self._closing_locally = True
            self._queue.close(discard=True)
        async with self._write_lock:
            if self._protocol.state is not OPEN:
                await trio.lowlevel.checkpoint()
                return
            self._protocol.send_close(code, reason or "")
            self._set_close_deadline()
            self._wake_reader()
            with contextlib.suppress(ConnectionClosed):  # the peer is gone
                await self._write_pending()

    async def fail(self, code: int, reason: str) -> None:
        """Give up on the peer: send a close frame if possible, then abort.

        :meta private:
        """
        if self._close_reason is None:
            self._close_reason = CloseReason(code, reason)
        with trio.move_on_after(self._settings.disconnect_timeout):
            await self.start_closing(code, reason, discard=False)
        await self._abort()

    def _set_close_deadline(self) -> None:
        if self._reader_scope.deadline == math.inf:
            self._reader_scope.deadline = (
                trio.current_time() + self._settings.disconnect_timeout
            )

    async def _abort(self) -> None:
        """Drop the connection without a handshake (close code 1006)."""
        if self._close_reason is None:
            self._close_reason = CloseReason(_ABNORMAL, None)
        self._reader_scope.cancel()
        self._wake_reader()  # a resting reader starts, to end at once
        self._wake_everyone()
        await self._transport.aclose_forcefully()

    def _wake_everyone(self) -> None:
        self._queue.close(discard=self._closing_locally)
        for answered in self._pings.values():
            answered.set()

    # -- The reader task ----------------------------------------------------

    async def _reader_task(
        self, early_events: Sequence[Event], early_data: bytes
    ) -> None:
        """Read the network until the connection closes, then close it (or
        until the socket is quiet, then rest: see :mod:`._idle`)."""
        rests = False
        try:
            with self._reader_scope:
                # What arrived along with the handshake.
                self._handle_events(early_events)
                if early_data:
                    self._take_input(early_data)
                await self._write_engine_replies()
                rests = await self._read_until_end()
            if (
                self._reader_scope.cancelled_caught
                and trio.current_time() >= self._reader_scope.deadline
            ):
                self._close_timed_out = True  # never reset: aclose() may set it
        except Exception:
            if not self._reader_errors_logged:
                raise
            logger.exception("%s: unexpected error in the reader task", self)
        finally:
            if not rests:
                self._stop_input()
                await self._transport.aclose_forcefully()
                self._reader_stopped()

    def _stop_input(self) -> None:
        """The reader is done: settle the close reason, wake every waiter."""
        self._note_close_reason()
        if self._close_reason is None:  # the reader task was cancelled
            self._close_reason = CloseReason(_ABNORMAL, None)
        self._wake_everyone()

    def _reader_stopped(self) -> None:
        """The transport is closed: the connection is closed."""
        self._reader_finished = True
        # The turns hold our _reader_needed: a cycle that would keep a
        # closed connection (and its zlib state) until the cyclic GC runs.
        self._turns = None
        if self._reader_done is not None:
            self._reader_done.set()
        self._log_close()

    def _may_rest(self) -> bool:
        """Whether the reader may leave the socket to the watcher: not while
        the connection closes (the reader keeps the closing deadline)."""
        return (
            self._protocol.state is OPEN
            and not self._closing_locally
            and not self._reader_scope.cancel_called
        )

    def _rest(self) -> bool:
        """Hand the quiet socket to the watcher; False if nothing can watch
        it (out of descriptors, say)."""
        transport = self._transport
        watcher = socket_watcher()
        if transport.closed or watcher is None:
            return False
        assert isinstance(transport, SocketTransport)
        self._watcher, self._resting_on = watcher, transport.fileno()
        watcher.watch(self._resting_on, self._resume_reader)
        return True

    def _resume_reader(self) -> None:
        """Start the resting reader again, in the same nursery."""
        if self._watcher is not None and self._resting_on is not None:
            self._watcher.forget(self._resting_on)
            self._resting_on = None
        rested = self._reader_scope
        self._reader_scope = trio.CancelScope(deadline=rested.deadline)
        if rested.cancel_called:
            self._reader_scope.cancel()
        assert self._reader_nursery is not None
        try:
            self._reader_nursery.start_soon(self._reader_task, (), b"")
        except RuntimeError:  # the nursery ended while the reader rested
            self._stop_input()
            assert isinstance(self._transport, SocketTransport)
            self._transport.close_now()
            self._reader_stopped()

    async def wait_until_closed(self) -> None:
        """Wait until the reader task has closed the connection.

        :meta private:
        """
        if self._reader_finished:
            await trio.lowlevel.checkpoint()
            return
        if self._reader_done is None:
            self._reader_done = trio.Event()
        await self._reader_done.wait()

    def _log_close(self) -> None:
        reason = self._close_reason
        assert reason is not None
        failure = parser_failure(self._protocol)
        if failure is not None and not isinstance(failure, EOFError):
            logger.debug("%s: protocol error from the peer: %s", self, failure)
        by = _closer(self._protocol)
        text = f" ({reason.reason})" if reason.reason else ""
        logger.debug(
            "%s: closed by %s, %d %s%s", self, by, reason.code, reason.name, text
        )

    async def _read_until_end(self) -> bool:
        """Read until the input ends; True if the reader rests instead."""
        turns = self._turns
        rest_after = self._rest_after
        while not self._input_ended:
            await self._queue.wait_for_room()
            if not await self._receive(idle_after=rest_after):
                if self._may_rest() and self._rest():
                    return True
                continue
            # Consumers are reading: let them read the socket themselves.
            every_waiter_served = self._queue.has_item_for_every_waiter
            await self._write_engine_replies()
            if every_waiter_served and turns is not None:
                if await turns.lend_socket_to_consumers(may_rest=bool(rest_after)):
                    return True
                # What the consumers' reads left to send.
                await self._write_engine_replies()
        return False

    def _reader_needed(self) -> bool:
        """Whether only the reader task can make progress (see ``_turns``)."""
        protocol = self._protocol
        return bool(
            self._input_ended
            or self._closing_locally
            or protocol.state is not OPEN
            or self._pong_due
            or self._pings
            or self._queue.has_waiter_without_item
        )

    def _wake_reader(self) -> None:
        """Make the reader look again at whether it is needed (a resting
        reader starts again)."""
        if self._resting_on is not None:
            self._resume_reader()
        elif self._turns is not None:
            self._turns.wake_reader()

    async def _receive(
        self, *, yield_first: bool = False, idle_after: float | None = None
    ) -> bool:
        """Read one chunk from the network and handle the frames in it; False
        if nothing came for ``idle_after`` seconds (and ``yield_first``: see
        :meth:`SocketTransport.receive`)."""
        transport = self._transport
        data: bytes | bytearray | None
        try:
            if idle_after is None:
                data = await transport.receive(self._read_size, yield_first=yield_first)
            else:
                data = await transport.receive_within(self._read_size, idle_after)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if data is None:
            return False
        self._take_input(data)
        return True

    def _take_input(self, data: bytes | bytearray) -> None:
        """Handle the frames in ``data`` (``b""``: the end of the input)."""
        self._counters.wire_bytes_received += len(data)
        frames = self._frames
        if data and frames is not None:
            frames.feed(data)
            self._parse_frames(frames)
            self._size_next_read()
            return
        if data:
            self._protocol.receive_data(data)
        else:
            self._input_ended = True
            if frames is not None:
                self._hand_input_to_engine(frames)
            self._protocol.receive_eof()
        self._size_next_read()
        self._handle_events(self._protocol.events_received())

    def _parse_frames(self, frames: FrameReader) -> None:
        """Handle the frames our codec finds; control frames go to the engine."""
        protocol = self._protocol
        while True:
            kind = frames.next_frame()
            if kind == DATA:
                self._receive_data_frame(frames.opcode, frames.payload, frames.fin)
                if self._refused_peer:
                    break
            elif kind == CONTROL:
                protocol.receive_data(frames.frame)
                events = protocol.events_received()
                self._handle_events(events)
                # After a close frame the engine discards the rest; without
                # an event back, it failed the connection over this frame.
                if not events or cast("Frame", events[0]).opcode is Opcode.CLOSE:
                    break
            elif kind == FAILED:
                logger.debug(
                    "%s: protocol error from the peer: %s", self, frames.error_reason
                )
                protocol.fail(frames.error_code, frames.error_reason)
                self._refused_peer = True
                break
            else:
                assert kind == NEED_DATA
                if frames.missing and not self._check_arriving_text(frames):
                    break
                self._after_input()
                return
        self._hand_input_to_engine(frames)
        self._after_input()

    def _check_arriving_text(self, frames: FrameReader) -> bool:
        """Decode what arrived of an unfinished text frame, so that invalid
        UTF-8 fails the connection now, not once the frame is complete;
        False if it did."""
        assembler = self._assembler
        if frames.unfinished_data_frame() and assembler.start_early(
            frames.opcode, frames.length
        ):
            try:
                assembler.feed_early(frames.new_payload())
            except InvalidMessage as exc:
                self._refuse(exc)
                return False
        return True

    def _hand_input_to_engine(self, frames: FrameReader) -> None:
        """Leave the rest of the input, from a frame's start, to the engine."""
        self._frames = None
        rest = frames.take_rest()
        if rest:
            self._protocol.receive_data(rest)
            self._handle_events(self._protocol.events_received())

    def _size_next_read(self) -> None:
        # While a frame larger than receive_buffer_size arrives, read the rest
        # of it in large chunks, but never past its end: what follows it is
        # read at the configured size, so small messages are not read ahead
        # of what the message queue allows.
        base = self._settings.receive_buffer_size or DEFAULT_READ_SIZE
        frames = self._frames
        missing = self._engine_input.missing if frames is None else frames.missing
        self._read_size = min(missing, _LARGEST_READ) if missing > base else base

    def _handle_events(self, events: Sequence[Event]) -> None:
        for event in events:
            frame = cast("Frame", event)
            if frame.opcode in _DATA_OPCODES:
                self._receive_data_frame(frame.opcode, frame.data, frame.fin)
                if self._refused_peer:
                    # We failed the connection over this message: what came
                    # after it in the same read is not processed (RFC 6455,
                    # 7.1.7).
                    break
            else:
                self._handle_control_frame(frame)
        self._after_input()

    def _after_input(self) -> None:
        if self._protocol.state is not OPEN:
            self._note_close_reason()
            self._set_close_deadline()
            if parser_failure(self._protocol) is not None:
                self._refused_peer = True

    async def _write_engine_replies(self) -> None:
        """Write what the engine queued while reading (pongs, close frames)."""
        # Most reads need no answer (only pings and closes do): then there is
        # no lock to take and no reason to yield before reading again.
        self._pong_due = False
        chunks = self._protocol.data_to_send()
        if not chunks:
            return
        try:
            async with self._write_lock:
                await self._write_chunks(chunks)
        except ConnectionClosed:
            self._reader_scope.cancel()
        if self._refused_peer:
            # Our close frame is out and the engine ignores the peer from now
            # on: nobody waits for its answer, which a broken peer never
            # sends. The reader still sees the teardown through, to the
            # deadline.
            self._wake_everyone()

    def _handle_control_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.PING:
            self._pong_due = True  # the engine queued it, for us to write
        elif frame.opcode is Opcode.PONG:
            self._answer_pings(frame.data)
        elif frame.opcode is Opcode.CLOSE:
            self._note_close_reason()
            self._queue.close(discard=self._closing_locally)

    def _receive_data_frame(self, opcode: int, payload: BytesLike, fin: bool) -> None:
        try:
            item = self._assembler.feed(opcode, payload, fin)
        except InvalidMessage as exc:
            self._refuse(exc)
            return
        size = len(payload)
        counters = self._counters
        counters.bytes_received += size
        if fin:
            counters.messages_received += 1
        if not self._closing_locally:
            self._queue.put(item, size)

    def _refuse(self, exc: InvalidMessage) -> None:
        """Fail the connection over a message from the peer."""
        logger.debug("%s: refusing a message from the peer: %s", self, exc)
        self._protocol.fail(exc.code, str(exc))
        self._refused_peer = True

    def _answer_pings(self, payload: BytesLike) -> None:
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

    @property
    def takes_shared_frames(self) -> bool:
        """Whether :meth:`send_shared_frame` may be used.

        :meta private:
        """
        return self.is_server and not self._protocol.extensions and CAN_QUEUE_FRAMES

    async def send_shared_frame(
        self, frame: bytes, payload_size: int, messages: int = 1
    ) -> None:
        """Send whole messages that were framed elsewhere.

        :func:`~trio_websocket.broadcast` frames a message once and hands the
        same bytes to many connections. ``frame`` must be final data frames
        (``messages`` of them, back to back), unmasked and without extension
        bits: only a connection that :attr:`takes_shared_frames` may receive
        them. Waits its turn behind other senders, like :meth:`send_message`,
        and counts as ``messages`` messages of ``payload_size`` bytes in all
        in :attr:`stats`.

        :meta private:
        """
        assert self.takes_shared_frames
        async with self._message_lock:
            await self._send(queue_frame, self._protocol, frame)
        self._counters.messages_sent += messages
        self._counters.bytes_sent += payload_size

    def try_send_shared_frame(
        self, frame: bytes, payload_size: int, messages: int = 1
    ) -> bytes | None:
        """Start sending a shared frame without waiting (see :meth:`send_shared_frame`).

        Returns ``None``, having sent nothing, when that would wait: another
        sender has the turn, the socket is full, or it is not plain TCP.
        Otherwise returns what the kernel did not take yet, usually ``b""``;
        a non-empty rest keeps the write turn, and must be written with
        :meth:`finish_shared_frame` before anything else can be sent.

        :meta private:
        """
        transport = self._transport
        if (
            not isinstance(transport, SocketTransport)
            or self._message_lock.locked()
            or not self._write_lock.try_acquire()
        ):
            return None
        queued: list[bytes] = []
        data = frame
        try:
            self._check_can_send()
            queued = self._protocol.data_to_send()  # e.g. a pong: it goes first
            if queued:
                data = b"".join([*queued, frame])
            sent = transport.write_nowait(data)
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            sent = 0  # the writer task finds out, and closes
        if sent == 0 and not queued:
            self._write_lock.release()
            return None
        self._counters.wire_bytes_sent += sent
        self._counters.messages_sent += messages
        self._counters.bytes_sent += payload_size
        if sent == len(data):
            self._write_lock.release()
        return data[sent:]

    async def finish_shared_frame(self, rest: bytes) -> None:
        """Write the rest left by :meth:`try_send_shared_frame`; end its turn.

        Cancelled or failing part-way, this aborts the connection.

        :meta private:
        """
        try:
            await self._write(rest, b"")
        finally:
            self._write_lock.release()


def _codec_applies(protocol: Protocol) -> bool:
    """Whether our codec frames this connection: no extension, not switched off."""
    return not (_frames.ENGINE_FRAMES or protocol.extensions)


def _frame_reader(protocol: Protocol, settings: Settings) -> FrameReader | None:
    """Our codec for a connection whose frames need no extension, else None."""
    if not _codec_applies(protocol):
        return None
    max_message, max_fragment = settings.engine_max_size
    return codec.FrameReader(  # the compiled build where there is one
        masked=protocol.side is Side.SERVER,
        max_message=-1 if max_message is None else max_message,
        max_fragment=-1 if max_fragment is None else max_fragment,
    )


def _ends_inside_a_message(events: Sequence[Event]) -> bool:
    """Whether the last data frame among ``events`` left a message unfinished."""
    for event in reversed(events):
        frame = cast("Frame", event)
        if frame.opcode in _DATA_OPCODES:
            return not frame.fin
    return False


def _closer(protocol: Protocol) -> str:
    """Who started the closing handshake: "us", "the peer" or "neither side"."""
    if protocol.close_rcvd_then_sent is not None:
        return "the peer" if protocol.close_rcvd_then_sent else "us"
    if protocol.close_sent is not None:  # we failed the connection, or no answer
        return "us"
    return "neither side" if protocol.close_rcvd is None else "the peer"


def check_close(code: int, reason: str | None) -> None:
    """Refuse (:exc:`ValueError`) a close code or reason that may not be sent."""
    try:
        Close(code, reason or "").serialize()
    except ProtocolError as exc:
        raise ValueError(f"cannot close with code {code}: {exc}") from None
    if len((reason or "").encode()) > 123:
        raise ValueError("a close reason may be at most 123 bytes of UTF-8")


def _byte_view(data: BytesLike) -> BytesLike:
    """``data`` as a buffer whose ``len()`` is its size in bytes.

    Frame headers are built from ``len()``, which for a memoryview counts
    items (e.g. 4-byte ints), not bytes; a strided view cannot be framed
    at all without a copy.
    """
    if isinstance(data, memoryview):
        if not data.c_contiguous:
            return data.tobytes()
        if data.format != "B" or data.ndim != 1:
            return data.cast("B")
    return data
